"""Cold reads at the round-trip minimum, against real registry processes (issue 17 part 2).

Each registry sits behind a `DelayProxy` that holds every client byte `D` seconds and counts
requests and new TCP connections; a token server (distribution's token auth) sits behind one
too, so a Bearer exchange is as slow as on a real network. Round trips on the critical path
are wall time over `D`. The HTTPS registry (a certificate from a test CA, HTTP/2 by ALPN) is
reached at this machine's non-loopback address, since loopback registries are plain HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.certs import TestCA, routable_address
from tests.support.delay_proxy import DelayProxy
from tests.support.oci_push import Pusher
from tests.support.parts import missing_part
from tests.support.registry import (
    RegistryNotInstalledError,
    RegistryProcess,
    start_registry,
)
from tests.support.token_server import SERVICE, TokenServer
from webhook.context import ProcessContext
from webhook.errors import RegistryError, RegistryUnauthorized, UsageError
from webhook.policy.model import ImagePolicy
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.facts import Platform
from webhook.registry.reference import Reference
from webhook.settings import RegistrySettings, Settings

pytestmark = pytest.mark.integration

T = TypeVar("T")
D = 0.2  # seconds added to every client → registry flight when timing
AMD64 = Platform("linux", "amd64")
POLICY = ImagePolicy.model_validate(
    {
        "metadata": {"name": "cold"},
        "spec": {
            "onError": "deny",
            "rules": {"allowedBases": {"enabled": False}, "layerEfficiency": {"enabled": False}},
        },
    }
)


def _start(tmp: Path, name: str, **kwargs: Any) -> RegistryProcess:
    try:
        return start_registry(tmp / name, **kwargs)
    except RegistryNotInstalledError as e:
        missing_part(str(e))


@dataclass
class Plain:
    reg: RegistryProcess
    proxy: DelayProxy
    pusher: Pusher


@dataclass
class Bearer:
    reg: RegistryProcess
    proxy: DelayProxy
    tokens: TokenServer
    token_proxy: DelayProxy
    pusher: Pusher


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plain]:
    tmp = tmp_path_factory.mktemp("roundtrips")
    with _start(tmp, "plain") as reg, DelayProxy.start(("127.0.0.1", reg.port)) as proxy:
        pusher = Pusher(reg.url, host=proxy.host)
        yield Plain(reg, proxy, pusher)
        pusher.close()


def _bearer(tmp: Path, name: str, users: dict[str, str] | None = None) -> Bearer:
    tokens = TokenServer.start(tmp / f"{name}-tokens", users=users, issuer=f"{name}-issuer")
    token_proxy = DelayProxy.start(("127.0.0.1", tokens.port))
    reg = _start(tmp, name, token=tokens.registry_auth(realm=f"http://{token_proxy.host}/token"))
    proxy = DelayProxy.start(("127.0.0.1", reg.port))

    def authorization(repo: str) -> str:
        return "Bearer " + tokens.token([f"repository:{repo}:pull,push"], "pusher", SERVICE)

    return Bearer(reg, proxy, tokens, token_proxy, Pusher(reg.url, authorization=authorization,
                                                           host=proxy.host))  # fmt: skip


def _stop(b: Bearer) -> None:
    b.pusher.close()
    b.proxy.stop()
    b.reg.stop()
    b.token_proxy.stop()
    b.tokens.stop()


@pytest.fixture(scope="module")
def bearer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bearer]:
    b = _bearer(tmp_path_factory.mktemp("bearer"), "bearer")
    yield b
    _stop(b)


def _context(**registry: Any) -> ProcessContext:
    return ProcessContext.from_settings(
        Settings(registry=RegistrySettings(**registry)), keyring=Keyring.empty()
    )


def _timed(
    proxies: list[DelayProxy], run: Callable[[], Awaitable[T]], base: float = 0.0
) -> tuple[T, int, float]:
    """Run with `D` added by every proxy: (result, round trips on the critical path, wall).

    Round trips are wall // D, or, given `base` (the wall time of the same work without the
    delay, on this machine, now), round((wall - base) / D): what the machine itself adds
    then cannot read as one more round trip when it is busy.
    """
    for p in proxies:
        p.delay = D
    try:
        started = time.perf_counter()
        result = _run(run)
        wall = time.perf_counter() - started
    finally:
        for p in proxies:
            p.delay = 0.0
    return result, round((wall - base) / D) if base else int(wall / D), wall


def _wall(run: Callable[[], Awaitable[T]]) -> float:
    started = time.perf_counter()
    _run(run)
    return time.perf_counter() - started


_LOOP: asyncio.AbstractEventLoop | None = None


def _run(run: Callable[[], Awaitable[T]]) -> T:
    """One event loop for the module: a client's pooled connections belong to its loop."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(run())


