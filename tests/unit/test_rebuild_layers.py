"""Squash golden tests over hand-built layer tars (DESIGN §4: whiteouts, opaque dirs, links).

Each case builds layers bottom first, squashes them, and compares the resulting tar with the
expected listing: `path kind [extra]`, in the order the squash writes them.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from webhook.errors import RebuildError
from webhook.rebuild.layers import (
    SOURCE_DATE_EPOCH,
    decompress,
    gzip_file,
    is_cache_path,
    normalize,
    squash,
)

# An entry: ("d", path) directory, ("f", path, data) file, ("l", path, target) hard link,
# ("s", path, target) symlink. Whiteouts are files named .wh.* like in real layers.
Entry = tuple[str, ...]


def make_layer(path: Path, entries: Sequence[Entry], *, mtime: int = 1_700_000_000) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            kind, name = entry[0], entry[1]
            info = tarfile.TarInfo(name)
            info.mtime = mtime
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
        # app/a existed only in a squashed layer, but the base below might have it too: the
        # whiteout is kept (harmless when there is nothing to hide).
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
        "hard-link-whose-target-was-replaced-becomes-a-copy",
        [
            [("d", "bin"), ("f", "bin/tool", "v1"), ("l", "bin/alias", "bin/tool")],
            [("f", "bin/tool", "v2")],
        ],
        ["bin d", "bin/tool f v2", "bin/alias f v1"],
    ),
    (
        "cache-paths-dropped-but-their-directories-kept",
        [
            [
                ("d", "tmp"),
                ("f", "tmp/build.log", "junk"),
                ("d", "var"),
                ("d", "var/lib"),
                ("d", "var/lib/apt"),
                ("d", "var/lib/apt/lists"),
                ("f", "var/lib/apt/lists/deb.debian.org_dists", "lists"),
                ("d", "root"),
                ("d", "root/.cache"),
                ("d", "root/.cache/pip"),
                ("f", "root/.cache/pip/wheel.whl", "w"),
                ("d", "home"),
                ("d", "home/app"),
                ("d", "home/app/.npm"),
                ("f", "home/app/.npm/index", "n"),
                ("f", "home/app/keep", "k"),
            ],
        ],
        [
            "home d",
            "home/app d",
            "home/app/.npm d",
            "home/app/keep f k",
            "root d",
            "root/.cache d",
            "tmp d",
            "var d",
            "var/lib d",
            "var/lib/apt d",
            "var/lib/apt/lists d",
        ],
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
    paths = layers(tmp_path, [("d", "tmp"), ("f", "tmp/big", "x" * 1000), ("f", "app", "a")])
    result = squash(paths, tmp_path / "out.tar.gz")
    assert result.dropped == ["tmp/big"]
    assert result.dropped_bytes == 1000


def test_squash_normalises_times_names_and_pax_but_keeps_owners(tmp_path: Path) -> None:
    paths = layers(tmp_path, [("f", "owned", "data", "1000")])
    result = squash(paths, tmp_path / "out.tar.gz")
    with gzip.open(result.layer.path, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        (member,) = list(tar)
    assert member.mtime == SOURCE_DATE_EPOCH
    assert (member.uid, member.gid) == (1000, 1000)
    assert (member.uname, member.gname) == ("", "")
    assert "atime" not in member.pax_headers
    assert "ctime" not in member.pax_headers


def test_squash_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    specs: list[list[Entry]] = [
        [("d", "app"), ("f", "app/a", "1"), ("l", "app/b", "app/a")],
        [("f", "app/.wh.a", ""), ("f", "app/c", "3"), ("f", "tmp/x", "dropped")],
    ]
    first = squash(layers(tmp_path, *specs), tmp_path / "one.tar.gz")
    # Same content, different input mtimes: the output must not change.
    again = [
        make_layer(tmp_path / f"again{i}.tar", spec, mtime=1_234) for i, spec in enumerate(specs)
    ]
    second = squash(again, tmp_path / "two.tar.gz")
    assert first.layer.path.read_bytes() == second.layer.path.read_bytes()
    assert (first.layer.digest, first.layer.diff_id) == (second.layer.digest, second.layer.diff_id)


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
        ("tmp/x", True),
        ("tmp", False),
        ("var/cache/apt/archives/a.deb", True),
        ("home/app/.cache/pip/x", True),
        ("srv/tmp/x", False),
        ("usr/lib/x", False),
    ],
)
def test_cache_paths(path: str, cached: bool) -> None:
    assert is_cache_path(path) is cached


@pytest.mark.parametrize(
    ("name", "expected"), [("./etc/", "etc"), ("/usr/bin", "usr/bin"), ("./", ""), ("a//b", "a/b")]
)
def test_normalize(name: str, expected: str) -> None:
    assert normalize(name) == expected
