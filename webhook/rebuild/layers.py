"""Layer tars: decompress and verify, squash with OCI whiteout semantics, write reproducibly.

Squash semantics (OCI image spec, DESIGN §4), layers given bottom first:

* an upper layer's entry replaces a lower entry at the same path; an upper non-directory also
  hides everything a lower layer has below that path; upper and lower directories merge;
* `.wh.NAME` hides NAME (and everything below it) in the *lower* layers;
* `.wh..wh..opq` in directory D hides every lower child of D, and applies first wherever it
  sits in its tar: it never hides entries of its own layer;
* no whiteout hides an entry of its own layer.

What the squashed layer must still hide. It sits on the base (the layers below the squashed
range), so a marker is written only where it hides something there: `.wh.NAME` when the range
removed NAME and the base has NAME; an opaque marker on a directory whose lower children the
range hid (an opaque marker, or a whiteout and a re-created directory) when the base has
children there. `below` gives the base's entries; without it (`below=None`) the base is unknown
and every marker that might hide something is written. A directory that existed only
implicitly (made by extracting a child under a whited-out path or under a file a lower layer of
the range had there) is written out (0755, root, mtime `epoch`, as extraction makes it) so
that it can carry its marker. A marker makes no directory (real layers carry the entry of a
marker's directory, whose mtime changed with the deletion).

Hard links: a link made in layer N shares the inode of its target in layer N, and a later
layer that replaces the target's *path* leaves that inode (old content) to the links. So a group
(target and its links) stays one: the links point to the target while its path still shows
layer N's file; otherwise the first visible link in path order carries the inode (the target's
header and content) and the others link to it. A link whose target is not in its own layer
becomes a copy of the target found in a lower layer of the range.

Dropped: the contents of the package-manager caches of the shared catalogue
(`webhook.layers.junk`, the kinds in `DROPPABLE_KINDS`), never `~/.cache` as a whole (browsers,
models live there), nor `/tmp` and `/var/tmp` (see `DROPPABLE_KINDS`). `SquashResult` lists the
first `LISTED` dropped paths with their bytes, and counts all of them.

Reproducible output: entries in path order (component by component, by bytes; an opaque marker
right after its directory, hard links last so their targets exist); mtimes, owners and modes
kept from the source (the source digest fixes them, so determinism does not need a clamp: only
entries the squash creates, markers and written-out directories, get `epoch`); user/group
*names* and PAX extras other than xattrs dropped (atime, ctime, …); gzip header with mtime 0
and no file name. The same input gives the same bytes, hence the same digest.

Memory stays flat with the entry count (a layer of 1,000,000 files): each entry is one compact
row (path key, layer, offset of its tar header, kind, size) in a SQLite file in a scratch
directory next to `out`; the merge walks the rows in path order with a stack of the current
directory's ancestors; a header is read again from its tar (by offset) when it is written and
contents are streamed. Plain ustar headers, almost all of them, are read and written by short
paths that give exactly what `tarfile` gives (`_FastInfo`, `_plain_header`); the rest goes
through `tarfile`.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import posixpath
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, Self

from webhook.errors import RebuildError
from webhook.layers.junk import CATALOGUE, JunkKind, JunkMatch, junk_dirs, match_junk
from webhook.layers.tarfmt import GZIP_MAGIC, OPAQUE, WHITEOUT, ZSTD_MAGIC, normalize

SOURCE_DATE_EPOCH = 0
"""The mtime of entries the squash creates (1970-01-01T00:00:00Z, as `SOURCE_DATE_EPOCH=0`)."""

GZIP_LEVEL = 6

DROPPABLE_KINDS: tuple[str, ...] = (
    "apt-lists",
    "apt-archives",
    "apk-cache",
    "yum-cache",
    "pip-cache",
    "npm-cache",
    "yarn-cache",
    "go-build-cache",
)
"""The kinds of `webhook.layers.junk.CATALOGUE` whose contents a squash drops: caches a package
manager or build tool fills and rebuilds at will, nothing an app reads at run time.

