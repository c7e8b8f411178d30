"""Layer analysis over real layer tars made in the test (bottom layer first): Dive's efficiency
figures, per-layer changes with OCI whiteout semantics, junk left behind, risky permissions,
and named users resolved through the image's own /etc/passwd and /etc/group."""

from __future__ import annotations

import pytest

from tests.unit.test_layer_index import d, f, hl, layer, opq, sl, wh
from webhook.layers.analysis import (
    LayerChanges,
    ResolvedUser,
    UnresolvedUser,
    WastedPath,
    analyze_layers,
    cache_files,
    dive_efficiency,
    is_numeric_user,
    layer_commands,
    merge_layers,
    resolve_image_user,
    resolve_user,
    setuid_files,
    unreadable_by_others,
    world_writable_files,
)
from webhook.layers.index import LayerIndex

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"# a comment, then a malformed line\n"
    b"broken:x:notanumber:1::/:/bin/false\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    b"toor:x:0:0:root again:/root:/bin/sh\n"
    b"app:x:10001:10001::/home/app:/bin/sh\n"
)
GROUP = b"root:x:0:\nnogroup:x:65534:\napp:x:10001:\nstaff:x:50:app\n"


def base() -> LayerIndex:
    """A base layer: a few directories, /etc/passwd and /etc/group, /tmp 1777, busybox."""
    return layer(
        d("bin"),
        f("bin/busybox", 1000, mode=0o755),
        sl("bin/sh", "busybox"),
        d("etc"),
        f("etc/passwd", PASSWD),
        f("etc/group", GROUP),
        d("tmp", mode=0o1777),
    )


# ---- Dive's figures -------------------------------------------------------------------------


def test_dives_own_efficiency_test_case_gives_dives_answer() -> None:
    # dive/filetree/efficiency_test.go, TestEfficency: score 0.75, one inefficiency of 7000.
    layers = [
        layer(f("etc/nginx/nginx.conf", 2000), f("etc/nginx/public", 3000)),
        layer(f("etc/nginx/nginx.conf", 5000), f("etc/athing", 10000)),
        layer(wh("etc/nginx")),
    ]

    dive = dive_efficiency(layers)

    assert dive.efficiency == 0.75
    assert dive.wasted_bytes == 7000
    assert dive.inefficiencies == (WastedPath("/etc/nginx/nginx.conf", 7000, 0, (1,)),)


def test_a_scratch_image_of_empty_files_is_perfectly_efficient() -> None:
    dive = dive_efficiency([layer(f("nothing"))])

    assert (dive.efficiency, dive.wasted_bytes, dive.user_wasted_percent) == (1.0, 0, None)


def test_a_file_written_then_deleted_wastes_its_bytes_and_the_whiteout_counts_zero() -> None:
    # Dive sizes a whiteout by its subtree only when the deleted node was a directory: a
    # deleted file counts 0, so the path's minimum is 0 and its 4000 bytes are all wasted.
    layers = [base(), layer(f("big.bin", 4000)), layer(wh("big.bin"))]

    dive = dive_efficiency(layers)

    assert dive.wasted_bytes == 4000
    assert dive.layer_wasted == (0, 4000, 0)
    assert dive.inefficiencies[0] == WastedPath("/big.bin", 4000, 1, (2,))
    all_bytes = 1000 + len(PASSWD) + len(GROUP) + 4000
    assert dive.efficiency == (all_bytes - 4000) / all_bytes


def test_an_overwritten_file_wastes_every_copy_and_the_minimum_is_kept() -> None:
    layers = [base(), layer(f("data.bin", 5000)), layer(f("data.bin", 7000))]

    dive = dive_efficiency(layers)

    assert dive.wasted_bytes == 12000
    assert dive.layer_wasted == (0, 5000, 7000)
    base_bytes = 1000 + len(PASSWD) + len(GROUP)
    assert dive.efficiency == (base_bytes + 5000) / (base_bytes + 12000)


