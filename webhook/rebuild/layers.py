"""Layer tars: decompress and verify, squash with OCI whiteout semantics, write reproducibly.

Squash semantics (OCI image spec, DESIGN §4), layers given bottom first:

* an upper layer's entry replaces a lower entry at the same path; an upper non-directory also
  hides everything a lower layer has below that path; upper and lower directories merge;
* `.wh.NAME` hides NAME (and everything below it) in the *lower* layers;
* `.wh..wh..opq` in directory D hides every lower child of D, and applies first wherever it
  sits in its tar: it never hides entries of its own layer;
* no whiteout hides an entry of its own layer.

The squashed layer sits on the layers below the squashed range (the base), so whiteouts that
may still hide something there are kept: `.wh.NAME` when NAME is gone, an opaque marker when a
whited-out directory was re-created. Hard links are kept when their target is in the result
(same source layer); otherwise they become copies of the target's content.

Contents of `CACHE_DIRS` are dropped (the directories themselves are kept).

Reproducible output: entries sorted by path (an opaque marker right after its directory,
hard links last so their targets exist), every mtime `SOURCE_DATE_EPOCH`, owners and modes
kept (they matter at run time), user/group *names* and PAX extras other than xattrs dropped
(atime, ctime, …), gzip header with mtime 0 and no file name. The same input gives the same
bytes, hence the same digest.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import posixpath
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from webhook.errors import RebuildError

SOURCE_DATE_EPOCH = 0
"""The mtime of every entry written (1970-01-01T00:00:00Z, as `SOURCE_DATE_EPOCH=0`)."""

GZIP_LEVEL = 6

CACHE_DIRS: tuple[str, ...] = (
    "tmp",  # scratch files of the build
    "var/tmp",
    "var/cache/apt",  # apt: downloaded .debs and package caches
    "var/lib/apt/lists",  # apt: package lists (`apt-get update`)
    "var/cache/apk",  # alpine apk cache
    "var/cache/yum",  # yum / dnf caches
    "var/cache/dnf",
    "root/.cache",  # pip (~/.cache/pip), go build cache, … of root
    "home/*/.cache",  # … and of other users
    "root/.npm",  # npm cache (~/.npm/_cacache)
    "home/*/.npm",
    "usr/local/share/.cache",  # yarn's global cache
)
"""Directories whose *contents* a squash drops (paths relative to `/`, `*` matches one
component). The directories themselves stay, with their modes (`/tmp` keeps 1777)."""

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_KEPT_PAX_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "SCHILY.acl.")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class WrittenLayer:
    """A gzip layer blob on disk: `digest` of the blob, `diff_id` of its tar."""

    path: Path
    digest: str
    diff_id: str
    size: int


@dataclass(frozen=True)
class SquashResult:
    layer: WrittenLayer
    entries: int
    dropped: list[str] = field(default_factory=list)
    dropped_bytes: int = 0
    whiteouts: list[str] = field(default_factory=list)


def normalize(name: str) -> str:
    """A tar member name as a clean relative path (`./etc/` → `etc`, `/` → ``)."""
    name = name.strip()
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    if not name or name == ".":
        return ""
    name = posixpath.normpath(name)
    return "" if name == "." else name


def is_cache_path(path: str, cache_dirs: Sequence[str] = CACHE_DIRS) -> bool:
    """True when `path` is strictly inside one of `cache_dirs`."""
    parts = path.split("/")
    for pattern in cache_dirs:
        pattern_parts = pattern.strip("/").split("/")
        n = len(pattern_parts)
        if len(parts) > n and all(
            fnmatch.fnmatchcase(p, q) for p, q in zip(parts[:n], pattern_parts, strict=True)
        ):
            return True
    return False


# ---- decompression --------------------------------------------------------------------------


def decompress(blob: Path, dest: Path, diff_id: str | None = None) -> str:
    """Write the uncompressed tar of layer `blob` to `dest`; verify and return its diff_id."""
    with blob.open("rb") as f:
        magic = f.read(4)
    if magic[:2] == _GZIP_MAGIC:
        magic = _GZIP_MAGIC
    if magic.startswith(_ZSTD_MAGIC):
        raise RebuildError(
            f"layer {blob.name} is zstd-compressed, which the squash cannot read yet; "
            "rebuild without the size fix, or push the image with gzip layers"
        )
    hasher = hashlib.sha256()
    with blob.open("rb") as raw, dest.open("wb") as out:
        src: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(fileobj=raw, mode="rb") if magic == _GZIP_MAGIC else raw
        )
        while chunk := src.read(1024 * 1024):
            hasher.update(chunk)
            out.write(chunk)
    got = f"sha256:{hasher.hexdigest()}"
    if diff_id is not None and got != diff_id:
        raise RebuildError(
            f"layer {blob.name} decompresses to {got}, but the image config says {diff_id}"
        )
    return got


# ---- squash ---------------------------------------------------------------------------------


@dataclass
class _Layer:
    tar: tarfile.TarFile
    entries: dict[str, tarfile.TarInfo]
    whiteouts: set[str]
    opaque: set[str]


def _read_layer(path: Path) -> _Layer:
    tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by squash()
    entries: dict[str, tarfile.TarInfo] = {}
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    for member in tar.getmembers():
        name = normalize(member.name)
        if not name:
            continue
        parent, base = posixpath.split(name)
        if base == OPAQUE:
            opaque.add(parent)
        elif base.startswith(WHITEOUT + WHITEOUT):
            continue  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content
        elif base.startswith(WHITEOUT):
            whiteouts.add(posixpath.join(parent, base[len(WHITEOUT) :]))
        else:
            entries[name] = member  # a later duplicate in the same tar wins, as on extraction
    return _Layer(tar, entries, whiteouts, opaque)


def _ancestors(path: str) -> Iterable[str]:
    while True:
        path = posixpath.dirname(path)
        if not path:
            return
        yield path


def squash(
    layers: Sequence[Path],
    out: Path,
    *,
    cache_dirs: Sequence[str] = CACHE_DIRS,
    epoch: int = SOURCE_DATE_EPOCH,
) -> SquashResult:
    """Merge uncompressed layer tars (bottom first) into one reproducible gzip layer at `out`."""
    opened = [_read_layer(p) for p in layers]
    try:
        return _squash(opened, out, cache_dirs, epoch)
    finally:
        for layer in opened:
            layer.tar.close()


def _squash(layers: list[_Layer], out: Path, cache_dirs: Sequence[str], epoch: int) -> SquashResult:
    result: dict[str, tuple[int, tarfile.TarInfo]] = {}
    hidden: set[str] = set()  # whiteout targets of the layers above
    opaque_above: set[str] = set()  # opaque directories of the layers above
    whiteouts_out: set[str] = set()
    opaque_out: set[str] = set()

    def hidden_above(path: str) -> bool:
        if path in hidden:
            return True
        for parent in _ancestors(path):
            if parent in hidden or parent in opaque_above:
                return True
            picked = result.get(parent)
            if picked is not None and not picked[1].isdir():
                return True
        return False

    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        for path in sorted(layer.entries):
            if path in result or hidden_above(path):
                continue
            result[path] = (index, layer.entries[path])
        # What this layer's whiteouts still have to hide in the layers below the squash.
        for target in sorted(layer.whiteouts):
            if hidden_above(target):
                continue
            picked = result.get(target)
            if picked is None:
                whiteouts_out.add(target)
            elif picked[1].isdir():
                opaque_out.add(target)  # re-created directory: hide the old one's children
        for directory in sorted(layer.opaque):
            if directory in hidden or any(
                p in hidden or p in opaque_above for p in _ancestors(directory)
            ):
                continue
            opaque_out.add(directory)
        hidden |= layer.whiteouts
        opaque_above |= layer.opaque

    dropped: list[str] = []
    dropped_bytes = 0
    for path in sorted(result):
        if is_cache_path(path, cache_dirs):
            dropped.append(path)
            dropped_bytes += result[path][1].size if result[path][1].isreg() else 0
            del result[path]
    whiteouts_out = {w for w in whiteouts_out if w not in opaque_out}

    links = [path for path, (_, member) in result.items() if member.islnk()]
    items: list[tuple[list[str], str, str]] = [  # (sort key, kind, path)
        (path.split("/"), "entry", path)
        for path, (_, member) in result.items()
        if not member.islnk()
    ]
    for directory in opaque_out:  # right after its directory: "" sorts before any child
        items.append(([*directory.split("/"), ""] if directory else [""], "opaque", directory))
    for target in whiteouts_out:
        parent, base = posixpath.split(target)
        key = [*parent.split("/"), WHITEOUT + base] if parent else [WHITEOUT + base]
        items.append((key, "whiteout", target))
    items.sort(key=lambda item: item[0])
    links.sort(key=lambda p: p.split("/"))

    count = 0
    with out.open("wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL
        ) as gz:
            tee = _HashingWriter(gz)
            with tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for _, kind, path in items:
                    if kind == "entry":
                        index, member = result[path]
                        _add(tar, layers[index].tar, member, path, epoch)
                    elif kind == "opaque":
                        tar.addfile(_marker(posixpath.join(path, OPAQUE), epoch))
                    else:
                        parent, base = posixpath.split(path)
                        tar.addfile(_marker(posixpath.join(parent, WHITEOUT + base), epoch))
                    count += 1
                for path in links:
                    index, member = result[path]
                    _add_link(tar, layers, index, member, path, result, epoch)
                    count += 1
            tee_digest = tee.digest()
    written = WrittenLayer(out, compressed.digest(), tee_digest, compressed.size)
    return SquashResult(
        written,
        count,
        dropped=dropped,
        dropped_bytes=dropped_bytes,
        whiteouts=sorted([*whiteouts_out, *(posixpath.join(d, OPAQUE) for d in opaque_out)]),
    )


def _normalized_info(member: tarfile.TarInfo, name: str, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = member.type
    info.mode = member.mode
    info.uid = member.uid
    info.gid = member.gid
    info.size = member.size if member.isreg() else 0
    info.linkname = member.linkname
    info.devmajor = member.devmajor
    info.devminor = member.devminor
    info.mtime = epoch
    info.uname = ""
    info.gname = ""
    info.pax_headers = {
        k: v for k, v in member.pax_headers.items() if k.startswith(_KEPT_PAX_PREFIXES)
    }
    if info.type in (tarfile.AREGTYPE, tarfile.CONTTYPE) or member.issparse():
        info.type = tarfile.REGTYPE
    return info


def _add(
    tar: tarfile.TarFile,
    source: tarfile.TarFile,
    member: tarfile.TarInfo,
    path: str,
    epoch: int,
) -> None:
    info = _normalized_info(member, path, epoch)
    if member.isreg():
        data = source.extractfile(member)
        if data is None:  # pragma: no cover - isreg() members always have data
            raise RebuildError(f"cannot read {path} from a layer")
        with data:
            tar.addfile(info, data)
    else:
        tar.addfile(info)


def _add_link(
    tar: tarfile.TarFile,
    layers: list[_Layer],
    index: int,
    member: tarfile.TarInfo,
    path: str,
    result: dict[str, tuple[int, tarfile.TarInfo]],
    epoch: int,
) -> None:
    """A hard link stays one when its target is in the result from the same layer; else a copy."""
    target = normalize(member.linkname)
    picked = result.get(target)
    if picked is not None and picked[0] == index and picked[1] is layers[index].entries.get(target):
        info = _normalized_info(member, path, epoch)
        info.linkname = target
        tar.addfile(info)
        return
    found = _link_target(layers, index, target)
    if found is None:
        raise RebuildError(f"hard link {path} points to {target}, which no layer has")
    source, target_member = found
    info = _normalized_info(target_member, path, epoch)
    data = source.extractfile(target_member)
    if data is None:  # pragma: no cover
        raise RebuildError(f"cannot read {target} for hard link {path}")
    with data:
        tar.addfile(info, data)


def _link_target(
    layers: list[_Layer], index: int, target: str
) -> tuple[tarfile.TarFile, tarfile.TarInfo] | None:
    for _ in range(8):  # follow link chains a little, never forever
        found = next((i for i in range(index, -1, -1) if target in layers[i].entries), None)
        if found is None:
            return None
        member = layers[found].entries[target]
        if member.isreg():
            return layers[found].tar, member
        if not member.islnk():
            return None
        target, index = normalize(member.linkname), found
    return None


def _marker(name: str, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    info.mode = 0o644
    info.size = 0
    info.mtime = epoch
    return info


# ---- writing ---------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through to `inner`."""

    def __init__(self, inner: IO[bytes] | BinaryIO | gzip.GzipFile) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._inner.write(data)
        return len(data)

    def flush(self) -> None:
        self._inner.flush()

    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def gzip_file(src: Path, dest: Path) -> WrittenLayer:
    """Gzip a tar reproducibly (mtime 0, no file name); returns digests and size."""
    with src.open("rb") as f, dest.open("wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL
        ) as gz:
            tee = _HashingWriter(gz)
            shutil.copyfileobj(f, tee)
    return WrittenLayer(dest, compressed.digest(), tee.digest(), compressed.size)