Not `pycache`: bytecode makes imports fast, and without it a non-root app recompiles on every
start. Not `tmp` (`/tmp`, `/var/tmp`): an image's /tmp is what the app starts with (unless the
Pod mounts a volume there), and apps do ship files there (pre-created socket and lock
directories, seeded scratch data, a server's temp paths made at build time); the layer analysis
reports build junk left there for the author to remove, but a replacement must behave as the
original did, so it keeps it."""

CACHE_DIRS: tuple[str, ...] = junk_dirs(k for k in CATALOGUE if k.name in DROPPABLE_KINDS)
"""Directory patterns whose *contents* a squash drops (paths relative to `/`, `*` one
component, `**` any number): those of `DROPPABLE_KINDS`. The directories themselves stay."""

LISTED = 100
"""How many dropped paths (and markers) a `SquashResult` lists; the counts cover all."""

_AUFS_META = WHITEOUT + WHITEOUT  # `.wh..wh.plnk`, `.wh..wh.aufs`, … (and the opaque marker)
_KEPT_PAX_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "SCHILY.acl.")

# Row kinds and record types of the merge (small ints keep a row small).
_FILE, _DIR, _SYMLINK, _LINK, _OTHER = range(5)
_ENTRY, _WHITEOUT, _OPAQUE = range(3)
_BATCH = 10_000
_SQLITE_CACHE_KIB = 32 * 1024


@dataclass(frozen=True)
class WrittenLayer:
    """A gzip layer blob on disk: `digest` of the blob, `diff_id` of its tar."""

    path: Path
    digest: str
    diff_id: str
    size: int


@dataclass(frozen=True)
class DroppedPath:
    """One path a squash left out: `path` relative to `/`, its content `bytes` (0 but for
    regular files), the catalogue `kind` it belongs to (`pip-cache`, …; `cache` for a custom
    pattern)."""

    path: str
    bytes: int
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {"path": "/" + self.path, "bytes": self.bytes, "kind": self.kind}


@dataclass(frozen=True)
class SquashResult:
    """What `squash` wrote and left out.

    `dropped` is the first `LISTED` dropped paths (strings, as before) and `dropped_paths` the
    same with their bytes and kind; `dropped_count` and `dropped_bytes` cover every dropped path
    (`dropped_count` defaults to `len(dropped)` for results built by hand);
    `dropped_kinds` is bytes by kind. `whiteouts` is the first `LISTED` markers written
    (hidden paths, and `DIR/.wh..wh..opq`), `whiteout_count` all of them.
    """

    layer: WrittenLayer
    entries: int
    dropped: list[str] = field(default_factory=list)
    dropped_bytes: int = 0
    whiteouts: list[str] = field(default_factory=list)
    dropped_paths: list[DroppedPath] = field(default_factory=list)
    dropped_count: int = -1
    dropped_kinds: dict[str, int] = field(default_factory=dict)
    whiteout_count: int = -1

    def __post_init__(self) -> None:
        if self.dropped_count < 0:
            object.__setattr__(self, "dropped_count", len(self.dropped))
        if self.whiteout_count < 0:
            object.__setattr__(self, "whiteout_count", len(self.whiteouts))

    def dropped_json(self) -> dict[str, Any]:
        """The status/JSON form: count, bytes, bytes by kind, the listed paths."""
        return {
            "count": self.dropped_count,
            "bytes": self.dropped_bytes,
            "kinds": dict(sorted(self.dropped_kinds.items())),
            "paths": [d.to_json() for d in self.dropped_paths],
            "truncated": self.dropped_count > len(self.dropped_paths),
        }


class BelowEntry(Protocol):
    """An entry of a layer below the squashed range, as `webhook.layers.index.LayerEntry` has
    it: `path` normalised; a whiteout is an entry for the hidden path, an opaque marker one for
    its directory."""

    @property
    def path(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def whiteout(self) -> bool: ...

    @property
    def opaque(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class TarEntry:
    """A `BelowEntry` read from a layer tar by `tar_entries`."""

    path: str
    kind: str
    whiteout: bool = False
    opaque: bool = False


def is_cache_path(path: str, cache_dirs: Sequence[str] = CACHE_DIRS) -> bool:
    """True when `path` is strictly inside one of `cache_dirs`."""
    return _matcher(tuple(cache_dirs)).match(path) is not None


class _CacheMatcher:
    """`match_junk` over some patterns, tried only against those whose first component can
    match (a million paths are matched in about a second, not twenty)."""

    def __init__(self, cache_dirs: tuple[str, ...]) -> None:
        names = {pattern: kind.name for kind in CATALOGUE for pattern in kind.dirs}
        kinds = [JunkKind(names.get(p, "cache"), (p,), "") for p in cache_dirs]
        firsts = [p.strip("/").split("/", 1)[0] for p in cache_dirs]
        wild = [any(c in first for c in "*?[") for first in firsts]
        self._any = tuple(k for k, w in zip(kinds, wild, strict=True) if w)
        self._by_first = {
            first: tuple(k for k, f, w in zip(kinds, firsts, wild, strict=True) if w or f == first)
            for first, w in zip(firsts, wild, strict=True)
            if not w
        }

    def match(self, path: str) -> JunkMatch | None:
        candidates = self._by_first.get(path.partition("/")[0], self._any)
        return match_junk(path, candidates) if candidates else None


@lru_cache(maxsize=16)
def _matcher(cache_dirs: tuple[str, ...]) -> _CacheMatcher:
    return _CacheMatcher(cache_dirs)


def _entry_kind(member: tarfile.TarInfo) -> int:
    if member.isdir():
        return _DIR
    if member.islnk():
        return _LINK
    if member.issym():
        return _SYMLINK
    if member.isreg():
        return _FILE
    return _OTHER


def _classify(name: str) -> tuple[int, str] | None:
    """(record type, path) of a normalised member name; None for aufs metadata."""
    parent, base = posixpath.split(name)
    if _AUFS_META in name:
        if base == OPAQUE and _AUFS_META not in parent:
            return _OPAQUE, parent
        if any(p.startswith(_AUFS_META) for p in name.split("/")):
            return None  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs, …): not content
    if base.startswith(WHITEOUT):
        hidden = base[len(WHITEOUT) :]
        return (_WHITEOUT, posixpath.join(parent, hidden)) if hidden else None
    return _ENTRY, name


_PLAIN_TYPES = frozenset(b"01234567\0")
_USTAR_MAGICS = (b"ustar\x0000", b"ustar  \x00")


class _FastInfo(tarfile.TarInfo):
    """`TarInfo` whose header parsing takes a short path for the plain ustar headers that make
    up almost every layer (a million of them is the case to be fast for); anything else (base-256
    numbers, a signed checksum, extension headers, old formats) goes to `tarfile` itself."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if (
            len(buf) != tarfile.BLOCKSIZE
            or buf[156] not in _PLAIN_TYPES
            or buf[257:265] not in _USTAR_MAGICS
            or any(buf[i] & 0x80 for i in (100, 108, 116, 124, 136, 148, 329, 337))
        ):
            return super().frombuf(buf, encoding, errors)
        try:
            chksum = int(buf[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
            numbers = [
                int(buf[a:b].split(b"\0", 1)[0].strip() or b"0", 8)
                for a, b in ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148))
            ]
            dev = [
                int(buf[a:b].split(b"\0", 1)[0].strip() or b"0", 8)
                for a, b in ((329, 337), (337, 345))
            ]
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        if chksum != 256 + sum(buf) - sum(buf[148:156]):
            return super().frombuf(buf, encoding, errors)
        obj = cls()
        obj.name = buf[0:100].split(b"\0", 1)[0].decode(encoding, errors)
        obj.mode, obj.uid, obj.gid, obj.size, obj.mtime = numbers
        obj.devmajor, obj.devminor = dev
        obj.chksum = chksum
        obj.type = bytes(buf[156:157])
        obj.linkname = buf[157:257].split(b"\0", 1)[0].decode(encoding, errors)
        obj.uname = buf[265:297].split(b"\0", 1)[0].decode(encoding, errors)
        obj.gname = buf[297:329].split(b"\0", 1)[0].decode(encoding, errors)
        if obj.type == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE
        if obj.type == tarfile.DIRTYPE:
            obj.name = obj.name.rstrip("/")
        prefix = buf[345:500].split(b"\0", 1)[0]
        if prefix and buf[257:265] == _USTAR_MAGICS[0]:
            obj.name = prefix.decode(encoding, errors) + "/" + obj.name
        elif prefix and buf[257:265] == _USTAR_MAGICS[1]:
            return super().frombuf(buf, encoding, errors)  # GNU keeps times there: its way
        return obj