def test_a_deleted_directory_counts_its_subtree_only_when_its_node_was_a_directory() -> None:
    made_with_dir_entries = [layer(d("opt"), d("opt/d"), f("opt/d/a", 300), f("opt/d/b", 200))]
    made_implicitly = [layer(f("opt/d/a", 300), f("opt/d/b", 200))]

    explicit = dive_efficiency([*made_with_dir_entries, layer(wh("opt/d"))])
    implicit = dive_efficiency([*made_implicitly, layer(wh("opt/d"))])

    # The whiteout is the only occurrence of /opt/d (a directory with children is no leaf),
    # so nothing is wasted either way; the score's denominator differs by the 500 bytes.
    assert (explicit.wasted_bytes, implicit.wasted_bytes) == (0, 0)
    assert explicit.efficiency == 1.0
    assert implicit.efficiency == 1.0
    again = dive_efficiency([*made_with_dir_entries, layer(wh("opt/d")), layer(d("opt/d"))])
    assert again.wasted_bytes == 500  # /opt/d seen twice: the whiteout's 500 + the new dir's 0
    assert again.efficiency == 500 / 1000


def test_dive_ignores_opaque_markers() -> None:
    layers = [
        layer(d("cfg"), f("cfg/old", 100)),
        layer(d("cfg"), opq("cfg"), f("cfg/new", 50)),
    ]

    assert dive_efficiency(layers).wasted_bytes == 0  # /cfg/old is hidden, Dive does not see it


def test_a_hard_link_counts_no_bytes_as_in_its_tar_header() -> None:
    layers = [layer(f("a", 100), hl("b", "a")), layer(f("b", 100))]

    dive = dive_efficiency(layers)

    assert dive.wasted_bytes == 100
    assert dive.inefficiencies == (WastedPath("/b", 100, 0, (1,)),)


def test_a_whiteout_of_a_path_dive_cannot_find_ends_that_layers_walk() -> None:
    # Dive's visitor errors on it: the layer's later leaves (in sorted order) are not
    # counted, and the new path is left with a minimum of -1.
    layers = [layer(f("a", 10)), layer(f("a", 10), wh("zz/ghost"), f("zz/later", 40))]

    dive = dive_efficiency(layers)

    # Layer 1's walk: /a (counted), /zz/.wh.ghost (error: stop), /zz/later never seen.
    assert dive.wasted_bytes == 20
    assert dive.efficiency == (10 + 10 - 1 - 10) / 20


def test_user_wasted_percent_is_wasted_bytes_over_the_bytes_above_the_base() -> None:
    layers = [layer(f("x", 1000)), layer(f("big", 4000)), layer(wh("big"), f("y", 1000))]

    assert dive_efficiency(layers).user_wasted_percent == 4000 / 5000  # Dive: one base layer
    assert dive_efficiency(layers, base_layers=2).user_wasted_percent == 4000 / 1000
    assert dive_efficiency(layers, base_layers=0).user_wasted_percent == 4000 / 6000
    assert dive_efficiency(layers, base_layers=3).user_wasted_percent is None


# ---- per-layer changes (OCI semantics) ------------------------------------------------------


def test_each_layer_counts_files_added_changed_and_removed_below_it() -> None:
    layers = [
        layer(d("app"), f("app/a", 1), f("app/b", 1), d("cfg"), f("cfg/x", 1), f("cfg/y", 1)),
        layer(d("app"), f("app/a", 2), f("app/c", 3), wh("app/b")),  # change a, add c, drop b
        layer(f("cfg/z", 1), opq("cfg"), d("cfg")),  # opaque first: x, y gone; z (own) stays
        layer(wh("app"), f("app", 9)),  # a whiteout never hides its own layer's entries
    ]

    image = merge_layers(layers)

    assert image.changes == (
        LayerChanges(added=4, changed=0, removed=0),
        LayerChanges(added=1, changed=1, removed=1),
        LayerChanges(added=1, changed=0, removed=2),
        LayerChanges(added=0, changed=1, removed=2),  # app is a file now; app/a, app/c gone
    )
    assert sorted(e.path for e in image.entries()) == ["app", "cfg", "cfg/z"]
    final_app = image.get("/app")
    assert final_app is not None
    assert (final_app.layer, final_app.entry.kind, final_app.entry.size) == (3, "file", 9)


def test_a_file_replaced_by_a_directory_is_removed_and_its_children_added() -> None:
    layers = [layer(f("srv", 5)), layer(d("srv"), f("srv/index.html", 7))]

    image = merge_layers(layers)

    assert image.changes[1] == LayerChanges(added=1, changed=0, removed=1)
    assert image.get("srv/index.html") is not None


