"""Squash tests over hand-built layer tars (DESIGN §4: whiteouts, opaque dirs, links).

Golden cases build layers bottom first, squash them, and compare the resulting tar with the
expected listing: `path kind [extra]`, in the order the squash writes them. The model test
applies random layers the way an overlay filesystem shows them (`Tree`) and checks that the
base plus the squashed layer shows exactly what the base plus the original layers shows: same
paths, kinds, contents, modes, mtimes and hard-link groups, with no marker that hides nothing.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from webhook.errors import RebuildError
from webhook.rebuild.layers import (
    CACHE_DIRS,
    LISTED,
    OPAQUE,
    WHITEOUT,
    SquashResult,
    _FastInfo,
    _plain_header,
    decompress,
    gzip_file,
    is_cache_path,
    normalize,
    squash,
    tar_entries,
)

# An entry: ("d", path) directory, ("f", path, data) file, ("l", path, target) hard link,
# ("s", path, target) symlink. Whiteouts are files named .wh.* like in real layers.
Entry = tuple[str, ...]


def make_layer(path: Path, entries: Sequence[Entry], *, mtime: int = 1_700_000_000) -> Path:
    """A plain layer tar of `entries`, each with mtime `mtime` plus its index (distinct)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for number, entry in enumerate(entries):
            kind, name = entry[0], entry[1]
            info = tarfile.TarInfo(name)
            info.mtime = mtime + number
            info.uname, info.gname = "someone", "somegroup"
            info.pax_headers = {"atime": "1700000001.5", "ctime": "1700000002.5"}
            data = b""
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "f":
                data = entry[2].encode()
                info.size, info.mode = len(data), 0o644
                if len(entry) > 3:
                    info.uid = info.gid = int(entry[3])
            elif kind == "l":
                info.type, info.linkname = tarfile.LNKTYPE, entry[2]
            elif kind == "s":
                info.type, info.linkname = tarfile.SYMTYPE, entry[2]
            tar.addfile(info, io.BytesIO(data) if kind == "f" else None)
    return path


def layers(tmp_path: Path, *specs: Sequence[Entry]) -> list[Path]:
    return [make_layer(tmp_path / f"layer{i}.tar", spec) for i, spec in enumerate(specs)]