def _open_tar(path: Path, mode: str = "r:") -> tarfile.TarFile:
    return tarfile.open(path, mode=mode, tarinfo=_FastInfo)  # type: ignore[call-overload, no-any-return]


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _TarWriter:
    """Writes members to a stream exactly as `tarfile` does in PAX format ("w|"), without its
    per-member bookkeeping (a copy and a list entry of every member), and in large writes."""

    def __init__(self, out: _HashingWriter) -> None:
        self._out = out
        self._buf = bytearray()
        self._offset = 0

    def add(self, info: tarfile.TarInfo, data: _Readable | None = None) -> None:
        buf = _plain_header(info) or info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._write(buf)
        if info.isreg() and info.size:
            if data is None:  # pragma: no cover - callers pass the data of every file
                raise RebuildError(f"no data for {info.name}")
            left = info.size
            while left:
                chunk = data.read(min(left, _CHUNK))
                if not chunk:
                    raise RebuildError(f"{info.name} is shorter in its layer than its header says")
                self._write(chunk)
                left -= len(chunk)
            if info.size % tarfile.BLOCKSIZE:
                self._write(tarfile.NUL * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        remainder = self._offset % tarfile.RECORDSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - remainder))
        self._flush()

    def _write(self, data: bytes) -> None:
        self._buf += data
        self._offset += len(data)
        if len(self._buf) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._out.write(bytes(self._buf))
        self._buf.clear()


_CHUNK = 1024 * 1024
_MAX_ID = 8**7  # uid, gid, device numbers in 7 octal digits
_MAX_LONG = 8**11  # size, mtime in 11


