"""Credentials are found where Docker and the kubelet find them; challenges parse as RFC 7235."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from webhook.errors import RegistryUnauthorized, UsageError
from webhook.registry.auth import (
    Challenge,
    Credential,
    Keyring,
    TokenCache,
    parse_challenges,
    parse_token_response,
    token_request,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(directory: Path, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(data))
    return path


# ---- docker config.json --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "entry", "host", "expected"),
    [
        pytest.param(
            "localhost:5001",
            {"auth": b64("alice:s3cr:et")},
            "localhost:5001",
            Credential("alice", "s3cr:et"),
            id="auth-base64-password-with-colon",
        ),
        pytest.param(
            "registry.example.com",
            {"username": "bob", "password": "pw"},
            "registry.example.com",
            Credential("bob", "pw"),
            id="username-password",
        ),
        pytest.param(
            "https://index.docker.io/v1/",
            {"auth": b64("hubuser:hubpass")},
            "docker.io",
            Credential("hubuser", "hubpass"),
            id="legacy-hub-key",
        ),
        pytest.param(
            "https://index.docker.io/v1/",
            {"auth": b64("hubuser:hubpass")},
            "index.docker.io",
            Credential("hubuser", "hubpass"),
            id="legacy-hub-key-asked-by-alias",
        ),
        pytest.param(
            "http://host:5000/v2/",
            {"auth": b64("u:p")},
            "host:5000",
            Credential("u", "p"),
            id="url-key-with-scheme-and-path",
        ),
        pytest.param(
            "ghcr.io",
            {"identitytoken": "refresh-me"},
            "ghcr.io",
            Credential(identity_token="refresh-me"),
            id="identity-token",
        ),
    ],
)
async def test_docker_config_auth_forms(
    tmp_path: Path, key: str, entry: dict[str, str], host: str, expected: Credential
) -> None:
    write_config(tmp_path, {"auths": {key: entry}})
    keyring = Keyring.from_docker_config(tmp_path)  # a directory means dir/config.json
    assert await keyring.get(host) == expected


async def test_config_file_path_and_unknown_host(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"localhost:5001": {"auth": b64("a:b")}}})
    keyring = Keyring.from_docker_config(path)
    assert await keyring.get("localhost:5001") == Credential("a", "b")
    assert await keyring.get("elsewhere.io") is None
    assert keyring.describe() == str(path)


async def test_missing_config_is_an_empty_keyring(tmp_path: Path) -> None:
    keyring = Keyring.from_docker_config(tmp_path / "nope" / "config.json")
    assert await keyring.get("docker.io") is None


async def test_default_config_is_read_from_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_config(tmp_path / ".docker", {"auths": {"docker.io": {"auth": b64("me:pw")}}})
    assert await Keyring.from_docker_config(None).get("docker.io") == Credential("me", "pw")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("{not json", "not valid JSON", id="bad-json"),
        pytest.param("[]", "JSON object", id="not-an-object"),
        pytest.param('{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}', "user:password", id="no-colon"),
        pytest.param('{"auths": []}', "'auths' must be an object", id="auths-list"),
    ],
)
def test_broken_config_is_a_usage_error_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        Keyring.from_docker_config(path)
    assert (
        str(path) in str(info.value) or "auths entry" in str(info.value) or "'h'" in str(info.value)
    )


def test_secrets_stay_out_of_repr() -> None:
    text = repr(Credential("alice", "hunter2", identity_token="tok"))
    assert "alice" in text
    assert "hunter2" not in text
    assert "tok'" not in text


# ---- credential helpers (real processes) ---------------------------------------------------

HELPER = """#!/bin/sh
read -r server
echo "$server" >> "$(dirname "$0")/calls.log"
case "$server" in
  localhost:5001) printf '{"Username":"helper-user","Secret":"helper-pass"}' ;;
  https://index.docker.io/v1/) printf '{"Username":"<token>","Secret":"refresh"}' ;;
  broken.example) echo "keychain is locked" >&2; exit 3 ;;
  garbage.example) echo "this is not json" ;;
  slow.example) sleep 5 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real `docker-credential-fake` executable on PATH, logging what it was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-fake"
    script.write_text(HELPER)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "calls.log"
    return log.read_text().split() if log.exists() else []


async def test_cred_helper_for_one_host(tmp_path: Path, helper_bin: Path) -> None:
    write_config(tmp_path / "cfg", {"credHelpers": {"localhost:5001": "fake"}})
    keyring = Keyring.from_docker_config(tmp_path / "cfg")
    assert await keyring.get("localhost:5001") == Credential("helper-user", "helper-pass")
    assert await keyring.get("other.example") is None  # no helper there, no auths entry
    assert calls(helper_bin) == ["localhost:5001"]