@pytest.fixture(scope="module", autouse=True)
def _loop() -> Iterator[None]:
    yield
    global _LOOP
    if _LOOP is not None:
        _LOOP.close()
        _LOOP = None


async def _check(ctx: ProcessContext, *images: str) -> list[str]:
    results = await ctx.checker.check_all(list(images), [POLICY])
    return [r.verdict for r in results]


# ---- round trips per cold admission --------------------------------------------------------


def test_a_tag_costs_two_round_trips_on_one_connection(plain: Plain) -> None:
    ref = plain.pusher.image("cold/tag", "1")
    ctx = _context()
    mark = plain.proxy.mark()
    verdicts, trips, wall = _timed([plain.proxy], lambda: _check(ctx, ref))
    seen = plain.proxy.since(mark)
    _run(ctx.aclose)
    assert verdicts == ["pass"]
    assert (trips, seen.count("GET", "/manifests/"), seen.count("GET", "/blobs/")) == (2, 1, 1), (
        wall
    )
    assert seen.connections == 1


def test_a_digest_costs_two_round_trips(plain: Plain) -> None:
    plain.pusher.image("cold/digest", "1")
    ref = f"{plain.proxy.host}/cold/digest@{plain.pusher.digest_of('cold/digest', '1')}"
    ctx = _context()
    mark = plain.proxy.mark()
    verdicts, trips, wall = _timed([plain.proxy], lambda: _check(ctx, ref))
    seen = plain.proxy.since(mark)
    _run(ctx.aclose)
    assert verdicts == ["pass"]
    assert (trips, len(seen.requests)) == (2, 2), wall


def test_an_index_costs_three_round_trips(plain: Plain) -> None:
    ref = plain.pusher.index("cold/multi", "1", ["amd64", "arm64"])
    ctx = _context()
    mark = plain.proxy.mark()
    verdicts, trips, wall = _timed([plain.proxy], lambda: _check(ctx, ref))
    seen = plain.proxy.since(mark)
    _run(ctx.aclose)
    assert verdicts == ["pass"]
    # index, then both platform manifests at once, then both configs at once
    assert (trips, seen.count("GET", "/manifests/"), seen.count("GET", "/blobs/")) == (3, 3, 2), (
        wall
    )


def test_five_images_take_two_round_trips_and_reuse_connections_after_a_pause(
    plain: Plain,
) -> None:
    """Idle connections outlive httpx's 5 s default: after 6 s, no new connection."""
    first = [plain.pusher.image(f"cold/pod{i}", "1") for i in range(5)]
    second = [plain.pusher.image(f"cold/pod{i}", "2") for i in range(5)]
    ctx = _context()
    assert ctx.settings.registry.keepalive_seconds >= 60
    mark = plain.proxy.mark()
    verdicts, trips, wall = _timed([plain.proxy], lambda: _check(ctx, *first))
    opened = plain.proxy.since(mark).connections
    assert verdicts == ["pass"] * 5
    assert trips == 2, wall
    assert 1 <= opened <= 5
    time.sleep(6.0)
    mark = plain.proxy.mark()
    verdicts, trips, wall = _timed([plain.proxy], lambda: _check(ctx, *second))
    seen = plain.proxy.since(mark)
    _run(ctx.aclose)
    assert verdicts == ["pass"] * 5
    assert (trips, len(seen.requests), seen.connections) == (2, 10, 0), wall