def _plain_header(info: tarfile.TarInfo) -> bytes | None:
    """The header `info.tobuf(PAX_FORMAT)` makes, made faster for a member that needs no PAX
    record (ASCII names that fit, numbers in range, an integer mtime, no xattrs); else None."""
    name = (
        info.name + "/"
        if info.type == tarfile.DIRTYPE and not info.name.endswith("/")
        else info.name
    )
    link, mtime = info.linkname, info.mtime
    if (
        info.pax_headers
        or info.uname
        or info.gname
        or not (name.isascii() and len(name) <= 100 and link.isascii() and len(link) <= 100)
        or not isinstance(mtime, int)
        or not (0 <= mtime < _MAX_LONG and 0 <= info.size < _MAX_LONG)
        or not (0 <= info.uid < _MAX_ID and 0 <= info.gid < _MAX_ID)
    ):
        return None
    if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        if not (0 <= info.devmajor < _MAX_ID and 0 <= info.devminor < _MAX_ID):
            return None
        devices = b"%07o\0%07o\0" % (info.devmajor, info.devminor)
    else:
        devices = tarfile.NUL * 16
    head = b"".join(
        (
            name.encode("ascii").ljust(100, tarfile.NUL),
            b"%07o\0%07o\0%07o\0%011o\0%011o\0"
            % (info.mode & 0o7777, info.uid, info.gid, info.size, mtime),
            b" " * 8,
            info.type,
            link.encode("ascii").ljust(100, tarfile.NUL),
            tarfile.POSIX_MAGIC,
            tarfile.NUL * 64,
            devices,
        )
    ).ljust(tarfile.BLOCKSIZE, tarfile.NUL)
    return head[:148] + b"%06o\0" % sum(head) + head[155:]


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Every member, without `TarFile` keeping them all (it appends each to `members`)."""
    while (member := tar.next()) is not None:
        _forget(tar)
        yield member


def _forget(tar: tarfile.TarFile) -> None:
    """Drop the members a `TarFile` remembers (it keeps each one it reads)."""
    tar.members.clear()  # type: ignore[attr-defined]


def _records(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, int, str]]:
    """(member, record type, path) of every member that is content or a marker."""
    for member in _members(tar):
        name = normalize(member.name)
        classified = _classify(name) if name else None
        if classified is not None:
            yield member, *classified


def tar_entries(path: Path) -> Iterator[TarEntry]:
    """The entries of a layer tar (plain or gzip) as `below` wants them."""
    with _open_tar(path, "r:*") as tar:
        for member, rtype, target in _records(tar):
            kind = "dir" if member.isdir() else "file"
            yield TarEntry(target, kind, rtype == _WHITEOUT, rtype == _OPAQUE)


def _key(path: str) -> bytes:
    """The sort key of a path: components in order, by bytes (NUL sorts before any name)."""
    return path.encode("utf-8", "surrogateescape").replace(b"/", b"\0")


def _path(key: bytes) -> str:
    return key.replace(b"\0", b"/").decode("utf-8", "surrogateescape")


# ---- decompression --------------------------------------------------------------------------


def decompress(blob: Path, dest: Path, diff_id: str | None = None) -> str:
    """Write the uncompressed tar of layer `blob` to `dest`; verify and return its diff_id."""
    with blob.open("rb") as f:
        magic = f.read(4)
    if magic[:2] == GZIP_MAGIC:
        magic = GZIP_MAGIC
    if magic.startswith(ZSTD_MAGIC):
        raise RebuildError(
            f"layer {blob.name} is zstd-compressed, which the squash cannot read yet; "
            "rebuild without the size fix, or push the image with gzip layers"
        )
    hasher = hashlib.sha256()
    with blob.open("rb") as raw, dest.open("wb") as out:
        src: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(fileobj=raw, mode="rb") if magic == GZIP_MAGIC else raw
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


# ---- the merge -------------------------------------------------------------------------------

# A row of the merge: key, layer, record type, header offset, kind, size, root, is-root.
# `root` is, for a hard link, the header offset of the inode's first member in the same layer
# (-1: the target is not in this layer); `is-root` marks a member some link points to.
Row = tuple[bytes, int, int, int, int, int, int, int]
_ROW_COLUMNS = "key, layer, rtype, hoff, kind, size, root, isroot"


class _Frame:
    """A path on the walk's stack: entries of layers below `floor` are hidden under it.

    The writer marks a frame `pending` when what it writes there depends on the subtree: a
    whiteout (`deferred` None) or a non-directory (`deferred`, its row) is written when the
    frame is left, unless a child shows first, which turns the path into a directory.
    """

    __slots__ = ("deferred", "floor", "hides", "key", "made", "own", "pending", "prefix")

    def __init__(self, key: bytes, own: int, floor: int, made: int) -> None:
        self.key = key
        self.prefix = key + b"\0"
        self.own = own  # the same for the path itself
        self.floor = floor
        self.made = made  # an entry below from this layer up makes the path a directory
        self.pending = False
        self.deferred: Row | None = None
        self.hides = False  # nothing above hides the base here: a marker may be needed


Visit = Callable[[bytes, _Frame, _Frame, Row | None, int, int, int], None]


class _Walk:
    """The overlay merge of rows sorted by key, one path at a time.

    For each path: `visit(key, parent, frame, picked, whiteout, opaque, top)` with the entry
    that shows (`picked`, or None), the highest layer with a whiteout of the path, with an
    opaque marker on it and with an entry there at all (-1: none; extracting that entry made
    the parent directories, which may exist even when the entry is hidden: `_implied`);
    `leave(frame)` once its subtree is done. Layer -1 is what lies below: `floor >= 0` means
    that something in the walked layers hides it.
    """

    def __init__(self) -> None:
        self.root = _Frame(b"", -1, -1, -1)
        self.stack = [self.root]

    def run(
        self,
        rows: Iterable[Row],
        visit: Visit,
        leave: Callable[[_Frame], None],
        visit_root: Callable[[int], None],
    ) -> None:
        stack = self.stack
        for key, group in itertools.groupby(rows, key=itemgetter(0)):
            entries: dict[int, Row] = {}  # by layer: the last one in its tar
            whiteout = opaque = -1
            for row in group:
                rtype, layer = row[2], row[1]
                if rtype == _ENTRY:
                    if layer not in entries or row[3] > entries[layer][3]:
                        entries[layer] = row
                elif rtype == _WHITEOUT:
                    whiteout = max(whiteout, layer)
                else:
                    opaque = max(opaque, layer)
            top = max(entries, default=-1)
            picked = entries[top] if entries else None
            if not key:  # markers at the root itself
                self.root.floor = max(self.root.floor, opaque)
                visit_root(opaque)
                continue
            while len(stack) > 1 and not key.startswith(stack[-1].prefix):
                leave(stack.pop())
            parent = stack[-1]
            own = max(parent.floor, whiteout)
            if picked is not None and picked[1] < own:
                picked = None
            floor = max(own, opaque)
            # Nothing below a non-directory shows, even under a directory on top of it.
            nondir = max((n for n, row in entries.items() if row[4] != _DIR), default=-1)
            if nondir >= max(own, 0):
                floor = max(floor, nondir + 1)
            made = picked[1] + 1 if picked is not None and picked[4] != _DIR else own
            frame = _Frame(key, own, floor, made)
            stack.append(frame)
            visit(key, parent, frame, picked, whiteout, opaque, top)
        while len(stack) > 1:
            leave(stack.pop())


def _implied(stack: list[_Frame], key: bytes, top: int) -> tuple[list[bytes], int]:
    """The ancestors of `key` (outermost first) that extracting an entry of layer `top` at
    `key` made and that nothing hides, with the level below which the deepest one's own path
    is hidden (`_Frame.own`). `stack` is the walk's: the root, the ancestors of `key` that
    have rows, then `key`'s own frame."""
    made: list[bytes] = []
    own = level = stack[0].floor
    frames = iter(stack[1:-1])
    frame = next(frames, None)
    parts = key.split(b"\0")
    for depth in range(1, len(parts)):
        prefix = b"\0".join(parts[:depth])
        if frame is not None and frame.key == prefix:
            if top < frame.made:
                break
            own, level = frame.own, frame.floor
            frame = next(frames, None)
        elif top < level:
            break
        else:
            own = level
        made.append(prefix)
    return made, own


