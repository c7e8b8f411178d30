"""Switching an image's user without breaking it (issue 15.1), on layer tars made here: which
user the replacement runs as, what that user could not use, and the layer that gives it those
paths (content copied from the source blobs, owners and modes as `COPY --chown` makes them)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_layer_index import GZIP_LAYER, Member, d, f, gzip_blob, hl, sha256, sl
from webhook.errors import RebuildError, Unfixable, UsageError
from webhook.layers.analysis import MergedImage, merge_layers
from webhook.layers.index import index_layer
from webhook.rebuild.draft import HISTORY_PREFIX
from webhook.rebuild.ownership import (
    Change,
    OwnershipLayer,
    OwnershipTooLarge,
    as_draft_layer,
    choose_user,
    drop_setuid_changes,
    layers_needed,
    ownership_changes,
    ownership_history,
    paths_in_config,
    plan_user_switch,
    setuid_history,
    setuid_report,
    write_ownership_layer,
)

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"toor:x:0:0:root again:/root:/bin/sh\n"
    b"www-data:x:33:33:www-data:/var/www:/bin/false\n"
    b"web:x:80:80::/srv:/bin/false\n"
    b"nonroot:x:65532:65532::/home/nonroot:/bin/false\n"
)
GROUP = b"root:x:0:\nwww-data:x:33:\nweb:x:80:\nlogs:x:90:web\nnonroot:x:65532:\n"
MTIME = 1_700_000_000


def base() -> list[Member]:
    return [
        d("bin"),
        f("bin/busybox", b"\x7fELF busybox", mode=0o755),
        sl("bin/sh", "busybox"),
        d("etc"),
        f("etc/passwd", PASSWD),
        f("etc/group", GROUP),
        d("tmp", mode=0o1777),
    ]


class Image:
    """Layer blobs written to `tmp` (bottom first) and their merged tree."""

    def __init__(self, tmp: Path, *layers: Sequence[Member]) -> None:
        self.blobs: list[Path] = []
        indexes = []
        for position, members in enumerate(layers):
            blob = gzip_blob(members)
            path = tmp / f"layer-{position}.tar.gz"
            path.write_bytes(blob)
            self.blobs.append(path)
            indexes.append(
                index_layer(
                    io.BytesIO(blob), digest=sha256(blob), media_type=GZIP_LAYER, max_bytes=1 << 30
                )
            )
        self.merged: MergedImage = merge_layers(indexes)


def changes_of(image: Image, **kwargs: object) -> dict[str, Change]:
    options: dict[str, object] = {"workdir": "/", "entrypoint": []} | kwargs
    found = ownership_changes(image.merged, 65532, 65532, **options)  # type: ignore[arg-type]
    return {c.path: c for c in found}


def write(image: Image, changes: Sequence[Change], out: Path, **kwargs: Any) -> OwnershipLayer:
    return write_ownership_layer(changes, image.blobs, out, merged=image.merged, **kwargs)


def members(blob: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(blob, mode="r:gz") as tar:
        for m in tar:
            data = tar.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            out[m.name] = (m, data)
    return out


def app(secret_mode: int = 0o600) -> list[Member]:
    return [
        d("app"),
        f("app/run.sh", b"#!/bin/sh\ncat /app/secret.conf\n", mode=0o755),
        f("app/secret.conf", b"s3cret\n", mode=secret_mode),
        d("app/work"),
        f("app/work/readable.txt", b"ok\n"),
    ]


# ---- choose_user ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["", "root", "0", "0:0", "toor", "root:root"])
def test_root_and_every_uid_0_alias_switch_to_the_requested_user(tmp_path: Path, spec: str) -> None:
    image = Image(tmp_path, base())

    choice = choose_user(image.merged, spec, "65532:65532")

    assert (choice.user, choice.uid, choice.gid, choice.switched) == (
        "65532:65532",
        65532,
        65532,
        True,
    )
    assert choice.groups == (65532,)
    assert choice.name == "nonroot"
    assert choice.source == spec
    assert "root" in choice.reason


def test_a_named_non_root_user_keeps_its_own_uid_and_gid(tmp_path: Path) -> None:
    image = Image(tmp_path, base())

    choice = choose_user(image.merged, "www-data", "65532:65532")

    assert (choice.user, choice.uid, choice.gid, choice.switched) == ("33:33", 33, 33, False)
    assert choice.name == "www-data"
    assert "kept as 33:33" in choice.reason
    assert choice.to_json()["from"] == "www-data"


def test_a_named_user_with_supplementary_groups_is_written_as_its_uid_alone(
    tmp_path: Path,
) -> None:
    # runc gives `web` the group `logs` only when no group is named: `80:80` would lose it,
    # `80` finds the same passwd entry and keeps it.
    image = Image(tmp_path, base())

    choice = choose_user(image.merged, "web", "65532:65532")

    assert (choice.user, choice.groups) == ("80", (80, 90))
    named_group = choose_user(image.merged, "web:web", "65532:65532")
    assert (named_group.user, named_group.groups) == ("80:80", (80,))


def test_a_requested_uid_without_gid_takes_the_gid_the_image_gives_it(tmp_path: Path) -> None:
    image = Image(tmp_path, base())

    choice = choose_user(image.merged, "", "65532")

    assert (choice.user, choice.uid, choice.gid) == ("65532", 65532, 65532)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("www", "user 'www' is not in the image"),
        ("www-data:staff", "group 'staff' is not in the image"),
    ],
)
def test_a_user_the_image_does_not_list_is_unfixable_with_the_reason(
    tmp_path: Path, spec: str, reason: str
) -> None:
    image = Image(tmp_path, base())

    with pytest.raises(Unfixable, match=reason):
        choose_user(image.merged, spec, "65532:65532")


@pytest.mark.parametrize("requested", ["0", "0:0", "nobody", "65532:x", ""])
def test_the_requested_user_must_be_numeric_and_not_root(tmp_path: Path, requested: str) -> None:
    image = Image(tmp_path, base())

    with pytest.raises(UsageError, match="numeric non-root"):
        choose_user(image.merged, "root", requested)


# ---- what the new user cannot use -----------------------------------------------------------


def test_a_root_only_config_under_the_workdir_is_given_to_the_new_user(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app())

    changes = changes_of(image, workdir="/app")

    secret = changes["/app/secret.conf"]
    assert (secret.old_uid, secret.old_gid, secret.old_mode) == (0, 0, 0o600)
    assert (secret.new_uid, secret.new_gid, secret.new_mode) == (65532, 65532, 0o600)
    assert secret.reason == "under the WORKDIR /app: uid 65532 cannot read it"
    assert (secret.layer, secret.source, secret.kind) == (1, "app/secret.conf", "file")
    assert "/app/run.sh" not in changes  # 0755: anyone reads and runs it
    assert "/app/work/readable.txt" not in changes


def test_modes_are_permission_bits_even_when_the_tar_carries_the_file_type(
    tmp_path: Path,
) -> None:
    # Go's archive/tar (Docker's layers) writes st_mode whole: 0o100600, 0o40755.
    image = Image(tmp_path, base(), [d("app", mode=0o40755), f("app/c", b"", mode=0o100600)])

    changes = changes_of(image, workdir="/app")

    assert [(c.path, c.old_mode, c.new_mode) for c in changes.values()] == [
        ("/app", 0o755, 0o755),
        ("/app/c", 0o600, 0o600),
    ]


def test_a_root_owned_workdir_is_made_writable_by_the_new_user(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app())

    changes = changes_of(image, workdir="/app/work")

    work = changes["/app/work"]
    assert (work.old_uid, work.old_mode, work.new_uid, work.new_mode) == (0, 0o755, 65532, 0o755)
    assert work.kind == "dir"
    assert work.reason.startswith("the WORKDIR /app/work, where the app writes")
    assert work.reason.endswith("cannot write it")
    assert "/app/secret.conf" not in changes  # not under /app/work, and named nowhere
    assert list(changes) == ["/app/work"]


def test_a_workdir_the_image_lacks_is_created_for_the_new_user(tmp_path: Path) -> None:
    image = Image(tmp_path, base())

    changes = changes_of(image, workdir="/data")

    made = changes["/data"]
    assert (made.old_mode, made.layer, made.new_mode, made.new_uid) == (None, None, 0o755, 65532)
    assert made.to_json()["from"] is None


def test_a_system_workdir_is_never_given_away(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), [f("etc/app.conf", b"x", mode=0o600)])

    assert changes_of(image, workdir="/") == {}
    assert changes_of(image, workdir="/etc") == {}


def test_the_entrypoints_directory_is_checked_and_its_parents_must_be_searchable(
    tmp_path: Path,
) -> None:
    image = Image(
        tmp_path,
        base(),
        [
            d("srv", mode=0o700),
            d("srv/app", mode=0o750),
            f("srv/app/start", b"#!/bin/sh\n", mode=0o744),
            d("srv/app/private", mode=0o700),
            f("srv/app/private/key", b"k"),
        ],
    )

    changes = changes_of(image, entrypoint=["/srv/app/start", "--port", "80"])

    assert sorted(changes) == ["/srv", "/srv/app", "/srv/app/private", "/srv/app/start"]
    assert changes["/srv"].reason == "on the way to /srv/app: uid 65532 cannot enter it"
    assert changes["/srv"].new_mode == 0o700  # it only needed x, the owner triad had it
    assert changes["/srv/app/start"].reason.endswith("cannot execute it")
    assert changes["/srv/app/private"].reason.endswith("cannot list or enter it")


def test_a_bare_entrypoint_is_found_on_path_and_a_system_directory_is_not_scanned(
    tmp_path: Path,
) -> None:
    image = Image(tmp_path, base(), [f("bin/secret-tool", b"x", mode=0o700)])

    # /bin/sh resolves to /bin/busybox (0755); /bin is a system directory: /bin/secret-tool
    # is not the app's, so it is not given away.
    assert changes_of(image, entrypoint=["sh", "-c", "exec httpd"]) == {}
    tool = changes_of(image, entrypoint=["secret-tool"])
    assert list(tool) == ["/bin/secret-tool"]
    assert tool["/bin/secret-tool"].reason.startswith("the entrypoint")


def test_paths_named_in_the_config_follow_the_documented_rule() -> None:
    config = {
        "Entrypoint": ["/sbin/tini", "--"],
        "Cmd": ["sh", "-c", "exec /app/run.sh --config='/etc/app/app.yaml' >/dev/null"],
        "Env": [
            "PATH=/usr/local/bin:/usr/bin",
            "URL=http://example.com/x",
            "ROOT=/",
            "DATA=/var/lib/app/../app",
        ],
    }

    assert paths_in_config(config) == {
        "/sbin/tini": "Entrypoint",
        "/app/run.sh": "Cmd",
        "/etc/app/app.yaml": "Cmd",
        "/usr/local/bin": "Env PATH",
        "/usr/bin": "Env PATH",
        "/var/lib/app": "Env DATA",
    }


def test_a_config_named_file_in_a_system_directory_is_given_with_its_parents(
    tmp_path: Path,
) -> None:
    image = Image(
        tmp_path,
        base(),
        [d("etc/app", mode=0o700), f("etc/app/app.conf", b"conf", mode=0o600), f("etc/other", b"")],
    )

    changes = changes_of(image, config_paths={"/etc/app/app.conf": "Env APP_CONFIG"})

    assert sorted(changes) == ["/etc/app", "/etc/app/app.conf"]
    assert changes["/etc/app/app.conf"].reason == (
        "named in the config (Env APP_CONFIG): uid 65532 cannot read it"
    )


def test_a_system_directory_the_new_user_cannot_search_is_unfixable(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), [d("etc", mode=0o700), f("etc/app.conf", b"", mode=0o644)])

    with pytest.raises(Unfixable, match=r"cannot use /etc \(0:0 0700"):
        changes_of(image, config_paths=["/etc/app.conf"])


def test_a_symlink_is_followed_to_its_target_and_never_written(tmp_path: Path) -> None:
    image = Image(
        tmp_path,
        base(),
        [
            d("opt/conf"),
            f("opt/conf/real.conf", b"real", mode=0o600),
            d("app"),
            sl("app/config", "/opt/conf/real.conf"),
            sl("app/conf.d", "../opt/conf"),
        ],
    )

    changes = changes_of(image, workdir="/app")

    assert sorted(changes) == ["/app", "/opt/conf/real.conf"]
    assert changes["/opt/conf/real.conf"].reason.startswith("the target of the symlink /app/conf")


def test_group_membership_and_ownership_count_as_the_kernel_counts_them(tmp_path: Path) -> None:
    image = Image(
        tmp_path,
        base(),
        [
            d("app"),
            f("app/group-readable", b"", mode=0o640, gid=90),
            f("app/own", b"", mode=0o600, uid=65532),
            f("app/owner-denied", b"", mode=0o066, uid=65532),  # the owner triad is the one
        ],
    )

    with_group = ownership_changes(
        image.merged, 65532, 65532, groups=[90], workdir="/app", entrypoint=[]
    )
    without = changes_of(image, workdir="/app")

    assert [c.path for c in with_group] == ["/app", "/app/owner-denied"]
    assert sorted(without) == ["/app", "/app/group-readable", "/app/owner-denied"]
    assert without["/app/owner-denied"].new_mode == 0o466


def test_a_setuid_file_that_is_chowned_loses_the_bits_as_chown_clears_them(
    tmp_path: Path,
) -> None:
    image = Image(tmp_path, base(), [d("app"), f("app/tool", b"t", mode=0o4700)])

    changes = changes_of(image, workdir="/app")

    assert changes["/app/tool"].new_mode == 0o700


def test_a_hard_link_group_changes_as_one_inode(tmp_path: Path) -> None:
    image = Image(
        tmp_path,
        base(),
        [d("app"), f("app/z-data", b"shared", mode=0o600), hl("app/a-link", "app/z-data")],
        [d("lib"), hl("lib/elsewhere", "app/z-data")],  # a link in a later layer is a copy
    )

    changes = changes_of(image, workdir="/app")

    carrier, link = changes["/app/a-link"], changes["/app/z-data"]
    assert (carrier.kind, carrier.layer, carrier.source, carrier.link) == (
        "file",
        1,
        "app/z-data",
        "",
    )
    assert (link.kind, link.layer, link.link) == ("hardlink", None, "/app/a-link")
    assert carrier.size == 6


def test_too_many_paths_are_refused_saying_what_to_do_instead(tmp_path: Path) -> None:
    image = Image(
        tmp_path,
        base(),
        [d("app"), *(f(f"app/f{i:05d}", b"", mode=0o600) for i in range(10_001))],
    )

    with pytest.raises(OwnershipTooLarge) as caught:
        changes_of(image, workdir="/app")

    message = str(caught.value)
    assert "10,002 paths" in message
    assert "over the limit of 10,000 paths" in message
    assert "most are in /app (9,999), / (1)" in message  # the first 10,000, by directory
    assert "COPY --chown=65532:65532" in message
    assert "USER 65532:65532" in message


def test_too_many_bytes_are_refused_before_and_while_copying(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app())

    with pytest.raises(OwnershipTooLarge, match="7 bytes"):
        changes_of(image, workdir="/app", max_bytes=6)
    changes = ownership_changes(image.merged, 65532, 65532, workdir="/app", entrypoint=[])
    sizeless = [replace(c, size=0) for c in changes]  # sizes unknown: counted while copying
    with pytest.raises(OwnershipTooLarge, match="over the limit"):
        write(image, sizeless, tmp_path / "out", max_bytes=6)


# ---- the layer ------------------------------------------------------------------------------


def test_the_layer_copies_the_current_content_with_the_new_owner(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app(), [f("app/secret.conf", b"newer\n", mode=0o600)])
    changes = ownership_changes(
        image.merged, 33, 33, workdir="/app/work", entrypoint=["/app/run.sh"]
    )

    written = write(image, changes, tmp_path / "out")

    got = members(written.path)
    assert list(got) == ["app", "app/secret.conf", "app/work"]
    parent, _ = got["app"]  # written as it is, so no runtime makes it anew
    assert (parent.uid, parent.mode, parent.mtime) == (0, 0o755, MTIME)
    info, data = got["app/secret.conf"]
    assert data == b"newer\n"  # the top-most layer's version
    assert (info.uid, info.gid, info.mode, info.mtime) == (33, 33, 0o600, MTIME)
    assert (info.uname, info.gname) == ("", "")
    work, _ = got["app/work"]
    assert (work.isdir(), work.uid, work.mode, work.mtime) == (True, 33, 0o755, MTIME)
    assert written.paths == ("/app/secret.conf", "/app/work")
    assert layers_needed(changes, image.merged) == {1, 2}
    assert written.to_json()["count"] == 2
    assert written.to_json()["changes"][0] == {
        "path": "/app/secret.conf",
        "kind": "file",
        "from": {"uid": 0, "gid": 0, "mode": "0600"},
        "to": {"uid": 33, "gid": 33, "mode": "0600"},
        "reason": "under the entrypoint's directory /app: uid 33 cannot read it",
    }


def test_the_layer_needs_only_the_blobs_it_copies_from(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app())
    changes = ownership_changes(image.merged, 33, 33, workdir="/app", entrypoint=[])

    written = write_ownership_layer(
        changes, {1: image.blobs[1]}, tmp_path / "out", merged=image.merged
    )

    assert written.paths == ("/app", "/app/secret.conf")
    with pytest.raises(RebuildError, match="the blob of layer 1 was not given"):
        write_ownership_layer(changes, {0: image.blobs[0]}, tmp_path / "out", merged=image.merged)


def test_the_layer_is_reproducible(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app())
    changes = ownership_changes(image.merged, 33, 33, workdir="/app", entrypoint=[])

    first = write(image, changes, tmp_path / "one")
    second = write(image, list(reversed(changes)), tmp_path / "two")

    assert (first.digest, first.diff_id, first.size) == (second.digest, second.diff_id, second.size)
    assert first.path.read_bytes() == second.path.read_bytes()
    with gzip.open(first.path) as gz:
        assert gz.read(1)  # a valid gzip stream
    assert first.path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert first.digest == sha256(first.path.read_bytes())
    assert first.diff_id == sha256(gzip.decompress(first.path.read_bytes()))
    assert not list((tmp_path / "one").glob(".ownership-*"))  # the scratch is gone


def test_a_hard_link_group_is_written_as_one_inode(tmp_path: Path) -> None:
    image = Image(
        tmp_path,
        base(),
        [d("app"), f("app/z-data", b"shared", mode=0o600), hl("app/a-link", "app/z-data")],
    )
    changes = ownership_changes(image.merged, 33, 33, workdir="/app", entrypoint=[])

    got = members(write(image, changes, tmp_path / "out").path)

    assert list(got) == ["app", "app/a-link", "app/z-data"]
    assert got["app/a-link"][1] == b"shared"
    link, _ = got["app/z-data"]
    assert (link.islnk(), link.linkname, link.uid, link.mtime) == (True, "app/a-link", 33, MTIME)
    extracted = tmp_path / "x"
    with tarfile.open(next((tmp_path / "out").glob("*.tar.gz"))) as tar:
        tar.extractall(extracted, filter="fully_trusted")
    assert (extracted / "app/a-link").stat().st_ino == (extracted / "app/z-data").stat().st_ino


def test_blobs_that_are_not_the_images_layers_are_refused(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app())
    (tmp_path / "other").mkdir()
    other = Image(tmp_path / "other", base())
    changes = ownership_changes(image.merged, 33, 33, workdir="/app", entrypoint=[])

    with pytest.raises(RebuildError, match="no such entry at /app, which the layer analysis found"):
        write_ownership_layer(
            changes, [image.blobs[0], other.blobs[0]], tmp_path / "out", merged=image.merged
        )
    with pytest.raises(ValueError, match="no changes"):
        write(image, [], tmp_path / "out")


# ---- setuid ---------------------------------------------------------------------------------


def test_drop_setuid_clears_the_bits_and_keeps_owner_and_content(tmp_path: Path) -> None:
    image = Image(
        tmp_path,
        base(),
        [
            d("usr/local/bin"),
            f("usr/local/bin/su-tool", b"tool", mode=0o4755),
            hl("usr/local/bin/su-alias", "usr/local/bin/su-tool"),
            f("usr/local/bin/sg-tool", b"sg", mode=0o2711, gid=90),
            f("usr/local/bin/plain", b"p", mode=0o755),
        ],
    )

    changes = drop_setuid_changes(image.merged)
    written = write(image, changes, tmp_path / "out", name="setuid")

    assert [c.path for c in changes] == [
        "/usr/local/bin/sg-tool",
        "/usr/local/bin/su-alias",
        "/usr/local/bin/su-tool",
    ]
    got = members(written.path)
    sg, _ = got["usr/local/bin/sg-tool"]
    assert (sg.mode, sg.uid, sg.gid) == (0o711, 0, 90)
    alias, data = got["usr/local/bin/su-alias"]
    assert (alias.mode, alias.uid, data) == (0o755, 0, b"tool")
    assert got["usr/local/bin/su-tool"][0].linkname == "usr/local/bin/su-alias"
    assert written.path.name == "setuid.tar.gz"
    implied, _ = got["usr"]  # no layer wrote it: written as extraction makes it
    assert (implied.isdir(), implied.uid, implied.mode, implied.mtime) == (True, 0, 0o755, 0)
    assert written.paths == tuple(c.path for c in changes)  # parents are not changes
    report = setuid_report(image.merged)
    assert report[0]["reason"] == (
        "setgid 0:90: it would run as its owner whatever the container's user is"
    )
    assert report[2]["from"]["mode"] == "4755"
    assert drop_setuid_changes(image.merged, skip=["/usr/local/bin/sg-tool"])[0].path == (
        "/usr/local/bin/su-alias"
    )


# ---- provenance and the plan ----------------------------------------------------------------


def test_history_entries_are_json_text(tmp_path: Path) -> None:
    image = Image(tmp_path, base(), app())
    plan = plan_user_switch(image.merged, {"User": "", "WorkingDir": "/app/work"})
    written = write(image, plan.changes, tmp_path / "out")

    entry = ownership_history("2024-01-01T00:00:00Z", plan.choice, written)
    setuid = setuid_history("2024-01-01T00:00:00Z", written)

    assert entry["created_by"].startswith(HISTORY_PREFIX)
    assert json.loads(entry["created_by"][len(HISTORY_PREFIX) :]) == {
        "fix": "nonRootUser",
        "user": "65532:65532",
        "from": "",
        "chowned": 1,
    }
    assert "empty_layer" not in entry
    assert json.loads(setuid["created_by"][len(HISTORY_PREFIX) :]) == {
        "fix": "dropSetuid",
        "cleared": 1,
    }
    layer = as_draft_layer(written, entry)
    assert (layer.digest, layer.diff_id, layer.size) == (
        written.digest,
        written.diff_id,
        written.size,
    )
    assert layer.source.file == written.path
    assert layer.history == (entry,)


def test_the_plan_reads_the_runtime_config(tmp_path: Path) -> None:
    image = Image(
        tmp_path,
        base(),
        app(),
        [d("etc/app", mode=0o700), f("etc/app/app.conf", b"c", mode=0o600)],
    )
    config = {
        "User": "root",
        "WorkingDir": "/app/work",
        "Entrypoint": ["/app/run.sh"],
        "Env": ["PATH=/bin", "APP_CONFIG=/etc/app/app.conf"],
    }

    plan = plan_user_switch(image.merged, config, "1000:1000")

    assert plan.choice.user == "1000:1000"
    assert [c.path for c in plan.changes] == [
        "/app/secret.conf",
        "/app/work",
        "/etc/app",
        "/etc/app/app.conf",
    ]
    assert plan_user_switch(image.merged, config | {"User": "www-data"}).changes == ()