# ---- Bearer registries: the host's challenge is remembered ---------------------------------


def test_a_known_bearer_registry_costs_token_manifest_config(bearer: Bearer) -> None:
    ctx = _context()
    one = bearer.pusher.image("bearer/one", "1")
    two = bearer.pusher.image("bearer/two", "1")
    proxies = [bearer.proxy, bearer.token_proxy]
    mark, tokens = bearer.proxy.mark(), bearer.tokens.count()
    verdicts, trips, wall = _timed(proxies, lambda: _check(ctx, one))
    first = bearer.proxy.since(mark)
    assert verdicts == ["pass"]
    # first contact: the 401 probe, the token, the retry, the config
    assert (trips, len(first.requests), bearer.tokens.count() - tokens) == (4, 3, 1), wall

    mark, tokens = bearer.proxy.mark(), bearer.tokens.count()
    verdicts, trips, wall = _timed(proxies, lambda: _check(ctx, two))
    second = bearer.proxy.since(mark)
    _run(ctx.aclose)
    assert verdicts == ["pass"]
    assert (trips, len(second.requests), bearer.tokens.count() - tokens) == (3, 2, 1), wall
    assert all(r.authorization.startswith("Bearer ") for r in second.requests)
    assert bearer.tokens.requests[-1].scopes == ("repository:bearer/two:pull",)
    assert second.connections == 0


def test_a_stale_challenge_falls_back_to_the_probe_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The registry moves to another token server: the remembered realm's token is refused,
    the 401 names the new realm, one token from there, one retry."""
    tmp = tmp_path_factory.mktemp("stale")
    b = _bearer(tmp, "stale")
    other = TokenServer.start(tmp / "other-tokens", issuer="other-issuer")
    try:
        ctx = _context()
        _run(lambda: _check(ctx, b.pusher.image("stale/one", "1")))
        fresh = b.pusher.image("stale/two", "1")
        third = b.pusher.image("stale/three", "1")
        port = b.reg.port
        b.reg.stop()
        b.reg = _start(tmp, "stale", port=port, token=other.registry_auth())
        mark, old, new = b.proxy.mark(), b.tokens.count(), other.count()
        assert _run(lambda: _check(ctx, fresh)) == ["pass"]
        seen = b.proxy.since(mark)
        assert (b.tokens.count() - old, other.count() - new) == (1, 1)
        assert seen.count("GET", "/manifests/") == 2  # refused once, then answered

        # the new challenge is remembered: the next repository costs one token, no 401
        mark, new = b.proxy.mark(), other.count()
        assert _run(lambda: _check(ctx, third)) == ["pass"]
        assert (len(b.proxy.since(mark).requests), other.count() - new) == (2, 1)
        _run(ctx.aclose)
    finally:
        other.stop()
        _stop(b)


def test_a_dead_remembered_realm_falls_back_to_the_probe(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The remembered token server is gone (connection refused): the probe's 401 names the
    registry's new one, which answers."""
    tmp = tmp_path_factory.mktemp("dead")
    b = _bearer(tmp, "dead")
    other = TokenServer.start(tmp / "other-tokens", issuer="other-issuer")
    try:
        client = RegistryClient(RegistrySettings(retries=0), Keyring.empty())
        _run(lambda: client.inspect(Reference.parse(b.pusher.image("dead/one", "1")), AMD64))
        fresh = Reference.parse(b.pusher.image("dead/two", "1"))
        port = b.reg.port
        b.reg.stop()
        b.token_proxy.stop()  # the realm the client remembers now refuses connections
        b.reg = _start(tmp, "dead", port=port, token=other.registry_auth())
        mark, new = b.proxy.mark(), other.count()
        facts = _run(lambda: client.inspect(fresh, AMD64))
        assert facts.user == "65532"
        assert (other.count() - new, b.proxy.since(mark).count("GET", "/manifests/")) == (1, 2)
        _run(client.aclose)
    finally:
        other.stop()
        b.token_proxy = DelayProxy.start(("127.0.0.1", b.tokens.port))  # for _stop
        _stop(b)