class _Below:
    """What the base holds, for deciding markers: the paths it shows (`basevis`, with the
    directories its entries imply), or nothing known (`conn` None: assume everything)."""

    def __init__(self, conn: sqlite3.Connection | None) -> None:
        self._conn = conn

    def exists(self, key: bytes) -> bool:
        return self._one("SELECT 1 FROM basevis WHERE key = ?", (key,))

    def is_dir(self, key: bytes) -> bool:
        """Unknown is False: a directory written out again is better than one lost."""
        return self._conn is not None and self._one(
            "SELECT 1 FROM basevis WHERE key = ? AND isdir", (key,)
        )

    def has_children(self, key: bytes) -> bool:
        if not key:
            return self._one("SELECT 1 FROM basevis LIMIT 1", ())
        low, high = key + b"\0", key + b"\x01"
        return self._one("SELECT 1 FROM basevis WHERE key > ? AND key < ? LIMIT 1", (low, high))

    def _one(self, sql: str, args: tuple[bytes, ...]) -> bool:
        return self._conn is None or self._conn.execute(sql, args).fetchone() is not None


def _open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
    conn.executescript(
        """
        CREATE TABLE ent (key BLOB NOT NULL, layer INTEGER, rtype INTEGER, hoff INTEGER,
                          kind INTEGER, size INTEGER, root INTEGER DEFAULT -1,
                          isroot INTEGER DEFAULT 0, lkey BLOB);
        CREATE TABLE lnk (key BLOB, layer INTEGER, hoff INTEGER, lkey BLOB);
        CREATE TABLE base (key BLOB NOT NULL, layer INTEGER, rtype INTEGER, kind INTEGER);
        CREATE TABLE basevis (key BLOB PRIMARY KEY, isdir INTEGER) WITHOUT ROWID;
        CREATE TABLE visroot (layer INTEGER, hoff INTEGER, key BLOB,
                              PRIMARY KEY (layer, hoff)) WITHOUT ROWID;
        CREATE TABLE carrier (layer INTEGER, root INTEGER, key BLOB,
                              PRIMARY KEY (layer, root)) WITHOUT ROWID;
        CREATE TABLE links (seq INTEGER PRIMARY KEY, key BLOB, layer INTEGER, hoff INTEGER,
                            root INTEGER);
        """
    )
    return conn


def _scan(conn: sqlite3.Connection, layer: int, tar: tarfile.TarFile) -> None:
    """One row per member of a squashed layer; hard links noted for `_resolve_links`."""
    insert = "INSERT INTO ent (key, layer, rtype, hoff, kind, size, lkey) VALUES (?,?,?,?,?,?,?)"
    batch: list[tuple[bytes, int, int, int, int, int, bytes | None]] = []
    links: list[tuple[bytes, int, int, bytes]] = []
    conn.execute("BEGIN")
    for member, rtype, path in _records(tar):
        kind = _entry_kind(member)
        lkey = _key(normalize(member.linkname)) if kind == _LINK and rtype == _ENTRY else None
        key = _key(path)
        if lkey is not None:
            links.append((key, layer, member.offset, lkey))
        size = member.size if kind == _FILE else 0
        batch.append((key, layer, rtype, member.offset, kind, size, lkey))
        if len(batch) >= _BATCH:
            conn.executemany(insert, batch)
            batch.clear()
        if len(links) >= _BATCH:
            conn.executemany("INSERT INTO lnk VALUES (?,?,?,?)", links)
            links.clear()
    conn.executemany(insert, batch)
    conn.executemany("INSERT INTO lnk VALUES (?,?,?,?)", links)
    conn.execute("COMMIT")