def listing(blob: Path) -> list[str]:
    """`path kind [content|target]` per member of a gzip layer, in tar order."""
    out: list[str] = []
    with gzip.open(blob, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        for member in tar:
            if member.isdir():
                out.append(f"{member.name} d")
            elif member.islnk():
                out.append(f"{member.name} l {member.linkname}")
            elif member.issym():
                out.append(f"{member.name} s {member.linkname}")
            else:
                data = tar.extractfile(member)
                content = data.read().decode() if data else ""
                out.append(f"{member.name} f {content}".rstrip())
    return out


def squashed(tmp_path: Path, *specs: Sequence[Entry], **kwargs: object) -> list[str]:
    result = squash(layers(tmp_path, *specs), tmp_path / "out.tar.gz", **kwargs)  # type: ignore[arg-type]
    return listing(result.layer.path)


def members(blob: Path) -> dict[str, tarfile.TarInfo]:
    with gzip.open(blob, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        return {m.name.rstrip("/"): m for m in tar}


CASES: list[tuple[str, list[list[Entry]], list[str]]] = [
    (
        "upper-file-replaces-lower",
        [
            [("d", "app"), ("f", "app/a", "old"), ("f", "app/b", "keep")],
            [("f", "app/a", "new")],
        ],
        ["app d", "app/a f new", "app/b f keep"],
    ),
    (
        "whiteout-of-a-file",
        [
            [("d", "app"), ("f", "app/a", "x"), ("f", "app/b", "y")],
            [("f", "app/.wh.a", "")],
        ],
        # Without `below` the base is unknown: app/a might be there, so the whiteout is kept
        # (harmless when there is nothing to hide).
        ["app d", "app/.wh.a f", "app/b f y"],
    ),
    (
        "whiteout-of-a-directory-hides-its-whole-subtree",
        [
            [("d", "data"), ("d", "data/sub"), ("f", "data/sub/x", "1"), ("f", "data/y", "2")],
            [("f", ".wh.data", "")],
        ],
        [".wh.data f"],
    ),
    (
        "opaque-directory-hides-lower-children-only",
        [
            [("d", "etc"), ("f", "etc/old.conf", "old"), ("f", "etc/other", "o")],
            [("d", "etc"), ("f", "etc/.wh..wh..opq", ""), ("f", "etc/new.conf", "new")],
        ],
        ["etc d", "etc/.wh..wh..opq f", "etc/new.conf f new"],
    ),
    (
        "opaque-entry-after-its-siblings-in-the-tar-still-applies-first",
        [
            [("d", "etc"), ("f", "etc/old.conf", "old")],
            [("d", "etc"), ("f", "etc/new.conf", "new"), ("f", "etc/.wh..wh..opq", "")],
        ],
        ["etc d", "etc/.wh..wh..opq f", "etc/new.conf f new"],
    ),
    (
        "whiteout-never-hides-an-entry-of-its-own-layer",
        [
            [("d", "app"), ("f", "app/a", "lower")],
            [("f", "app/a", "same-layer"), ("f", "app/.wh.a", "")],
        ],
        ["app d", "app/a f same-layer"],
    ),
    (
        "whiteout-then-recreated-directory-becomes-opaque",
        [
            [("d", "cfg"), ("f", "cfg/old", "o")],
            [("f", ".wh.cfg", "")],
            [("d", "cfg"), ("f", "cfg/new", "n")],
        ],
        ["cfg d", "cfg/.wh..wh..opq f", "cfg/new f n"],
    ),
    (
        "upper-file-hides-lower-directory-subtree",
        [
            [("d", "x"), ("f", "x/inside", "i")],
            [("f", "x", "now a file")],
        ],
        ["x f now a file"],
    ),
    (
        "hard-link-kept-after-its-target",
        [
            [("d", "bin"), ("f", "bin/tool", "ELF"), ("l", "bin/alias", "bin/tool")],
        ],
        ["bin d", "bin/tool f ELF", "bin/alias l bin/tool"],
    ),
    (
        "hard-link-whose-target-was-replaced-carries-the-old-inode",
        [
            [("d", "bin"), ("f", "bin/tool", "v1"), ("l", "bin/alias", "bin/tool")],
            [("f", "bin/tool", "v2")],
        ],
        ["bin d", "bin/tool f v2", "bin/alias f v1"],
    ),
    (
        "hard-link-group-stays-one-when-its-first-path-is-replaced",
        [
            [
                ("d", "bin"),
                ("f", "bin/tool", "v1"),
                ("l", "bin/b", "bin/tool"),
                ("l", "bin/a", "bin/tool"),
            ],
            [("f", "bin/tool", "v2")],
        ],
        # The first visible link in path order carries the old inode, the other links to it.
        ["bin d", "bin/tool f v2", "bin/a f v1", "bin/b l bin/a"],
    ),
    (
        "hard-link-group-stays-one-when-its-first-path-is-whited-out",
        [
            [("d", "x"), ("f", "x/data", "d1"), ("d", "y"), ("l", "y/one", "x/data")],
            [("f", ".wh.x", "")],
        ],
        [".wh.x f", "y d", "y/one f d1"],
    ),
    (
        "hard-link-chain-in-a-layer-is-one-group",
        [[("f", "t", "data"), ("l", "u", "t"), ("l", "v", "u")]],
        ["t f data", "u l t", "v l t"],
    ),
    (
        "hard-link-to-a-lower-layer-becomes-a-copy",
        [[("f", "t", "lower")], [("l", "u", "t")]],
        ["t f lower", "u f lower"],
    ),
    (
        "cache-paths-dropped-but-their-directories-kept",
        [
            [
                ("d", "tmp"),
                ("f", "tmp/build.log", "kept"),
                ("d", "var"),
                ("d", "var/lib"),
                ("d", "var/lib/apt"),
                ("d", "var/lib/apt/lists"),
                ("f", "var/lib/apt/lists/deb.debian.org_dists", "lists"),
                ("d", "root"),
                ("d", "root/.cache"),
                ("d", "root/.cache/pip"),
                ("f", "root/.cache/pip/wheel.whl", "w"),
                ("d", "root/.cache/ms-playwright"),
                ("f", "root/.cache/ms-playwright/chrome", "browser"),
                ("d", "home"),
                ("d", "home/app"),
                ("d", "home/app/.cache"),
                ("d", "home/app/.cache/huggingface"),
                ("f", "home/app/.cache/huggingface/model.bin", "weights"),
                ("d", "home/app/.npm"),
                ("d", "home/app/.npm/_cacache"),
                ("f", "home/app/.npm/_cacache/index", "n"),
                ("f", "home/app/.npm/keep", "k"),
            ],
        ],
        [
            "home d",
            "home/app d",
            "home/app/.cache d",
            "home/app/.cache/huggingface d",
            "home/app/.cache/huggingface/model.bin f weights",
            "home/app/.npm d",
            "home/app/.npm/_cacache d",
            "home/app/.npm/keep f k",
            "root d",
            "root/.cache d",
            "root/.cache/ms-playwright d",
            "root/.cache/ms-playwright/chrome f browser",
            "root/.cache/pip d",
            "tmp d",
            "tmp/build.log f kept",
            "var d",
            "var/lib d",
            "var/lib/apt d",
            "var/lib/apt/lists d",
        ],
    ),
    (
        "hard-link-to-a-dropped-cache-file-carries-its-content",
        [[("f", "root/.cache/pip/w.whl", "wheel"), ("l", "app/w.whl", "root/.cache/pip/w.whl")]],
        ["app/w.whl f wheel"],
    ),
    (
        "file-replaced-by-a-directory-through-an-upper-child",
        [[("f", "p", "file")], [("f", "p/x", "child")]],
        # Extracting p/x made p a directory (0755, root): the squash writes it out, opaque.
        ["p d", "p/.wh..wh..opq f", "p/x f child"],
    ),
    (
        "whiteout-then-child-without-its-directory-entry",
        [[("d", "cfg"), ("f", "cfg/old", "o")], [("f", ".wh.cfg", "")], [("f", "cfg/new", "n")]],
        ["cfg d", "cfg/.wh..wh..opq f", "cfg/new f n"],
    ),
    (
        "entries-sorted-and-names-normalised",
        [[("f", "./zeta", "z"), ("d", "./alpha/"), ("f", "alpha/b", "b"), ("s", "m", "zeta")]],
        ["alpha d", "alpha/b f b", "m s zeta", "zeta f z"],
    ),
]


@pytest.mark.parametrize(
    ("specs", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_squash_golden(tmp_path: Path, specs: list[list[Entry]], expected: list[str]) -> None:
    assert squashed(tmp_path, *specs) == expected


def test_squash_reports_dropped_cache_paths_and_bytes(tmp_path: Path) -> None:
    paths = layers(
        tmp_path,
        [("f", "var/cache/apt/archives/big.deb", "x" * 1000), ("f", "tmp/t", "kept")],
        [("f", "root/.cache/pip/http/y", "y" * 10), ("f", "app", "a")],
    )
    result = squash(paths, tmp_path / "out.tar.gz")
    assert result.dropped == ["root/.cache/pip/http/y", "var/cache/apt/archives/big.deb"]
    assert [(d.path, d.bytes, d.kind) for d in result.dropped_paths] == [
        ("root/.cache/pip/http/y", 10, "pip-cache"),
        ("var/cache/apt/archives/big.deb", 1000, "apt-archives"),
    ]
    assert (result.dropped_count, result.dropped_bytes) == (2, 1010)
    assert result.dropped_kinds == {"pip-cache": 10, "apt-archives": 1000}
    assert result.dropped_json()["paths"][0] == {
        "path": "/root/.cache/pip/http/y",
        "bytes": 10,
        "kind": "pip-cache",
    }


def test_dropped_listing_is_capped_but_counts_and_bytes_cover_all(tmp_path: Path) -> None:
    files: list[Entry] = [("f", f"var/lib/apt/lists/list-{i:04d}", "z" * i) for i in range(250)]
    result = squash(layers(tmp_path, files), tmp_path / "out.tar.gz")
    assert len(result.dropped_paths) == len(result.dropped) == LISTED == 100
    assert result.dropped_paths[0].path == "var/lib/apt/lists/list-0000"
    assert result.dropped_count == 250
    assert result.dropped_bytes == sum(range(250))
    assert result.dropped_json()["truncated"] is True
    assert result.dropped_json()["count"] == 250


def test_a_result_built_by_hand_counts_its_lists() -> None:
    """Callers that build a `SquashResult` with the old fields keep working."""
    result = SquashResult(layer=None, entries=1, dropped=["a", "b"], whiteouts=["c"])  # type: ignore[arg-type]
    assert (result.dropped_count, result.whiteout_count) == (2, 1)


def test_squash_keeps_mtimes_and_owners_but_drops_names_and_pax_extras(tmp_path: Path) -> None:
    lower = make_layer(
        tmp_path / "lower.tar",
        [("d", "app"), ("f", "app/a.py", "src"), ("f", "app/owned", "data", "1000")],
        mtime=1_600_000_000,
    )
    upper = make_layer(
        tmp_path / "upper.tar",
        [("f", "app/b.py", "b"), ("s", "app/link", "a.py"), ("l", "app/hard", "app/b.py")],
        mtime=1_700_000_000,
    )
    result = squash([lower, upper], tmp_path / "out.tar.gz")
    got = members(result.layer.path)
    assert {name: m.mtime for name, m in got.items()} == {
        "app": 1_600_000_000,
        "app/a.py": 1_600_000_001,
        "app/owned": 1_600_000_002,
        "app/b.py": 1_700_000_000,
        "app/link": 1_700_000_001,
        "app/hard": 1_700_000_002,
    }
    owned = got["app/owned"]
    assert (owned.uid, owned.gid) == (1000, 1000)
    assert (owned.uname, owned.gname) == ("", "")
    assert "atime" not in owned.pax_headers
    assert "ctime" not in owned.pax_headers


def test_entries_the_squash_creates_get_the_epoch(tmp_path: Path) -> None:
    paths = layers(
        tmp_path,
        [("d", "cfg"), ("f", "cfg/old", "o")],
        [("f", ".wh.cfg", "")],
        [("f", "cfg/new", "n")],
    )
    result = squash(paths, tmp_path / "out.tar.gz", epoch=1234)
    got = members(result.layer.path)
    assert got["cfg"].mtime == 1234, "the written-out directory"
    assert (got["cfg"].mode, got["cfg"].uid) == (0o755, 0)
    assert got[f"cfg/{OPAQUE}"].mtime == 1234
    assert got["cfg/new"].mtime == 1_700_000_000


def extract(blob: Path, dest: Path) -> Path:
    dest.mkdir()
    with tarfile.open(blob, "r:gz") as tar:
        tar.extractall(dest, filter="tar")
    return dest


def test_a_hard_link_whose_target_path_is_overwritten_keeps_the_old_inode(tmp_path: Path) -> None:
    """As an overlay shows it: the links share layer 0's inode (old content), the target path
    shows layer 1's new file, and extracting the squashed layer gives exactly that."""
    paths = layers(
        tmp_path,
        [
            ("d", "bin"),
            ("f", "bin/tool", "old"),
            ("l", "bin/tool-a", "bin/tool"),
            ("l", "bin/tool-b", "bin/tool"),
        ],
        [("f", "bin/tool", "new")],
    )
    result = squash(paths, tmp_path / "out.tar.gz")
    got = members(result.layer.path)
    assert got["bin/tool-a"].isreg(), "the first visible link carries the inode"
    assert (got["bin/tool-b"].islnk(), got["bin/tool-b"].linkname) == (True, "bin/tool-a")
    root = extract(result.layer.path, tmp_path / "x")
    a, b, tool = (os.stat(root / "bin" / n) for n in ("tool-a", "tool-b", "tool"))
    assert a.st_ino == b.st_ino != tool.st_ino
    assert a.st_nlink == 2
    assert got["bin/tool-a"].mtime == 1_700_000_001, "the carrier has the inode's header"
    assert (root / "bin/tool-a").read_text() == (root / "bin/tool-b").read_text() == "old"
    assert (root / "bin/tool").read_text() == "new"


def test_a_hard_link_whose_target_stays_links_to_it(tmp_path: Path) -> None:
    paths = layers(tmp_path, [("f", "t", "data"), ("l", "u", "t")], [("f", "other", "o")])
    root = extract(squash(paths, tmp_path / "out.tar.gz").layer.path, tmp_path / "x")
    assert os.stat(root / "t").st_ino == os.stat(root / "u").st_ino


def base_and_range(
    tmp_path: Path, base: Sequence[Sequence[Entry]], upper: Sequence[Sequence[Entry]]
) -> tuple[list[Path], list[Path]]:
    return (
        [make_layer(tmp_path / f"base{i}.tar", spec) for i, spec in enumerate(base)],
        [make_layer(tmp_path / f"up{i}.tar", spec) for i, spec in enumerate(upper)],
    )


MARKER_CASES: list[tuple[str, list[list[Entry]], list[list[Entry]], list[str]]] = [
    (
        "whiteout-of-a-path-the-base-lacks",
        [[("d", "app")]],
        [[("d", "app"), ("f", "app/a", "x")], [("f", "app/.wh.a", "")]],
        [],
    ),
    (
        "whiteout-of-a-path-the-base-has",
        [[("d", "app"), ("f", "app/a", "base")]],
        [[("d", "app"), ("f", "app/a", "x")], [("f", "app/.wh.a", "")]],
        ["app/a"],
    ),
    (
        "opaque-over-an-empty-base-directory",
        [[("d", "etc")]],
        [[("d", "etc"), ("f", f"etc/{OPAQUE}", ""), ("f", "etc/new", "n")]],
        [],
    ),
    (
        "opaque-over-base-children",
        [[("d", "etc"), ("f", "etc/old", "o")]],
        [[("d", "etc"), ("f", f"etc/{OPAQUE}", ""), ("f", "etc/new", "n")]],
        [f"etc/{OPAQUE}"],
    ),
    (
        "whiteout-and-re-created-directory-over-base-children",
        [[("d", "data"), ("f", "data/x", "1")]],
        [[("f", ".wh.data", "")], [("d", "data"), ("f", "data/y", "2")]],
        [f"data/{OPAQUE}"],
    ),
    (
        "whiteout-then-re-created-by-a-child-base-lacks-it",
        [[("f", "keep", "k")]],
        [[("f", ".wh.gone", "")], [("f", "gone/sub/f", "")]],
        [],
    ),
    (
        "the-base-deleted-it-itself",
        [[("f", "a", "1")], [("f", ".wh.a", "")]],
        [[("f", ".wh.a", "")]],
        [],
    ),
    (
        "an-empty-directory-the-base-still-has-after-deleting-its-children",
        [[("f", "d/x", "1")], [("f", "d/.wh.x", "")]],
        [[("f", ".wh.d", "")]],
        ["d"],
    ),
]


@pytest.mark.parametrize(
    ("base", "upper", "markers"), [c[1:] for c in MARKER_CASES], ids=[c[0] for c in MARKER_CASES]
)
def test_markers_only_where_the_base_has_something_to_hide(
    tmp_path: Path, base: list[list[Entry]], upper: list[list[Entry]], markers: list[str]
) -> None:
    lower, rng = base_and_range(tmp_path, base, upper)
    below = [list(tar_entries(p)) for p in lower]
    result = squash(rng, tmp_path / "out.tar.gz", below=below)
    assert result.whiteouts == markers
    assert result.whiteout_count == len(markers)
    names = members(result.layer.path)
    assert sum(posixpath.basename(n).startswith(WHITEOUT) for n in names) == len(markers)


def test_nothing_below_means_no_markers_at_all(tmp_path: Path) -> None:
    paths = layers(
        tmp_path, [("f", "a", "1"), ("d", "d")], [("f", ".wh.a", ""), ("f", "d/.wh.x", "")]
    )
    result = squash(paths, tmp_path / "out.tar.gz", below=[])
    assert result.whiteouts == []
    assert listing(result.layer.path) == ["d d"]


def test_squash_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    specs: list[list[Entry]] = [
        [("d", "app"), ("f", "app/a", "1"), ("l", "app/b", "app/a"), ("f", "app/c", "0")],
        [("f", "app/.wh.a", ""), ("f", "app/c", "3"), ("f", "var/cache/apk/x", "dropped")],
    ]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = squash(layers(tmp_path / "one", *specs), tmp_path / "one" / "out.tar.gz")
    second = squash(layers(tmp_path / "two", *specs), tmp_path / "two" / "out.tar.gz")
    assert first.layer.path.read_bytes() == second.layer.path.read_bytes()
    assert (first.layer.digest, first.layer.diff_id) == (second.layer.digest, second.layer.diff_id)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "layer0.tar",
        "layer1.tar",
        "out.tar.gz",
    ], "scratch files left behind"


# ---- the model: random layers, applied as an overlay shows them ------------------------------


@dataclass(frozen=True, eq=False)
class Inode:
    """What a path shows; paths sharing one `Inode` object are one hard-link group."""

    kind: str  # "f", "d", "s"
    data: str
    mode: int
    mtime: float


IMPLICIT_DIR = ("d", "", 0o755, 0)


class Tree:
    """Layers applied in order with OCI semantics: markers first, then entries in tar order,
    each making its missing parent directories (0755, mtime 0). A marker makes nothing: real
    layers carry the entry of a marker's directory (its mtime changed with the deletion)."""

    def __init__(self) -> None:
        self.paths: dict[str, Inode] = {}

    def remove(self, path: str, *, itself: bool = True) -> None:
        for p in [p for p in self.paths if p.startswith(path + "/") or (itself and p == path)]:
            del self.paths[p]

    def ensure_dir(self, path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            a = "/".join(parts[:i])
            if a not in self.paths or self.paths[a].kind != "d":
                self.remove(a)
                self.paths[a] = Inode(*IMPLICIT_DIR)

    def apply(self, blob: Path) -> list[str]:
        """Apply one layer; return its markers (the names, for the minimality check)."""
        with tarfile.open(blob, "r:*") as tar:
            entries = [(m, tar.extractfile(m).read().decode() if m.isreg() else "") for m in tar]  # type: ignore[union-attr]
        markers = []
        for m, _ in entries:
            name = normalize(m.name)
            parent, base = posixpath.split(name)
            if base == OPAQUE:
                markers.append(name)
                self.remove(parent, itself=False)
            elif base.startswith(WHITEOUT):
                markers.append(name)
                self.remove(posixpath.join(parent, base[len(WHITEOUT) :]))
        for m, data in entries:
            name = normalize(m.name)
            if posixpath.basename(name).startswith(WHITEOUT):
                continue
            if posixpath.dirname(name):
                self.ensure_dir(posixpath.dirname(name))
            old = self.paths.get(name)
            if m.isdir():
                if old is None or old.kind != "d":
                    self.remove(name)
                self.paths[name] = Inode("d", "", m.mode, m.mtime)
                continue
            self.remove(name)
            if m.islnk():
                self.paths[name] = self.paths[normalize(m.linkname)]
            else:
                kind = "s" if m.issym() else "f"
                self.paths[name] = Inode(kind, m.linkname if m.issym() else data, m.mode, m.mtime)
        return markers

    def view(self) -> tuple[dict[str, tuple[str, str, int, float]], list[list[str]]]:
        groups: dict[int, list[str]] = {}
        for path, inode in self.paths.items():
            groups.setdefault(id(inode), []).append(path)
        shown = {p: (i.kind, i.data, i.mode, i.mtime) for p, i in self.paths.items()}
        return shown, sorted(sorted(g) for g in groups.values() if len(g) > 1)


NAMES = ("a", "a/x", "a/y", "a/d", "a/d/z", "b", "b/w", "c")


def random_layer(rng: random.Random) -> list[Entry]:
    """A valid layer: each path once, links to an earlier file of the layer, no child under a
    non-directory of the same layer, an opaque marker with its directory entry."""
    entries: list[Entry] = []
    kinds: dict[str, str] = {}
    markers: list[Entry] = []

    def free(path: str, kind: str) -> bool:
        if path in kinds:
            return False
        parts = path.split("/")
        if any(kinds.get("/".join(parts[:i]), "d") != "d" for i in range(1, len(parts))):
            return False
        return kind == "d" or not any(p.startswith(path + "/") for p in kinds)

    for _ in range(rng.randint(1, 8)):
        path = rng.choice(NAMES)
        op = rng.choice("dffflllswwo")
        files = [p for p, k in kinds.items() if k == "f"]
        if op in "ws":
            parent, base = posixpath.split(path)
            marker = posixpath.join(parent, WHITEOUT + base)
            if op == "w" and ("f", marker, "") not in markers:
                markers.append(("f", marker, ""))
            elif op == "s" and free(path, "s"):
                kinds[path] = "s"
                entries.append(("s", path, rng.choice(NAMES)))
        elif op == "o":
            if free(path, "d"):
                kinds[path] = "d"
                entries.append(("d", path))
                markers.append(("f", f"{path}/{OPAQUE}", ""))
        elif op == "l" and files and free(path, "l"):
            kinds[path] = "l"
            entries.append(("l", path, rng.choice(files)))
        elif op in "df" and free(path, op):
            kinds[path] = op
            entries.append((op, path) if op == "d" else (op, path, f"{path}@{rng.random():.3}"))
    # Markers anywhere in the tar: they apply first all the same.
    for marker_entry in markers:
        entries.insert(rng.randint(0, len(entries)), marker_entry)
    return entries


def model_case(rng: random.Random, tmp: Path) -> tuple[list[Path], list[Path]]:
    tmp.mkdir()
    n_base, n_upper = rng.randint(0, 2), rng.randint(1, 3)
    made = [
        make_layer(tmp / f"{i}.tar", random_layer(rng), mtime=1_000 * (i + 1))
        for i in range(n_base + n_upper)
    ]
    return made[:n_base], made[n_base:]


def shows(*blobs: Path) -> tuple[Tree, list[str]]:
    tree, markers = Tree(), []
    for blob in blobs:
        markers = tree.apply(blob)
    return tree, markers


def without_meta(
    view: tuple[dict[str, tuple[str, str, int, float]], list[list[str]]], paths: set[str]
) -> tuple[dict[str, tuple[str, str, int, float]], list[list[str]]]:
    shown, groups = view
    return {p: (v[0], v[1], 0, 0) if p in paths else v for p, v in shown.items()}, groups


@pytest.mark.parametrize("seed", range(300))
def test_squash_shows_what_the_layers_show(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    lower, upper = model_case(rng, tmp_path / "case")
    expected, _ = shows(*lower, *upper)
    base, _ = shows(*lower)
    below = [list(tar_entries(p)) for p in lower]
    result = squash(upper, tmp_path / "known.tar.gz", cache_dirs=(), below=below)
    got, markers = shows(*lower, result.layer.path)
    assert got.view() == expected.view(), f"seed {seed}"
    for marker in markers:  # every marker hides something of the base
        parent, leaf = posixpath.split(marker)
        if leaf == OPAQUE:
            assert any(p.startswith(f"{parent}/") for p in base.paths), marker
        else:
            assert posixpath.join(parent, leaf[len(WHITEOUT) :]) in base.paths, marker

    # The base unknown: more markers, and a directory that only existed implicitly is written
    # out even where the base might have had it (its mode and mtime are then the squash's).
    result = squash(upper, tmp_path / "unknown.tar.gz", cache_dirs=(), below=None)
    got, _ = shows(*lower, result.layer.path)
    made = {n for n, m in members(result.layer.path).items() if m.isdir() and m.mtime == 0}
    assert without_meta(got.view(), made) == without_meta(expected.view(), made), f"seed {seed}"


def test_model_cases_cover_the_hard_parts(tmp_path: Path) -> None:
    """The random cases do reach links whose first path is gone, and markers of both kinds."""
    seen = {"carrier": 0, "whiteout": 0, "opaque": 0}
    for seed in range(300):
        rng = random.Random(seed)
        lower, upper = model_case(rng, tmp_path / str(seed))
        below = [list(tar_entries(p)) for p in lower]
        result = squash(upper, tmp_path / f"{seed}.tar.gz", cache_dirs=(), below=below)
        got = members(result.layer.path)
        links = set()
        for tar_path in upper:
            with tarfile.open(tar_path) as tar:
                links |= {normalize(m.name) for m in tar if m.islnk()}
        seen["carrier"] += any(m.isreg() and name in links for name, m in got.items())
        seen["opaque"] += any(name.endswith(OPAQUE) for name in got)
        seen["whiteout"] += any(
            posixpath.basename(name).startswith(WHITEOUT) and not name.endswith(OPAQUE)
            for name in got
        )
    assert all(count >= 3 for count in seen.values()), seen


def random_info(rng: random.Random) -> tarfile.TarInfo:
    """A member with fields that do, and do not, fit a plain ustar header."""
    kind = rng.choice([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                       tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])  # fmt: skip
    name = rng.choice(["a", "dir/", "x" * 100, "y" * 101, "caf\u00e9", "bad-\udcff", "a/" * 60])
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = rng.choice([0o644, 0o4755, 0o1777, 0o100644])
    info.uid, info.gid = rng.choice([0, 65532, 8**7 - 1, 8**7, 2**31]), rng.choice([0, 33])
    info.size = rng.choice([0, 1, 8**11 - 1, 8**11]) if kind == tarfile.REGTYPE else 0
    info.mtime = rng.choice([0, 1_700_000_000, 8**11, 1_700_000_000.5, -1])
    info.linkname = rng.choice(["", "t", "z" * 100, "z" * 101, "\u00e9"])
    info.devmajor, info.devminor = rng.choice([(0, 0), (1, 3), (8**7, 1)])
    if rng.random() < 0.1:
        info.pax_headers = {"SCHILY.xattr.user.k": "v"}
    return info


def test_fast_headers_are_the_ones_tarfile_writes_and_reads() -> None:
    """The squash's short paths (`_plain_header` writing, `_FastInfo` reading) give the bytes
    and fields `tarfile` gives, and step aside for everything they do not handle (PAX and GNU
    extensions, base-256 numbers, non-ASCII names)."""
    rng = random.Random(15)
    plain = 0
    for _ in range(3000):
        info = random_info(rng)
        for tar_format in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
            try:
                written = info.tobuf(tar_format, "utf-8", "surrogateescape")
            except ValueError:
                continue  # tarfile cannot write it in this format either
            if tar_format == tarfile.PAX_FORMAT:
                fast = _plain_header(info)
                plain += fast is not None
                assert fast in (None, written), info
            assert read_back(written, info.size, _FastInfo) == read_back(
                written, info.size, tarfile.TarInfo
            )
    assert plain > 100


def read_back(header: bytes, size: int, cls: type[tarfile.TarInfo]) -> list[object]:
    buf = io.BytesIO(header + b"\0" * (min(size, 4096) + 1024))
    with tarfile.open(fileobj=buf, mode="r:", tarinfo=cls) as tar:
        member = tar.next()
    assert member is not None
    fields = ("name", "type", "mode", "uid", "gid", "size", "mtime", "linkname", "uname",
              "devmajor", "devminor", "pax_headers", "offset", "offset_data")  # fmt: skip
    return [getattr(member, f) for f in fields]


def test_gzip_header_has_no_time_and_no_name(tmp_path: Path) -> None:
    src = make_layer(tmp_path / "named-file.tar", [("f", "a", "1")])
    written = gzip_file(src, tmp_path / "named-file.tar.gz")
    header = written.path.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b"
    assert header[3] & 0x08 == 0, "FNAME flag set: the file name is in the gzip header"
    assert header[4:8] == b"\0\0\0\0", "gzip header mtime is not 0"


def test_decompress_verifies_the_diff_id(tmp_path: Path) -> None:
    src = make_layer(tmp_path / "l.tar", [("f", "a", "1")])
    blob = gzip_file(src, tmp_path / "l.tar.gz")
    assert decompress(blob.path, tmp_path / "out.tar", blob.diff_id) == blob.diff_id
    with pytest.raises(RebuildError, match="decompresses to"):
        decompress(blob.path, tmp_path / "out2.tar", "sha256:" + "0" * 64)


@pytest.mark.parametrize(
    ("path", "cached"),
    [
        ("tmp/x", False),
        ("var/tmp/x", False),
        ("var/cache/apt/archives/a.deb", True),
        ("var/lib/apt/lists/x_Packages", True),
        ("var/cache/apk/APKINDEX.tar.gz", True),
        ("home/app/.cache/pip/x", True),
        ("root/.cache/go-build/00/x", True),
        ("usr/local/share/.cache/yarn/v6/x", True),
        ("root/.npm/_cacache/index-v5/x", True),
        ("root/.cache/ms-playwright/chromium-1091/chrome", False),
        ("home/app/.cache/huggingface/hub/model.bin", False),
        ("root/.cache/x", False),
        ("usr/lib/python3/__pycache__/x.pyc", False),
        ("var/cache/apt", False),
        ("srv/tmp/x", False),
        ("usr/lib/x", False),
    ],
)
def test_cache_paths(path: str, cached: bool) -> None:
    assert is_cache_path(path) is cached


def test_cache_dirs_come_from_the_shared_catalogue() -> None:
    assert "root/.cache/pip" in CACHE_DIRS
    assert not any(d in ("root/.cache", "tmp", "var/tmp") for d in CACHE_DIRS)


@pytest.mark.parametrize(
    ("name", "expected"), [("./etc/", "etc"), ("/usr/bin", "usr/bin"), ("./", ""), ("a//b", "a/b")]
)
def test_normalize(name: str, expected: str) -> None:
    assert normalize(name) == expected


def test_a_layer_index_says_what_is_below(tmp_path: Path) -> None:
    """What the engine has for the base's layers (`webhook.layers.index`) serves as `below`."""
    from webhook.layers.index import index_layer

    base = make_layer(tmp_path / "base.tar", [("d", "app"), ("f", "app/a", "x")])
    blob = gzip_file(base, tmp_path / "base.tar.gz")
    with blob.path.open("rb") as stream:
        index = index_layer(
            stream,
            digest=blob.digest,
            media_type="application/vnd.oci.image.layer.v1.tar+gzip",
            max_bytes=1 << 30,
        )
    upper = make_layer(tmp_path / "upper.tar", [("f", "app/.wh.a", ""), ("f", "app/.wh.b", "")])
    result = squash([upper], tmp_path / "out.tar.gz", below=[index.entries()])
    assert result.whiteouts == ["app/a"]