def test_a_challenge_that_stays_refused_fails_without_looping(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The registry stops trusting the realm it names: one token, one refusal, an error."""
    tmp = tmp_path_factory.mktemp("refused")
    b = _bearer(tmp, "refused")
    other = TokenServer.start(tmp / "other-tokens", issuer="other-issuer")
    try:
        client = RegistryClient(RegistrySettings(), Keyring.empty())
        _run(lambda: client.inspect(Reference.parse(b.pusher.image("refused/one", "1")), AMD64))
        fresh = Reference.parse(b.pusher.image("refused/two", "1"))
        port = b.reg.port
        b.reg.stop()
        # same realm, but the registry now trusts only the other issuer's tokens
        auth = other.registry_auth(realm=f"http://{b.token_proxy.host}/token")
        b.reg = _start(tmp, "refused", port=port, token=auth)
        mark, old = b.proxy.mark(), b.tokens.count()
        with pytest.raises(RegistryUnauthorized, match="refused"):
            _run(lambda: client.inspect(fresh, AMD64))
        assert (b.tokens.count() - old, len(b.proxy.since(mark).requests)) == (1, 1)
        _run(client.aclose)
    finally:
        other.stop()
        _stop(b)


def test_credentials_and_challenges_stay_with_their_host(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Alice's credentials are for registry A: A's token server gets them, B's never does,
    and B (a host A's challenge was never heard from) is probed before anything is sent."""
    tmp = tmp_path_factory.mktemp("hosts")
    a = _bearer(tmp, "a", users={"alice": "wonderland"})
    b = _bearer(tmp, "b", users={"alice": "wonderland"})
    try:
        keyring = Keyring.from_dockerconfigjson(
            {"auths": {a.proxy.host: {"username": "alice", "password": "wonderland"}}}
        )
        client = RegistryClient(RegistrySettings(), keyring)
        first, second = (Reference.parse(a.pusher.image(f"a/img{i}", "1")) for i in range(2))
        _run(lambda: client.inspect(first, AMD64))
        _run(lambda: client.inspect(second, AMD64))
        mark = b.proxy.mark()
        a_tokens = a.tokens.count()
        ref = Reference.parse(b.pusher.image("b/img", "1"))
        _run(lambda: client.inspect(ref, AMD64))
        seen = b.proxy.since(mark)
        _run(client.aclose)
        assert {r.user for r in a.tokens.requests} == {"alice"}
        assert [r.user for r in b.tokens.requests] == [""]
        assert a.tokens.count() == a_tokens  # nothing for B went to A's realm
        assert seen.requests[0].authorization == ""  # B's first request: the probe
    finally:
        _stop(a)
        _stop(b)


# ---- HTTPS: HTTP/2 on one connection, and the registry CA bundle ---------------------------


@dataclass
class Tls:
    reg: RegistryProcess
    proxy: DelayProxy
    ca: TestCA
    pusher: Pusher


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    address = routable_address()
    if address is None:
        missing_part("no non-loopback IPv4 address to serve an HTTPS registry on")
    tmp = tmp_path_factory.mktemp("tls")
    ca = TestCA.create(tmp / "ca")
    cert = ca.issue(tmp / "serving", [address])
    with _start(tmp, "tls", bind=address, tls=cert, ca=ca.cert_path) as reg:
        proxy = DelayProxy.start((address, reg.port), listen=address, parse_http=False)
        pusher = Pusher(reg.url, verify=ca.cert_path, host=proxy.host)
        yield Tls(reg, proxy, ca, pusher)
        pusher.close()
        proxy.stop()


def _http2_lines(reg: RegistryProcess, since: int) -> int:
    with open(reg.log_path, "rb") as f:
        f.seek(since)
        return len(re.findall(rb'"GET /v2/\S+ HTTP/2\.0"', f.read()))


def test_an_unknown_ca_is_a_clear_error_without_retries(tls: Tls) -> None:
    ref = tls.pusher.image("tls/unknown", "1")
    client = RegistryClient(RegistrySettings(), Keyring.empty())
    with pytest.raises(RegistryError, match="IMAGEGATE_REGISTRY_CA_FILE") as caught:
        _run(lambda: client.inspect(Reference.parse(ref), AMD64))
    assert "does not trust" in str(caught.value)
    assert client.stats.retries == 0
    _run(client.aclose)


def test_an_unknown_ca_is_the_policys_on_error(tls: Tls) -> None:
    ctx = _context()
    results = _run(lambda: ctx.checker.check_all([tls.pusher.image("tls/onerror", "1")], [POLICY]))
    _run(ctx.aclose)
    assert results[0].verdict == "error"
    assert "IMAGEGATE_REGISTRY_CA_FILE" in str(results[0].error)


@pytest.mark.parametrize("layout", ["file", "configmap-directory"])
def test_the_ca_bundle_is_trusted_and_images_share_one_http2_connection(
    tls: Tls, tmp_path: Path, layout: str
) -> None:
    if layout == "file":
        bundle = tls.ca.cert_path
    else:  # as the kubelet mounts a ConfigMap: ca.crt -> ..data/ca.crt, ..data -> ..2026_…
        stamp = tmp_path / "..2026_11_30_00_00_00.1"
        stamp.mkdir()
        (stamp / "ca.crt").write_bytes(tls.ca.cert_path.read_bytes())
        (tmp_path / "..data").symlink_to(stamp.name)
        (tmp_path / "ca.crt").symlink_to("..data/ca.crt")
        bundle = tmp_path
    first = [tls.pusher.image(f"tls/{layout}{i}", "1") for i in range(5)]
    second = [tls.pusher.image(f"tls/{layout}{i}", "2") for i in range(5)]
    third = [tls.pusher.image(f"tls/{layout}{i}", "3") for i in range(5)]
    ctx = _context(ca_file=bundle)
    mark, log = tls.proxy.mark(), tls.reg.log_offset()
    verdicts, trips, wall = _timed([tls.proxy], lambda: _check(ctx, *first))
    assert verdicts == ["pass"] * 5
    assert tls.proxy.since(mark).connections == 1
    # TCP connect is not delayed; the TLS 1.3 handshake costs one round trip, and the first
    # streams go out with the HTTP/2 preface (no wait for the server's SETTINGS): 1 more than
    # on a warm connection. The count comes from wall time: on a loaded machine the handshake
    # may read as one more. The warm batch below is the claim (2 round trips, no new
    # connection) and is exact.
    assert trips in (3, 4), wall
    base = _wall(lambda: _check(ctx, *third))  # the same warm work, without the delay
    mark = tls.proxy.mark()
    verdicts, trips, wall = _timed([tls.proxy], lambda: _check(ctx, *second), base)
    connections = tls.proxy.since(mark).connections
    _run(ctx.aclose)
    assert verdicts == ["pass"] * 5
    assert (trips, connections) == (2, 0), (wall, base)
    deadline = time.monotonic() + 5
    while _http2_lines(tls.reg, log) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _http2_lines(tls.reg, log) == 30


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("not a certificate\n", "holds no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid PEM"),
    ],
    ids=["missing", "not-pem", "broken-pem"],
)
def test_a_bad_ca_bundle_is_a_startup_error_naming_the_path(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as caught:
        RegistryClient(RegistrySettings(ca_file=path), Keyring.empty())
    assert str(path) in str(caught.value)


def test_an_empty_ca_directory_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="empty directory"):
        RegistryClient(RegistrySettings(ca_file=tmp_path), Keyring.empty())


def test_the_ca_bundle_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tls: Tls
) -> None:
    monkeypatch.setenv("IMAGEGATE_REGISTRY_CA_FILE", str(tls.ca.cert_path))
    assert Settings().registry.ca_file == tls.ca.cert_path