def _resolve_links(conn: sqlite3.Connection) -> None:
    """Give each hard link the header offset of its inode's first member in its own layer
    (the member it names, or what that one links to), or -1 when that is not in the layer."""
    conn.execute("BEGIN")
    lookup = (
        "SELECT rowid, kind, hoff, root FROM ent WHERE key = ? AND layer = ? AND rtype = 0 "
        "AND hoff < ? ORDER BY hoff DESC LIMIT 1"
    )
    for key, layer, hoff, lkey in conn.execute(
        "SELECT key, layer, hoff, lkey FROM lnk ORDER BY layer, hoff"
    ):
        target = conn.execute(lookup, (lkey, layer, hoff)).fetchone()
        root = -1
        if target is not None:
            target_rid, kind, target_hoff, target_root = target
            if kind == _LINK:
                root = target_root  # resolved already: it comes earlier in the tar
            else:
                root = target_hoff
                conn.execute("UPDATE ent SET isroot = 1 WHERE rowid = ?", (target_rid,))
        conn.execute(
            "UPDATE ent SET root = ? WHERE key = ? AND layer = ? AND rtype = 0 AND hoff = ?",
            (root, key, layer, hoff),
        )
    conn.execute("COMMIT")


def _load_below(conn: sqlite3.Connection, below: Sequence[Iterable[BelowEntry]]) -> None:
    """The visible paths of the base's layers (merged like the squash does) into `basevis`."""
    conn.execute("BEGIN")
    for layer, entries in enumerate(below):
        batch: list[tuple[bytes, int, int, int]] = []
        for entry in entries:
            rtype = _OPAQUE if entry.opaque else _WHITEOUT if entry.whiteout else _ENTRY
            kind = _DIR if entry.kind == "dir" else _FILE
            batch.append((_key(normalize(entry.path)), layer, rtype, kind))
            if len(batch) >= _BATCH:
                conn.executemany("INSERT INTO base VALUES (?,?,?,?)", batch)
                batch.clear()
        conn.executemany("INSERT INTO base VALUES (?,?,?,?)", batch)
    conn.execute("CREATE INDEX base_key ON base (key, layer, rtype, kind)")
    walk = _Walk()
    seen = _BaseView(conn, walk.stack)
    rows = conn.execute("SELECT key, layer, rtype, 0, kind, 0, -1, 0 FROM base ORDER BY key")
    walk.run(rows, seen.visit, lambda _frame: None, lambda _opaque: None)
    seen.flush()
    conn.execute("COMMIT")


class _BaseView:
    """Collects what the base shows into `basevis`: each visible entry, and the directories
    that extracting an entry made, which stay when the entry is hidden later (`_implied`)."""

    def __init__(self, conn: sqlite3.Connection, stack: list[_Frame]) -> None:
        self.conn = conn
        self.stack = stack
        self.rows: list[tuple[bytes, int]] = []
        self.dirs: list[bytes] = []  # the implied directories last written, outermost first

    def visit(
        self, key: bytes, _p: _Frame, _f: _Frame, picked: Row | None, _w: int, _o: int, top: int
    ) -> None:
        if top >= 0:
            prefixes, _ = _implied(self.stack, key, top)
            common = 0
            while common < min(len(prefixes), len(self.dirs)) and (
                prefixes[common] == self.dirs[common]
            ):
                common += 1
            self.rows.extend((prefix, 1) for prefix in prefixes[common:])
            self.dirs = prefixes
        if picked is not None:
            self.rows.append((key, int(picked[4] == _DIR)))
        if len(self.rows) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        # A directory implied by a later child replaces a non-directory written before it.
        self.conn.executemany("INSERT OR REPLACE INTO basevis VALUES (?, ?)", self.rows)
        self.rows.clear()


# ---- squash ---------------------------------------------------------------------------------


def squash(
    layers: Sequence[Path],
    out: Path,
    *,
    cache_dirs: Sequence[str] = CACHE_DIRS,
    epoch: int = SOURCE_DATE_EPOCH,
    below: Sequence[Iterable[BelowEntry]] | None = None,
) -> SquashResult:
    """Merge uncompressed layer tars (bottom first) into one reproducible gzip layer at `out`.

    `below`: the entries of each layer under the squashed range (bottom first; `[]` when the
    range starts at the first layer), so that markers are written only where they hide
    something; None when unknown (markers are written wherever they might). `epoch` is the
    mtime of the entries the squash creates. Scratch files go next to `out` and are removed.
    """
    with tempfile.TemporaryDirectory(prefix=".squash-", dir=out.parent) as scratch:
        conn = _open_db(Path(scratch) / "entries.sqlite")
        tars: list[tarfile.TarFile] = []
        try:
            for index, path in enumerate(layers):
                tars.append(_open_tar(path))
                _scan(conn, index, tars[-1])
            conn.execute(f"CREATE INDEX ent_key ON ent ({_ROW_COLUMNS})")
            _resolve_links(conn)
            if below is not None:
                _load_below(conn, below)
            known = _Below(conn if below is not None else None)
            return _Squash(conn, tars, known, _matcher(tuple(cache_dirs)), epoch).write(out)
        finally:
            conn.close()
            for tar in tars:
                tar.close()