async def test_creds_store_is_the_default_and_hub_is_asked_by_legacy_url(
    tmp_path: Path, helper_bin: Path
) -> None:
    write_config(tmp_path / "cfg", {"credsStore": "fake"})
    keyring = Keyring.from_docker_config(tmp_path / "cfg")
    assert await keyring.get("docker.io") == Credential(identity_token="refresh")
    assert calls(helper_bin) == ["https://index.docker.io/v1/"]


async def test_helper_not_found_falls_back_to_static_auths(
    tmp_path: Path, helper_bin: Path
) -> None:
    write_config(
        tmp_path / "cfg",
        {"credsStore": "fake", "auths": {"unknown.example": {"auth": b64("static:pw")}}},
    )
    keyring = Keyring.from_docker_config(tmp_path / "cfg")
    assert await keyring.get("unknown.example") == Credential("static", "pw")


async def test_helper_answers_are_cached(tmp_path: Path, helper_bin: Path) -> None:
    write_config(tmp_path / "cfg", {"credHelpers": {"localhost:5001": "fake"}})
    keyring = Keyring.from_docker_config(tmp_path / "cfg")
    for _ in range(3):
        await keyring.get("localhost:5001")
    assert calls(helper_bin) == ["localhost:5001"]


@pytest.mark.parametrize(
    ("host", "helper", "message"),
    [
        pytest.param("broken.example", "fake", "keychain is locked", id="helper-fails"),
        pytest.param("garbage.example", "fake", "not JSON", id="helper-prints-garbage"),
        pytest.param("x.example", "absent", "not installed", id="helper-missing"),
        pytest.param("slow.example", "fake", "no answer after 0.5s", id="helper-hangs"),
    ],
)
async def test_helper_failures_are_clear_errors(
    tmp_path: Path, helper_bin: Path, host: str, helper: str, message: str
) -> None:
    cfg = write_config(tmp_path / "cfg", {"credHelpers": {host: helper}})
    keyring = Keyring.from_docker_config(cfg, helper_timeout=0.5)
    with pytest.raises(RegistryUnauthorized, match=message) as info:
        await keyring.get(host)
    assert f"docker-credential-{helper}" in str(info.value)
    assert str(cfg) in str(info.value)
    assert host in str(info.value)


# ---- pull secrets --------------------------------------------------------------------------

SECRET = {"auths": {"localhost:5001": {"auth": b64("pod:secret")}}}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(json.dumps(SECRET).encode(), id="bytes"),
        pytest.param(json.dumps(SECRET), id="str"),
        pytest.param(SECRET, id="dict"),
        pytest.param({"localhost:5001": {"auth": b64("pod:secret")}}, id="legacy-dockercfg"),
    ],
)
async def test_dockerconfigjson_payloads(payload: bytes | str | dict[str, Any]) -> None:
    keyring = Keyring.from_dockerconfigjson(payload)
    assert await keyring.get("localhost:5001") == Credential("pod", "secret")
    assert keyring.describe() == "the pod's pull secrets"


async def test_pull_secrets_never_run_helpers(helper_bin: Path) -> None:
    payload = {"auths": {}, "credHelpers": {"localhost:5001": "fake"}, "credsStore": "fake"}
    keyring = Keyring.from_dockerconfigjson(payload)
    assert await keyring.get("localhost:5001") is None
    assert calls(helper_bin) == []


async def test_merged_keyring_asks_the_first_source_first(tmp_path: Path) -> None:
    base = Keyring.from_docker_config(
        write_config(
            tmp_path,
            {
                "auths": {
                    "localhost:5001": {"auth": b64("webhook:own")},
                    "ghcr.io": {"auth": b64("webhook:ghcr")},
                }
            },
        )
    )
    pod = Keyring.from_dockerconfigjson(SECRET)
    merged = pod.merged(base)
    assert await merged.get("localhost:5001") == Credential("pod", "secret")
    assert await merged.get("ghcr.io") == Credential("webhook", "ghcr")
    assert merged.describe() == f"the pod's pull secrets or {tmp_path / 'config.json'}"


def test_fingerprint_tells_credentials_apart_without_running_helpers() -> None:
    alice = Keyring.from_dockerconfigjson({"auths": {"r.io": {"auth": b64("alice:1")}}})
    alice_again = Keyring.from_dockerconfigjson({"auths": {"r.io": {"auth": b64("alice:1")}}})
    bob = Keyring.from_dockerconfigjson({"auths": {"r.io": {"auth": b64("bob:1")}}})
    assert alice.fingerprint("r.io") == alice_again.fingerprint("r.io")
    assert alice.fingerprint("r.io") != bob.fingerprint("r.io")
    assert alice.fingerprint("other.io") == Keyring.empty().fingerprint("other.io") == "anonymous"