def test_analysis_json_follows_the_contract() -> None:
    layers = [base(), layer(f("big.bin", 4000)), layer(wh("big.bin"), f("etc/motd", 3))]

    analysis = analyze_layers(
        layers, created_by=["COPY busybox /bin", "RUN make big", "RUN rm /big.bin"]
    )
    data = analysis.to_json()

    assert set(data) >= {
        "efficiency",
        "wastedBytes",
        "userWastedPercent",
        "layers",
        "topWasted",
        "cacheFiles",
        "setuid",
    }
    assert data["wastedBytes"] == 4000
    assert data["userWastedPercent"] == 4000 / (4000 + 3)
    assert data["layers"][1] == {
        "digest": layers[1].digest,
        "createdBy": "RUN make big",
        "size": 4000,
        "added": 1,
        "changed": 0,
        "removed": 0,
        "wastedBytes": 4000,
    }
    assert data["layers"][2]["removed"] == 1
    assert data["topWasted"] == [
        {"path": "/big.bin", "bytes": 4000, "addedIn": 1, "changedIn": [2]}
    ]
    assert sum(layer["wastedBytes"] for layer in data["layers"]) == data["wastedBytes"]


def test_layer_commands_skip_empty_layer_history_entries() -> None:
    history: list[dict[str, object]] = [
        {"created_by": "/bin/sh -c #(nop) ADD file:abc in /"},
        {"created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": True},
        {"created_by": "RUN apt-get update"},
    ]

    assert layer_commands(history, 3) == (
        "/bin/sh -c #(nop) ADD file:abc in /",
        "RUN apt-get update",
        "",
    )


# ---- junk left in the final image -----------------------------------------------------------


def test_apt_lists_and_other_caches_left_in_the_final_image_are_reported_by_kind() -> None:
    layers = [
        base(),
        layer(
            d("var/lib/apt/lists"),
            f("var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", 150_000),
            f("var/lib/apt/lists/lock", 0),
            f("var/cache/apt/archives/curl.deb", 300_000),
            f("root/.cache/pip/http/ab/cd", 20_000),
            f("root/.cache/ms-playwright/chromium/chrome", 90_000),  # an app's data, not junk
            f("home/app/.cache/go-build/00/x-d", 5_000),
            f("tmp/build.log", 700),
            f("app/__pycache__/main.cpython-311.pyc", 900),
        ),
    ]

    found = {(c.kind, c.path): c.bytes for c in cache_files(merge_layers(layers), base_layers=1)}

    assert found == {
        ("apt-archives", "/var/cache/apt"): 300_000,
        ("apt-lists", "/var/lib/apt/lists"): 150_000,
        ("pip-cache", "/root/.cache/pip"): 20_000,
        ("go-build-cache", "/home/app/.cache/go-build"): 5_000,
        ("pycache", "/app/__pycache__"): 900,
        ("tmp", "/tmp"): 700,
    }


def test_caches_removed_in_the_same_or_a_later_layer_are_not_reported() -> None:
    layers = [
        base(),
        layer(f("var/lib/apt/lists/InRelease", 150_000), f("usr/bin/curl", 1000)),
        layer(opq("var/lib/apt/lists"), d("var/lib/apt/lists")),
    ]

    assert cache_files(merge_layers(layers)) == ()


def test_pycache_of_the_base_image_is_not_the_builds() -> None:
    layers = [layer(f("usr/lib/python3/__pycache__/os.pyc", 5000)), layer(f("app/main.py", 10))]

    assert cache_files(merge_layers(layers), base_layers=1) == ()
    assert [c.kind for c in cache_files(merge_layers(layers), base_layers=0)] == ["pycache"]


# ---- permissions ----------------------------------------------------------------------------


def test_setuid_setgid_and_world_writable_entries_of_the_final_image() -> None:
    layers = [
        base(),
        layer(
            f("usr/bin/passwd", 100, mode=0o4755),
            f("usr/bin/wall", 100, mode=0o2755),
            f("usr/bin/su", 100, mode=0o4755),
            f("data/shared.txt", 10, mode=0o666),
            d("data/drop", mode=0o777),
            d("data/spool", mode=0o1777),
            sl("data/link", "shared.txt"),
        ),
        layer(f("usr/bin/su", 100, mode=0o755)),  # setuid dropped in a later layer
    ]
    image = merge_layers(layers)

    assert setuid_files(image) == ("/usr/bin/passwd", "/usr/bin/wall")
    assert world_writable_files(image) == ("/data/drop", "/data/shared.txt")