class _Squash:
    """The writing side of the merge: the walk's visible entries, markers and links to `out`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        tars: list[tarfile.TarFile],
        below: _Below,
        caches: _CacheMatcher,
        epoch: int,
    ) -> None:
        self.conn = conn
        self.tars = tars
        self.below = below
        self.caches = caches
        self.epoch = epoch
        self.walk = _Walk()
        self.pending = 0  # frames with a pending whiteout or deferred non-directory
        self.count = 0
        self.dropped: list[DroppedPath] = []
        self.dropped_count = 0
        self.dropped_bytes = 0
        self.dropped_kinds: dict[str, int] = {}
        self.markers: list[str] = []
        self.marker_count = 0
        self.link_seq = 0
        self.last = b""  # the key of the last entry written (or to write, for links)
        self._out: _TarWriter | None = None

    # -- output

    def write(self, out: Path) -> SquashResult:
        with out.open("wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL
            ) as gz:
                tee = _HashingWriter(gz)
                self._out = _TarWriter(tee)
                self.conn.execute("BEGIN")
                rows = self.conn.execute(f"SELECT {_ROW_COLUMNS} FROM ent ORDER BY key")
                self.walk.run(rows, self._visit, self._leave, self._visit_root)
                self._write_links()
                self.conn.execute("COMMIT")
                self._out.close()
                tee_digest = tee.digest()
        return SquashResult(
            WrittenLayer(out, compressed.digest(), tee_digest, compressed.size),
            self.count,
            dropped=[d.path for d in self.dropped],
            dropped_bytes=self.dropped_bytes,
            whiteouts=self.markers,
            dropped_paths=self.dropped,
            dropped_count=self.dropped_count,
            dropped_kinds=self.dropped_kinds,
            whiteout_count=self.marker_count,
        )

    def _add(self, info: tarfile.TarInfo, data: _Readable | None = None) -> None:
        assert self._out is not None
        self._out.add(info, data)
        self.count += 1

    def _add_member(self, layer: int, hoff: int, path: str, linkname: str | None = None) -> None:
        """The member at `hoff` of `layer`'s tar, as `path` (a hard link when `linkname`)."""
        source = self.tars[layer]
        member = _read_header(source, hoff)
        info = _normalized_info(member, path)
        if linkname is not None:
            info.type, info.linkname, info.size = tarfile.LNKTYPE, linkname, 0
            self._add(info)
        elif member.isreg() and not member.issparse():
            fileobj = source.fileobj
            assert fileobj is not None
            fileobj.seek(member.offset_data)
            self._add(info, fileobj)
        elif member.isreg():
            data = source.extractfile(member)
            if data is None:  # pragma: no cover - isreg() members always have data
                raise RebuildError(f"cannot read {path} from a layer")
            with data:
                self._add(info, data)
        else:
            self._add(info)

    def _add_dir(self, key: bytes, path: str) -> None:
        """A directory the squash makes explicit: as an extraction would make it."""
        self.last = key
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, self.epoch
        self._add(info)

    def _add_marker(self, hidden: str, name: str) -> None:
        self._add(_marker(name, self.epoch))
        self.marker_count += 1
        if len(self.markers) < LISTED:
            self.markers.append(hidden)

    def _add_whiteout(self, path: str) -> None:
        parent, base = posixpath.split(path)
        self._add_marker(path, posixpath.join(parent, WHITEOUT + base))

    def _add_opaque(self, directory: str) -> None:
        name = posixpath.join(directory, OPAQUE)
        self._add_marker(name, name)

    # -- the walk

    def _visit_root(self, opaque: int) -> None:
        if opaque >= 0 and self.below.has_children(b""):
            self._add_opaque("")

    def _visit(
        self,
        key: bytes,
        parent: _Frame,
        frame: _Frame,
        picked: Row | None,
        wh: int,
        opq: int,
        top: int,
    ) -> None:
        hides = parent.floor < 0  # no ancestor already hides the base here
        if top >= 0:
            self._flush(top)
            if picked is None:  # whited-out later, but extracting it made its directories
                self._keep_dirs(key, top)
        if picked is not None:
            if picked[4] != _DIR:
                self._defer(frame, hides, picked)  # a child above may make it a directory
                return
            path = _path(key)
            if self._drop(path, picked):
                return
            self._add_entry(key, path, picked)
            if hides and frame.floor >= 0 and self.below.has_children(key):
                self._add_opaque(path)
        elif opq >= 0 and hides and opq >= wh and self.below.has_children(key):
            # An opaque marker without its directory entry (real layers have one): it still
            # hides the base's children.
            path = _path(key)
            if self.caches.match(path) is None:
                self._add_opaque(path)
        elif wh >= 0 and hides:
            self._defer(frame, hides, None)  # `.wh.NAME`, unless a child re-creates NAME

    def _keep_dirs(self, key: bytes, top: int) -> None:
        """Write out the directories an entry of layer `top` at `key` made, unless something
        written, or the base where the range does not hide it, has them."""
        made, own = _implied(self.walk.stack, key, top)
        if not made:
            return
        deepest = made[-1]  # extracting it makes the others again
        if self.last == deepest or self.last.startswith(deepest + b"\0"):
            return  # the last entry written is in it (the order is by path): it exists
        path = _path(deepest)
        if (own < 0 and self.below.is_dir(deepest)) or self.caches.match(path) is not None:
            return
        self._add_dir(deepest, path)

    def _defer(self, frame: _Frame, hides: bool, row: Row | None) -> None:
        frame.pending, frame.hides, frame.deferred = True, hides, row
        self.pending += 1

    def _flush(self, top: int) -> None:
        """An entry of layer `top` below pending paths: those it made a directory again (as
        extracting it did) are written out as such, opaque over what the base has there."""
        if not self.pending:
            return
        for frame in self.walk.stack[1:]:
            if frame.pending and top >= frame.made:
                frame.pending = False
                self.pending -= 1
                path = _path(frame.key)
                if self.caches.match(path) is None:
                    self._add_dir(frame.key, path)
                    if frame.hides and self.below.has_children(frame.key):
                        self._add_opaque(path)

    def _leave(self, frame: _Frame) -> None:
        if not frame.pending:
            return
        frame.pending = False
        self.pending -= 1
        path = _path(frame.key)
        if frame.deferred is not None:
            if not self._drop(path, frame.deferred):
                self._add_entry(frame.key, path, frame.deferred)
        elif self.below.exists(frame.key):
            self._add_whiteout(path)

    def _add_entry(self, key: bytes, path: str, row: Row) -> None:
        """A visible entry; a hard link waits for the end (`_write_links`)."""
        _, layer, _, hoff, kind, _, root, isroot = row
        self.last = key
        if kind == _LINK:
            self.link_seq += 1
            self.conn.execute(
                "INSERT INTO links VALUES (?, ?, ?, ?, ?)", (self.link_seq, key, layer, hoff, root)
            )
            return
        self._add_member(layer, hoff, path)
        if isroot:
            self.conn.execute("INSERT INTO visroot VALUES (?, ?, ?)", (layer, hoff, key))

    def _drop(self, path: str, picked: Row) -> bool:
        match = self.caches.match(path)
        if match is None:
            return False
        size = picked[5] if picked[4] == _FILE else 0
        self.dropped_count += 1
        self.dropped_bytes += size
        name = match.kind.name
        self.dropped_kinds[name] = self.dropped_kinds.get(name, 0) + size
        if len(self.dropped) < LISTED:
            self.dropped.append(DroppedPath(path, size, name))
        return True

    # -- hard links, after everything else

    def _write_links(self) -> None:
        rows = self.conn.execute("SELECT key, layer, hoff, root FROM links ORDER BY seq")
        for key, layer, hoff, root in rows:
            path = _path(key)
            if root < 0:
                (lkey,) = self.conn.execute(
                    "SELECT lkey FROM ent WHERE key = ? AND layer = ? AND rtype = 0 AND hoff = ?",
                    (key, layer, hoff),
                ).fetchone()
                self._add_copy(layer, lkey, path)
                continue
            shown = (
                self.conn.execute(
                    "SELECT key FROM visroot WHERE layer = ? AND hoff = ?", (layer, root)
                ).fetchone()
                or self.conn.execute(
                    "SELECT key FROM carrier WHERE layer = ? AND root = ?", (layer, root)
                ).fetchone()
            )
            if shown is not None:
                self._add_member(layer, hoff, path, linkname=_path(shown[0]))
                continue
            # The inode's first path is gone (replaced above, hidden or dropped): this link,
            # first of the group in path order, carries it.
            self.conn.execute("INSERT INTO carrier VALUES (?, ?, ?)", (layer, root, key))
            self._add_member(layer, root, path)

    def _add_copy(self, layer: int, lkey: bytes, path: str) -> None:
        """A link to a path of a lower layer: a copy of that file, as the old code made."""
        target = lkey
        for _ in range(8):  # follow link chains a little, never forever
            row = self.conn.execute(
                "SELECT layer, hoff, kind, root, lkey FROM ent WHERE key = ? AND rtype = 0 "
                "AND layer < ? ORDER BY layer DESC, hoff DESC LIMIT 1",
                (target, layer),
            ).fetchone()
            if row is None:
                break
            layer, hoff, kind, root, next_key = row
            if kind == _LINK and root >= 0:
                self._add_member(layer, root, path)
                return
            if kind == _LINK:
                target = next_key  # its target is below its own layer, too
                continue
            if kind != _DIR:
                self._add_member(layer, hoff, path)
                return
            break
        raise RebuildError(f"hard link {path} points to {_path(lkey)}, which no layer has")


def _read_header(source: tarfile.TarFile, offset: int) -> tarfile.TarInfo:
    """The member whose (first) header block starts at `offset`, read again from the tar."""
    fileobj = source.fileobj
    assert fileobj is not None
    fileobj.seek(offset)
    return _FastInfo.fromtarfile(source)


def _normalized_info(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = member.type
    info.mode = member.mode
    info.uid = member.uid
    info.gid = member.gid
    info.size = member.size if member.isreg() else 0
    info.linkname = member.linkname
    info.devmajor = member.devmajor
    info.devminor = member.devminor
    info.mtime = member.mtime
    info.uname = ""
    info.gname = ""
    info.pax_headers = {
        k: v for k, v in member.pax_headers.items() if k.startswith(_KEPT_PAX_PREFIXES)
    }
    if info.type in (tarfile.AREGTYPE, tarfile.CONTTYPE) or member.issparse():
        info.type = tarfile.REGTYPE
    return info


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
