"""Parser edges on the admission path, where planted bugs once survived the suite (issue 18).

* non-root-user reads USER the way runc and the kubelet do (Go's `strconv`): `00`, `000:0`,
  `+0` and `-0` are uid 0; `²` and `٣` are names, which only the image's /etc/passwd resolves.
* single-entrypoint's shell lexer splits operators from the words they touch: `a&&b` is
  `a && b`, not one program called `a&&b`.
* Digests are verified with their own algorithm (sha256, sha512), and any other algorithm is
  refused, wherever bytes come in: manifests and configs (`RegistryClient`), streamed blobs
  (`BlobStore.download`) and layer blobs (`index_layer`). The registry is an
  `httpx.MockTransport` behind the real client: no socket.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.unit.factories import facts
from webhook.errors import (
    DigestMismatch,
    InvalidImageData,
    InvalidReference,
    RegistryError,
    UnsupportedMediaType,
)
from webhook.layers.analysis import (
    ResolvedUser,
    UnresolvedUser,
    is_numeric_user,
    resolve_user,
)
from webhook.layers.index import index_layer
from webhook.policy.model import NonRootUserRule, SingleEntrypointRule
from webhook.policy.rules import non_root_user, single_entrypoint
from webhook.registry import mediatypes as mt
from webhook.registry.auth import Keyring
from webhook.registry.blobs import BlobStore
from webhook.registry.client import RegistryClient
from webhook.registry.reference import Reference
from webhook.settings import RegistrySettings

STRICT = NonRootUserRule()
LENIENT = NonRootUserRule(require_numeric_user=False)
ARABIC_ZERO, ARABIC_THREE, FULLWIDTH_ZERO, SUPERSCRIPT_TWO = "\u0660", "\u0663", "\uff10", "\u00b2"


def passwd(*entries: tuple[str, int]) -> bytes:
    lines = [
        "root:x:0:0:root:/root:/bin/sh",
        *(f"{n}:x:{u}:{u}::/home/{n}:/bin/sh" for n, u in entries),
    ]
    return ("\n".join(lines) + "\n").encode()


# ---- non-root-user: what runc runs the image as -------------------------------------------


@pytest.mark.parametrize(
    ("user", "rule", "says"),
    [
        pytest.param("00", STRICT, "the image runs as uid 0 (USER 00)", id="USER-00"),
        pytest.param("000:0", STRICT, "the image runs as uid 0 (USER 000:0)", id="USER-000:0"),
        pytest.param("00:1000", LENIENT, "uid 0 (USER 00:1000)", id="zero-padded-root-any-group"),
        pytest.param(" 00 ", STRICT, "uid 0 (USER 00)", id="blanks-around-00"),
        pytest.param("+0", LENIENT, "uid 0 (USER +0)", id="plus-zero-is-root-to-runc"),
        pytest.param("-0", LENIENT, "uid 0 (USER -0)", id="minus-zero-is-root-to-runc"),
        pytest.param("+0:0", LENIENT, "uid 0 (USER +0:0)", id="plus-zero-with-group"),
        pytest.param("-1", LENIENT, "USER -1 is not a valid uid", id="negative-uid"),
        pytest.param("+4294967295", LENIENT, "is not a valid uid", id="signed-no-user-uid"),
        pytest.param(ARABIC_ZERO, STRICT, "named user", id="arabic-zero-is-a-name-to-the-kubelet"),
        pytest.param(FULLWIDTH_ZERO, STRICT, "named user", id="fullwidth-zero-is-a-name"),
    ],
)
def test_user_edges_that_run_as_root_or_nobody_valid(
    user: str, rule: NonRootUserRule, says: str
) -> None:
    [violation] = non_root_user.check(rule, facts(user=user), None).violations
    assert violation.rule == "non-root-user"
    assert says in violation.message


@pytest.mark.parametrize(
    "user",
    [
        pytest.param("+65532", id="plus-sign"),
        pytest.param("0065532", id="leading-zeros"),
        pytest.param("0065532:00", id="leading-zeros-root-group"),
    ],
)
def test_numeric_users_with_a_sign_or_leading_zeros_are_their_number(user: str) -> None:
    outcome = non_root_user.check(STRICT, facts(user=user), None)
    assert outcome.violations == []
    assert outcome.facts["effectiveUser"] == user


@pytest.mark.parametrize(
    ("spec", "numeric"),
    [
        pytest.param("00", True, id="00"),
        pytest.param("000:0", True, id="000:0"),
        pytest.param("+0", True, id="plus-zero"),
        pytest.param("1000:", True, id="empty-group"),
        pytest.param(ARABIC_THREE, False, id="arabic-three"),
        pytest.param(SUPERSCRIPT_TWO, False, id="superscript-two"),
        pytest.param(f"1000:{SUPERSCRIPT_TWO}", False, id="superscript-two-group"),
        pytest.param("9" * 40, False, id="too-long-for-any-uid"),
    ],
)
def test_which_users_need_no_passwd_lookup(spec: str, numeric: bool) -> None:
    """A numeric spec is not looked up (layers are not even read for it); any other is."""
    assert is_numeric_user(spec) is numeric


@pytest.mark.parametrize(
    ("spec", "files", "uid", "gid"),
    [
        pytest.param("00", passwd(), 0, 0, id="00-is-root"),
        pytest.param("000:0", passwd(), 0, 0, id="000:0-is-root"),
        pytest.param("+0", passwd(), 0, 0, id="plus-zero-is-root"),
        pytest.param(
            ARABIC_THREE, passwd((ARABIC_THREE, 0)), 0, 0, id="arabic-three-alias-of-root"
        ),
        pytest.param(
            ARABIC_ZERO, passwd((ARABIC_ZERO, 1000)), 1000, 1000, id="arabic-zero-is-1000"
        ),
        pytest.param("0065532:007", passwd(), 65532, 7, id="leading-zeros"),
    ],
)
def test_users_resolve_as_runc_resolves_them(spec: str, files: bytes, uid: int, gid: int) -> None:
    resolved = resolve_user(spec, files, None)
    assert isinstance(resolved, ResolvedUser), resolved
    assert (resolved.uid, resolved.gid) == (uid, gid)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(SUPERSCRIPT_TWO, "user '²' is not in the image", id="superscript-two"),
        pytest.param(f"{SUPERSCRIPT_TWO}:app", "user '²' is not in the image", id="with-group"),
        pytest.param(f"1000:{SUPERSCRIPT_TWO}", "group '²' is not in the image", id="as-group"),
        pytest.param(FULLWIDTH_ZERO, "is not in the image", id="fullwidth-zero"),
        pytest.param("-5", "uid -5 is out of range", id="negative-uid"),
        pytest.param("1000:-1", "gid -1 is out of range", id="negative-gid"),
    ],
)
def test_users_runc_cannot_resolve_are_unresolved_not_a_crash(spec: str, reason: str) -> None:
    resolved = resolve_user(spec, passwd(("app", 1000)), b"app:x:1000:\n")
    assert isinstance(resolved, UnresolvedUser), resolved
    assert reason in resolved.reason


@pytest.mark.parametrize(
    ("user", "files", "passes", "says"),
    [
        pytest.param(
            ARABIC_THREE,
            passwd((ARABIC_THREE, 0)),
            False,
            "is uid 0 (root) in the image's /etc/passwd",
            id="unicode-digit-alias-of-root-fails",
        ),
        pytest.param(
            ARABIC_ZERO, passwd((ARABIC_ZERO, 1000)), True, "", id="unicode-zero-named-1000-passes"
        ),
    ],
)
def test_unicode_digits_are_resolved_through_the_images_passwd(
    user: str, files: bytes, passes: bool, says: str
) -> None:
    outcome = non_root_user.check(LENIENT, facts(user=user), None, resolve_user(user, files, None))
    assert (not outcome.violations) is passes
    if says:
        assert says in outcome.violations[0].message


def test_an_unresolvable_unicode_user_is_an_error_not_a_pass() -> None:
    user = FULLWIDTH_ZERO
    outcome = non_root_user.check(
        LENIENT, facts(user=user), None, resolve_user(user, passwd(), None)
    )
    assert outcome.violations == []
    assert outcome.error is not None
    assert "is not in the image" in outcome.error


# ---- single-entrypoint: operators glued to words ------------------------------------------

RULE = SingleEntrypointRule()
SHELL_OK = SingleEntrypointRule(allow_shell_form=True)
UNSPACED = [
    ("a&&b", "&&"),
    ("a;b", ";"),
    ("a|b", "|"),
    ("a||b", "||"),
    ("a&", "&"),
    ("a&b", "&"),
    ("a|&b", "|&"),
    ("a&|b", "&|"),  # zsh: background and disown
    ("a;;b", ";;"),
]


@pytest.mark.parametrize(
    ("argv", "rule", "operator"),
    [
        pytest.param(
            [shell, "-c", f"{prefix}{script}"], rule, operator, id=f"{name}-{shell}-{script}"
        )
        for script, operator in UNSPACED
        for shell, prefix, rule, name in (
            ("/bin/sh", "", RULE, "shell-form"),
            ("bash", "exec ", RULE, "exec"),
            ("zsh", "exec ", SHELL_OK, "exec-shell-form-allowed"),
            ("sh", "", SHELL_OK, "shell-form-allowed"),
        )
    ],
)
def test_unspaced_operators_are_chains(
    argv: list[str], rule: SingleEntrypointRule, operator: str
) -> None:
    outcome = single_entrypoint.check(rule, facts(entrypoint=argv), None)
    [violation] = outcome.violations
    assert f"chains or backgrounds processes ({operator})" in violation.message


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("exec a;", id="trailing-semicolon"),
        pytest.param("exec a ;", id="trailing-spaced-semicolon"),
        pytest.param("exec a>&2", id="unspaced-fd-duplication"),
        pytest.param("exec a 2>&1;", id="duplication-then-semicolon"),
        pytest.param("exec a&>/dev/null", id="unspaced-bash-redirect-all"),
        pytest.param("exec a 'x&&y'", id="quoted-and"),
        pytest.param('exec a "x|y"', id="double-quoted-pipe"),
        pytest.param("exec a x\\;y", id="escaped-semicolon"),
    ],
)
def test_punctuation_that_starts_no_second_process_passes(script: str) -> None:
    outcome = single_entrypoint.check(RULE, facts(entrypoint=["sh", "-c", script]), None)
    assert outcome.violations == []


# ---- digests: every algorithm the code accepts, verified with itself ----------------------

REGISTRY = "registry.example"
REPO = f"{REGISTRY}/team/app"
VERIFIED = ("sha256", "sha512")


def digest_of(algorithm: str, data: bytes) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def test_references_pin_sha256_and_sha512_digests() -> None:
    for algorithm in VERIFIED:
        digest = digest_of(algorithm, b"x")
        ref = Reference.parse(f"{REPO}:1@{digest}")
        assert (ref.tag, ref.digest, ref.pinned, ref.lookup) == ("1", digest, True, digest)
        assert str(ref) == f"{REPO}:1@{digest}"


@pytest.mark.parametrize(
    "digest",
    [
        pytest.param("sha256:" + "a" * 63, id="sha256-short"),
        pytest.param("sha256:" + "a" * 65, id="sha256-long"),
        pytest.param("sha256:" + "A" * 64, id="sha256-uppercase"),
        pytest.param("sha512:" + "a" * 31, id="under-32-characters"),
        pytest.param("sha512" + "a" * 128, id="no-colon"),
    ],
)
def test_malformed_digests_are_refused_when_parsed(digest: str) -> None:
    with pytest.raises(InvalidReference):
        Reference.parse(f"{REPO}@{digest}")


class Served:
    """What the mock registry serves, by path; every request it was asked, in order."""

    def __init__(self, bodies: dict[str, tuple[bytes, str]]) -> None:
        self.bodies = bodies
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        found = self.bodies.get(request.url.path)
        if found is None:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        body, media_type = found
        return httpx.Response(200, content=body, headers={"Content-Type": media_type})


def client_for(served: Callable[[httpx.Request], httpx.Response]) -> RegistryClient:
    settings = RegistrySettings(retries=0, backoff_seconds=0.0)
    return RegistryClient(settings, Keyring.empty(), httpx.MockTransport(served))


def manifest_body(config_digest: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": 2},
            "layers": [],
        }
    ).encode()


CONFIG = json.dumps({"config": {"User": "65532"}}).encode()


@pytest.mark.parametrize("algorithm", VERIFIED)
async def test_a_manifest_and_its_config_are_verified_with_their_own_algorithm(
    algorithm: str,
) -> None:
    config_digest = digest_of(algorithm, CONFIG)
    body = manifest_body(config_digest)
    digest = digest_of(algorithm, body)
    served = Served(
        {
            f"/v2/team/app/manifests/{digest}": (body, mt.OCI_MANIFEST),
            f"/v2/team/app/blobs/{config_digest}": (CONFIG, mt.OCI_CONFIG),
        }
    )
    async with client_for(served) as client:
        ref = Reference.parse(f"{REPO}@{digest}")
        manifest = await client.get_manifest(ref)
        config = await client.get_config(ref, config_digest)
    assert manifest.digest == digest
    assert config == {"config": {"User": "65532"}}


@pytest.mark.parametrize("algorithm", VERIFIED)
@pytest.mark.parametrize("what", ["manifest", "config"])
async def test_bytes_that_do_not_hash_to_the_digest_are_refused(algorithm: str, what: str) -> None:
    asked = digest_of(algorithm, b"what was pinned")
    lie = manifest_body(asked) if what == "manifest" else CONFIG
    kind = "manifests" if what == "manifest" else "blobs"
    served = Served({f"/v2/team/app/{kind}/{asked}": (lie, mt.OCI_MANIFEST)})
    async with client_for(served) as client:
        ref = Reference.parse(f"{REPO}@{asked}")
        fetch = client.get_manifest(ref) if what == "manifest" else client.get_config(ref, asked)
        with pytest.raises(DigestMismatch) as caught:
            await fetch
    assert f"hashes to {digest_of(algorithm, lie)}" in caught.value.message


UNVERIFIABLE = [
    pytest.param("sha384:" + "a" * 96, id="sha384"),
    pytest.param("md5:" + "a" * 32, id="md5"),
    pytest.param("blake3:" + "a" * 64, id="blake3"),
]


@pytest.mark.parametrize("digest", UNVERIFIABLE)
async def test_a_manifest_or_config_of_another_algorithm_is_refused(digest: str) -> None:
    body = manifest_body(digest)
    served = Served(
        {
            f"/v2/team/app/manifests/{digest}": (body, mt.OCI_MANIFEST),
            f"/v2/team/app/blobs/{digest}": (CONFIG, mt.OCI_CONFIG),
        }
    )
    async with client_for(served) as client:
        ref = Reference.parse(f"{REPO}@{digest}")
        with pytest.raises(InvalidImageData, match="is not supported"):
            await client.get_manifest(ref)
        with pytest.raises(InvalidImageData, match="is not supported"):
            await client.get_config(Reference.parse(f"{REPO}:1"), digest)


BLOB = b"layer bytes " * 1000


@pytest.mark.parametrize("algorithm", VERIFIED)
async def test_a_streamed_blob_is_verified_with_its_own_algorithm(
    algorithm: str, tmp_path: Path
) -> None:
    digest = digest_of(algorithm, BLOB)
    served = Served({f"/v2/team/app/blobs/{digest}": (BLOB, "application/octet-stream")})
    async with client_for(served) as client:
        size = await BlobStore(client).download(Reference.parse(REPO), digest, tmp_path / "blob")
    assert size == len(BLOB)
    assert (tmp_path / "blob").read_bytes() == BLOB


@pytest.mark.parametrize("algorithm", VERIFIED)
async def test_a_streamed_blob_that_lies_is_refused_and_removed(
    algorithm: str, tmp_path: Path
) -> None:
    digest = digest_of(algorithm, BLOB)
    served = Served({f"/v2/team/app/blobs/{digest}": (BLOB + b"!", "application/octet-stream")})
    async with client_for(served) as client:
        with pytest.raises(DigestMismatch, match=digest_of(algorithm, BLOB + b"!")):
            await BlobStore(client).download(Reference.parse(REPO), digest, tmp_path / "blob")
    assert not (tmp_path / "blob").exists()


@pytest.mark.parametrize("digest", UNVERIFIABLE)
async def test_a_blob_of_another_algorithm_is_refused_before_it_is_read(
    digest: str, tmp_path: Path
) -> None:
    served = Served({f"/v2/team/app/blobs/{digest}": (BLOB, "application/octet-stream")})
    async with client_for(served) as client:
        with pytest.raises(RegistryError, match="unsupported digest algorithm"):
            await BlobStore(client).download(Reference.parse(REPO), digest, tmp_path / "blob")
    assert served.paths == []
    assert not (tmp_path / "blob").exists()


def gzip_layer() -> tuple[bytes, str]:
    """A one-file gzip layer blob and its diff_id."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("app/server")
        info.size, info.mtime = 4, 1_700_000_000
        tar.addfile(info, io.BytesIO(b"\x7fELF"))
    return gzip.compress(out.getvalue(), mtime=0), digest_of("sha256", out.getvalue())


GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.mark.parametrize("algorithm", VERIFIED)
def test_a_layer_blob_is_verified_with_its_own_algorithm(algorithm: str) -> None:
    blob, diff_id = gzip_layer()
    digest = digest_of(algorithm, blob)
    index = index_layer(
        io.BytesIO(blob), digest=digest, media_type=GZIP_LAYER, max_bytes=1 << 20, diff_id=diff_id
    )
    assert (index.digest, index.diff_id, index.compressed_size) == (digest, diff_id, len(blob))


@pytest.mark.parametrize("algorithm", VERIFIED)
def test_a_layer_blob_that_lies_is_refused(algorithm: str) -> None:
    blob, _ = gzip_layer()
    other = gzip.compress(gzip.decompress(blob), mtime=1)  # the same tar, other gzip bytes
    digest = digest_of(algorithm, blob)
    with pytest.raises(DigestMismatch, match=f"hashes to {digest_of(algorithm, other)}"):
        index_layer(io.BytesIO(other), digest=digest, media_type=GZIP_LAYER, max_bytes=1 << 20)


@pytest.mark.parametrize("digest", UNVERIFIABLE)
def test_a_layer_blob_of_another_algorithm_is_refused(digest: str) -> None:
    blob, _ = gzip_layer()
    with pytest.raises(UnsupportedMediaType, match="cannot verify digest algorithm"):
        index_layer(io.BytesIO(blob), digest=digest, media_type=GZIP_LAYER, max_bytes=1 << 20)