# ---- challenges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/nginx:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/nginx:pull",
                    },
                )
            ],
            id="docker-hub",
        ),
        pytest.param(
            'Bearer realm="http://127.0.0.1:5001/token", scope="repository:a:pull,push"',
            [
                Challenge(
                    "bearer",
                    {"realm": "http://127.0.0.1:5001/token", "scope": "repository:a:pull,push"},
                )
            ],
            id="quoted-comma-in-scope",
        ),
        pytest.param(
            'Basic realm="Registry Realm"',
            [Challenge("basic", {"realm": "Registry Realm"})],
            id="basic",
        ),
        pytest.param(
            'Bearer realm="https://t/token", Basic realm="b"',
            [Challenge("bearer", {"realm": "https://t/token"}), Challenge("basic", {"realm": "b"})],
            id="two-challenges-one-line",
        ),
        pytest.param(
            "BEARER Realm=https://t/token, Service=svc",
            [Challenge("bearer", {"realm": "https://t/token", "service": "svc"})],
            id="unquoted-and-case-insensitive",
        ),
        pytest.param(
            r'Basic realm="say \"hi\", please"',
            [Challenge("basic", {"realm": 'say "hi", please'})],
            id="escaped-quotes",
        ),
        pytest.param("", [], id="empty"),
    ],
)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


def test_parse_challenges_over_several_header_lines() -> None:
    found = parse_challenges(['Basic realm="a"', 'Bearer realm="https://t",service="s"'])
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert found[1].service == "s"


# ---- tokens --------------------------------------------------------------------------------


def test_token_request_sends_scope_service_and_basic_credentials() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    request = token_request(challenge, ["repository:app:pull"], Credential("alice", "pw"))
    assert request.method == "GET"
    assert request.url.params["scope"] == "repository:app:pull"
    assert request.url.params["service"] == "reg"
    assert request.headers["Authorization"] == "Basic " + b64("alice:pw")


def test_token_request_asks_for_every_scope() -> None:
    """A cross-repository mount needs push on the target and pull on the source in one token."""
    challenge = Challenge("bearer", {"realm": "https://auth.example/token"})
    scopes = ["repository:app:pull,push", "repository:base:pull"]
    request = token_request(challenge, scopes, None)
    assert request.url.params.get_list("scope") == scopes


def test_token_request_is_anonymous_without_credentials() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example/token"})
    request = token_request(challenge, ["repository:app:pull"], None)
    assert "Authorization" not in request.headers
    assert "service" not in request.url.params


def test_token_request_with_identity_token_uses_the_oauth2_refresh_grant() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    request = token_request(challenge, ["repository:app:pull"], Credential(identity_token="rt"))
    assert request.method == "POST"
    body = request.read().decode()
    assert "grant_type=refresh_token" in body
    assert "refresh_token=rt" in body


@pytest.mark.parametrize(
    ("body", "token", "ttl"),
    [
        pytest.param(b'{"token": "t1", "expires_in": 300}', "t1", 300, id="token"),
        pytest.param(b'{"access_token": "t2"}', "t2", 60, id="access-token-default-ttl"),
        pytest.param(b'{"token": "t3", "access_token": "x", "expires_in": 0}', "t3", 60, id="zero"),
    ],
)
def test_parse_token_response(body: bytes, token: str, ttl: float) -> None:
    parsed = parse_token_response(body)
    assert (parsed.value, parsed.expires_in) == (token, ttl)


@pytest.mark.parametrize("body", [b"nope", b"[]", b'{"expires_in": 5}'])
def test_parse_token_response_refuses_answers_without_a_token(body: bytes) -> None:
    with pytest.raises(ValueError, match="token"):
        parse_token_response(body)


def test_token_cache_forgets_tokens_before_they_expire() -> None:
    now = [0.0]
    cache = TokenCache(margin=5, timer=lambda: now[0])
    key = ("localhost:5001", "repository:app:pull", "anonymous")
    cache.put(key, "Bearer t", 60)
    now[0] = 54
    assert cache.get(key) == "Bearer t"
    now[0] = 56
    assert cache.get(key) is None


async def test_the_webhooks_own_credentials_reach_tenants_only_for_listed_registries() -> None:
    """Its docker config must not open, for a tenant without access, what the webhook can read."""
    from webhook.context import ProcessContext
    from webhook.settings import RegistrySettings, Settings

    own = Keyring.from_dockerconfigjson(
        {
            "auths": {
                "private.example": {"auth": b64("ops:pw")},
                "shared.example": {"auth": b64("ci:pw")},
            }
        },
        source="the webhook's docker config",
    )
    for hosts, private, shared in [([], None, None), (["shared.example"], None, "ci")]:
        settings = Settings(registry=RegistrySettings(tenant_credential_hosts=hosts))
        context = ProcessContext.from_settings(settings, keyring=own)
        tenants = context.tenant_keyring
        got = [await tenants.get(h) for h in ("private.example", "shared.example")]
        assert [c.username if c else None for c in got] == [private, shared]
        assert tenants.fingerprint("private.example") == "anonymous"
        assert (await context.keyring.get("private.example")) is not None  # its own reads
        await context.aclose()