def test_root_owned_files_others_cannot_read_under_the_workdir() -> None:
    layers = [
        base(),
        layer(
            d("app"),
            f("app/server", 100, mode=0o750),
            f("app/config.yaml", 10, mode=0o600),
            f("app/public.txt", 10, mode=0o644),
            f("app/mine", 10, mode=0o600, uid=10001),
            d("app/private", mode=0o700),
            f("etc/secret", 10, mode=0o600),  # not under the directories asked about
        ),
    ]
    image = merge_layers(layers)

    assert unreadable_by_others(image, ["/app/"]) == (
        "/app/config.yaml",
        "/app/private",
        "/app/server",
    )
    assert unreadable_by_others(image, []) == ()


# ---- users ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("nobody", ResolvedUser("nobody", 65534, 65534), id="nobody"),
        pytest.param("toor", ResolvedUser("toor", 0, 0), id="named-uid-0"),
        pytest.param("app:staff", ResolvedUser("app", 10001, 50), id="user:group"),
        pytest.param("app:0", ResolvedUser("app", 10001, 0), id="user:gid"),
        pytest.param("10001", ResolvedUser("10001", 10001, 10001), id="uid-in-passwd"),
        pytest.param("4242", ResolvedUser("4242", 4242, 0), id="uid-not-in-passwd"),
        pytest.param("4242:nogroup", ResolvedUser("4242", 4242, 65534), id="uid:group"),
        pytest.param("65532:65532", ResolvedUser("65532", 65532, 65532), id="uid:gid"),
        pytest.param("", ResolvedUser("root", 0, 0), id="empty-is-root"),
    ],
)
def test_a_user_resolves_as_runc_resolves_it(spec: str, expected: ResolvedUser) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == expected


@pytest.mark.parametrize(
    ("spec", "passwd", "group", "reason"),
    [
        pytest.param("ghost", PASSWD, GROUP, "user 'ghost' is not in the image", id="unknown"),
        pytest.param("broken", PASSWD, GROUP, "user 'broken'", id="malformed-line"),
        pytest.param("app:ghosts", PASSWD, GROUP, "group 'ghosts'", id="unknown-group"),
        pytest.param("nobody", None, None, "it has no /etc/passwd", id="no-passwd"),
        pytest.param("0:wheel", PASSWD, None, "it has no /etc/group", id="no-group"),
        pytest.param("99999999999", PASSWD, GROUP, "out of range", id="uid-range"),
    ],
)
def test_a_user_that_cannot_be_resolved_says_why(
    spec: str, passwd: bytes | None, group: bytes | None, reason: str
) -> None:
    result = resolve_user(spec, passwd, group)

    assert isinstance(result, UnresolvedUser)
    assert reason in result.reason


def test_the_final_images_passwd_is_the_one_of_the_topmost_layer() -> None:
    extra = PASSWD + b"svc:x:777:777::/:/bin/false\n"
    layers = [base(), layer(d("etc"), f("etc/passwd", extra)), layer(f("app", 1))]

    assert resolve_image_user(merge_layers(layers), "svc") == ResolvedUser("svc", 777, 777)
    assert resolve_image_user(merge_layers(layers[:1]), "svc") == UnresolvedUser(
        "svc", "user 'svc' is not in the image: no matching entry in its /etc/passwd"
    )


def test_a_deleted_passwd_leaves_only_numeric_users() -> None:
    image = merge_layers([base(), layer(wh("etc/passwd"))])

    assert isinstance(resolve_image_user(image, "nobody"), UnresolvedUser)
    assert resolve_image_user(image, "1000") == ResolvedUser("1000", 1000, 0)


def test_numeric_users_need_no_lookup() -> None:
    assert is_numeric_user("65532:65532")
    assert is_numeric_user("")
    assert not is_numeric_user("nobody")
    assert not is_numeric_user("1000:staff")
