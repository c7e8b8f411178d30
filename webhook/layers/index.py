"""A daemonless index of one layer blob: every tar entry, read once, cached by layer digest.

`index_layer` streams a layer blob exactly once: it hashes the compressed bytes (checked against
the layer digest), decompresses (gzip, zstd when the `zstandard` package is installed, or none),
hashes the tar (the diff_id), and walks the tar with `tarfile` in stream mode (`r|`), so memory
does not grow with the layer's bytes. Entries are kept in memory up to a bound and spilled to a
SQLite file beyond it, so memory does not grow with the entry count either. The contents of a
few small files the analysis needs (`etc/passwd`, `etc/group`) are captured on the way.

`LayerIndexStore` keeps indexes under a directory (one SQLite file per layer digest), bounded on
disk (least recently used files evicted beyond a byte budget) and in memory (a small LRU), so a
base layer shared by a thousand images is read once. A cache file that is missing, truncated or
not ours is dropped and the layer read again: the cache is never a reason to fail.

Whiteouts follow the OCI layer spec (DESIGN §4): a `.wh.NAME` marker becomes an entry for the
hidden path with `whiteout=True`, a `.wh..wh..opq` marker an entry for its directory with
`opaque=True`; aufs metadata (`.wh..wh.plnk`, …) is not content and is left out.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import posixpath
import sqlite3
import tarfile
import tempfile
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, cast

from cachetools import LRUCache

from webhook.errors import DigestMismatch, InvalidImageData, UnsupportedMediaType
from webhook.layers.tarfmt import GZIP_MAGIC, OPAQUE, WHITEOUT, ZSTD_MAGIC, normalize
from webhook.singleflight import SingleFlight

if TYPE_CHECKING:
    from webhook.registry.blobs import BlobStore
    from webhook.registry.reference import Reference

__all__ = [
    "CAPTURED_FILES",
    "CAPTURE_LIMIT",
    "DEFAULT_MEMORY_ENTRIES",
    "EntryKind",
    "LayerEntry",
    "LayerIndex",
    "LayerIndexStore",
    "StoreStats",
    "fetch_layer_index",
    "index_layer",
]

log = logging.getLogger(__name__)

EntryKind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]
_KINDS: tuple[EntryKind, ...] = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo")
_KIND_CODE: dict[str, int] = {kind: code for code, kind in enumerate(_KINDS)}

CAPTURED_FILES: tuple[str, ...] = ("etc/passwd", "etc/group")
"""Files whose contents are kept in the index (the analysis resolves named users with them)."""

CAPTURE_LIMIT = 1024 * 1024
"""A captured file larger than this is not kept (no real passwd is a megabyte)."""

DEFAULT_MEMORY_ENTRIES = 50_000
"""Entries one index keeps in memory before spilling to disk (about 10 MB of Python objects)."""

_READ_CHUNK = 1024 * 1024
_TAR_BUFFER = 64 * 1024
"""tarfile's stream buffer: it copies what is left of it on every header read, so a larger one
slows layers of many small entries; a smaller one slows large files."""
_INSERT_BATCH = 4096
_FORMAT_VERSION = "1"
_AUFS_META = WHITEOUT + WHITEOUT  # `.wh..wh.plnk`, `.wh..wh.aufs`, … (and the opaque marker)
_FLAG_WHITEOUT = 1
_FLAG_OPAQUE = 2


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One tar entry of a layer.

    `path` is normalised (relative, no `./`, no trailing `/`; `""` only for an opaque marker at
    the root). `size` is the tar header's size (0 for everything but regular files in the
    layers engines write). A `.wh.NAME` marker is an entry for the hidden path with
    `whiteout=True`; a `.wh..wh..opq` marker is an entry for its directory with `opaque=True`
    (both keep the marker's own kind, size, mode and owner).
    """

    path: str
    kind: EntryKind
    size: int
    mode: int
    uid: int
    gid: int
    linkname: str = ""
    whiteout: bool = False
    opaque: bool = False

    @property
    def is_marker(self) -> bool:
        """A whiteout or opaque marker rather than content."""
        return self.whiteout or self.opaque


class _EntrySource(Protocol):
    spilled: bool

    def __iter__(self) -> Iterator[LayerEntry]: ...

    def memory_weight(self) -> int: ...


@dataclass(frozen=True)
class LayerIndex:
    """Every entry of one layer, keyed by its blob `digest`.

    `diff_id` is the sha256 of the uncompressed tar, `compressed_size` the blob's bytes,
    `uncompressed_size` the tar's bytes, `content_size` the sum of the entries' sizes (what Dive
    calls a layer's size), `files` the captured contents (`CAPTURED_FILES`) by path. Entries are
    read back in tar order with `entries()`, from memory or from a SQLite file (`spilled`).
    """

    digest: str
    diff_id: str
    media_type: str
    compressed_size: int
    uncompressed_size: int
    content_size: int
    entry_count: int
    files: Mapping[str, bytes] = field(repr=False)
    _source: _EntrySource = field(repr=False, compare=False)

    def entries(self) -> Iterator[LayerEntry]:
        """The entries in tar order (a later duplicate of a path wins, as on extraction)."""
        return iter(self._source)

    @property
    def spilled(self) -> bool:
        """True when the entries are read from disk rather than held in memory."""
        return self._source.spilled


# ---- entry storage: memory, then SQLite -----------------------------------------------------
#
# Why SQLite: it is in the standard library, writes one self-contained file, reads rows back in
# insertion order with constant memory, and detects a file that is not a database. A hand-made
# sorted file would need its own format, framing and corruption checks for the same result.


class _MemoryRows:
    spilled = False

    def __init__(self, rows: Sequence[LayerEntry]) -> None:
        self._rows = tuple(rows)

    def __iter__(self) -> Iterator[LayerEntry]:
        return iter(self._rows)

    def memory_weight(self) -> int:
        return len(self._rows) + 1


class _SqliteRows:
    """Entries in the `entries` table of an open SQLite connection, read in batches.

    The connection stays open for as long as the index lives, so a cache file evicted (or a
    spill file unlinked) under a reader keeps working: the data goes when the last reader does.
    """

    spilled = True

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, conn.close)

    def __iter__(self) -> Iterator[LayerEntry]:
        try:
            with self._lock:
                cursor = self._conn.execute(
                    "SELECT path, kind, size, mode, uid, gid, linkname, flags "
                    "FROM entries ORDER BY rowid"
                )
            while True:
                with self._lock:
                    rows = cursor.fetchmany(_INSERT_BATCH)
                if not rows:
                    return
                for row in rows:
                    yield _row_entry(row)
        except sqlite3.Error as exc:
            raise InvalidImageData(f"the layer index on disk cannot be read: {exc}") from None

    def memory_weight(self) -> int:
        return 1

    def backup_to(self, target: sqlite3.Connection) -> None:
        with self._lock:
            self._conn.backup(target)

    def close(self) -> None:
        self._finalizer()


def _encode(text: str) -> bytes:
    # tarfile decodes undecodable names with surrogateescape; SQLite text must be valid UTF-8.
    return text.encode("utf-8", "surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _entry_row(entry: LayerEntry) -> tuple[bytes, int, int, int, int, int, bytes, int]:
    flags = (_FLAG_WHITEOUT if entry.whiteout else 0) | (_FLAG_OPAQUE if entry.opaque else 0)
    return (
        _encode(entry.path),
        _KIND_CODE[entry.kind],
        entry.size,
        entry.mode,
        entry.uid,
        entry.gid,
        _encode(entry.linkname),
        flags,
    )


def _row_entry(row: Sequence[Any]) -> LayerEntry:
    path, kind, size, mode, uid, gid, linkname, flags = row
    return LayerEntry(
        _decode(path),
        _KINDS[kind],
        size,
        mode,
        uid,
        gid,
        _decode(linkname),
        bool(flags & _FLAG_WHITEOUT),
        bool(flags & _FLAG_OPAQUE),
    )


_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE files (path BLOB PRIMARY KEY, content BLOB NOT NULL)",
    "CREATE TABLE entries (path BLOB NOT NULL, kind INTEGER NOT NULL, size INTEGER NOT NULL, "
    "mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, "
    "linkname BLOB NOT NULL, flags INTEGER NOT NULL)",
)


def _create_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    # A file being written is private and renamed (or unlinked) when done: no journal needed.
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


_INSERT = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


class _EntryBuffer:
    """Collects a layer's entries: in memory up to `limit`, then in a SQLite spill file.

    The spill file is unlinked as soon as it is created (its open connection keeps it), so it
    disappears with the index, or with the process if it dies.
    """

    def __init__(self, limit: int, spill_dir: Path | None) -> None:
        self._limit = limit
        self._spill_dir = spill_dir
        self._rows: list[LayerEntry] = []
        self._pending: list[tuple[bytes, int, int, int, int, int, bytes, int]] = []
        self._db: sqlite3.Connection | None = None
        self.count = 0

    def add(self, entry: LayerEntry) -> None:
        self.count += 1
        if self._db is None:
            self._rows.append(entry)
            if len(self._rows) > self._limit:
                self._spill()
            return
        self._pending.append(_entry_row(entry))
        if len(self._pending) >= _INSERT_BATCH:
            self._flush()

    def _spill(self) -> None:
        directory = self._spill_dir or Path(tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="layer-index-", suffix=".sqlite", dir=directory)
        os.close(fd)
        path = Path(name)
        try:
            self._db = _create_db(path)
        finally:
            path.unlink(missing_ok=True)
        self._pending = [_entry_row(e) for e in self._rows]
        self._rows = []
        self._flush()

    def _flush(self) -> None:
        assert self._db is not None
        self._db.executemany(_INSERT, self._pending)
        self._pending = []

    def finish(self) -> _EntrySource:
        if self._db is None:
            return _MemoryRows(self._rows)
        self._flush()
        self._db.execute("COMMIT")
        db, self._db = self._db, None
        return _SqliteRows(db)

    def abort(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._rows = []
        self._pending = []


# ---- streaming ------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _HashingReader:
    """A read-only file object over `inner` that hashes and counts what it hands out, and
    refuses to hand out more than `limit` bytes."""

    def __init__(self, inner: Any, algorithm: str, limit: int) -> None:
        self._inner = inner
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._limit = limit
        self._head = b""
        self.size = 0

    def peek_head(self, n: int) -> bytes:
        """The first `n` bytes, kept to be handed out again by `read`."""
        while len(self._head) < n:
            chunk = self._inner.read(n - len(self._head))
            if not chunk:
                break
            self._head += chunk
        return self._head[:n]

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._inner.read(), b""
            else:
                data, self._head = self._head[:n], self._head[n:]
        else:
            data = self._inner.read(n)
        if data:
            self.size += len(data)
            if self.size > self._limit:
                raise _TooLarge
            self._hash.update(data)
        return data  # type: ignore[no-any-return]

    def seek(self, offset: int, whence: int = 0) -> int:
        raise OSError("a layer stream is read once, front to back")

    def drain(self) -> None:
        while self.read(_READ_CHUNK):
            pass

    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"


def _decompressor(raw: _HashingReader, digest: str) -> Any:
    magic = raw.peek_head(4)
    if magic[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic == ZSTD_MAGIC:
        import zstandard  # a dependency; imported here, as only zstd layers need it

        reader = cast(IO[bytes], raw)  # it reads like a file, which is all zstandard needs
        return zstandard.ZstdDecompressor().stream_reader(reader, read_across_frames=True)
    return raw


def _kind(member: tarfile.TarInfo) -> EntryKind:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr():
        return "char"
    if member.isblk():
        return "block"
    if member.isfifo():
        return "fifo"
    return "file"  # regular, contiguous, sparse, and types tarfile does not know


def _entry(member: tarfile.TarInfo, name: str) -> LayerEntry | None:
    """The index entry for a tar member with normalised name `name` (None: not content)."""
    if _AUFS_META in name and any(p.startswith(_AUFS_META) for p in name.split("/")):
        parent, base = posixpath.split(name)
        if base == OPAQUE and _AUFS_META not in parent:
            return LayerEntry(
                parent, _kind(member), member.size, member.mode, member.uid, member.gid,
                opaque=True,
            )  # fmt: skip
        return None  # aufs metadata (hard link store, …), not content
    parent, base = posixpath.split(name)
    if base.startswith(WHITEOUT):
        hidden = base[len(WHITEOUT) :]
        if not hidden:
            return None
        return LayerEntry(
            posixpath.join(parent, hidden), _kind(member), member.size, member.mode,
            member.uid, member.gid, whiteout=True,
        )  # fmt: skip
    linkname = normalize(member.linkname) if member.islnk() else member.linkname
    return LayerEntry(
        name, _kind(member), member.size, member.mode, member.uid, member.gid, linkname
    )


def index_layer(
    stream: BinaryIO,
    *,
    digest: str,
    media_type: str,
    max_bytes: int,
    diff_id: str | None = None,
    memory_entries: int = DEFAULT_MEMORY_ENTRIES,
    spill_dir: Path | None = None,
    capture: Collection[str] = CAPTURED_FILES,
    capture_limit: int = CAPTURE_LIMIT,
) -> LayerIndex:
    """Read layer blob `stream` once and index it.

    Verifies the blob against `digest` (and the tar against `diff_id` when given). Refuses a
    blob, or the tar it decompresses to, larger than `max_bytes`. Beyond `memory_entries`
    entries the index spills to a SQLite file in `spill_dir` (default: the temp dir).

    Raises `DigestMismatch` (wrong bytes), `InvalidImageData` (too large, not gzip/zstd/tar,
    truncated) or `UnsupportedMediaType` (zstd without the `zstandard` package), each naming
    the layer digest.
    """
    algorithm = digest.split(":", 1)[0]
    if algorithm not in ("sha256", "sha512"):
        raise UnsupportedMediaType(f"layer {digest}: cannot verify digest algorithm {algorithm}")
    raw = _HashingReader(stream, algorithm, max_bytes)
    buffer = _EntryBuffer(memory_entries, spill_dir)
    wanted = {normalize(p) for p in capture}
    files: dict[str, bytes] = {}
    content_size = 0
    tar_bytes: _HashingReader | None = None
    try:
        try:
            tar_bytes = _HashingReader(_decompressor(raw, digest), "sha256", max_bytes)
            with tarfile.open(fileobj=tar_bytes, mode="r|", bufsize=_TAR_BUFFER) as tar:  # type: ignore[call-overload]
                while (member := tar.next()) is not None:
                    tar.members.clear()  # stream mode keeps every member otherwise
                    content_size += member.size
                    name = normalize(member.name)
                    if not name:
                        continue
                    entry = _entry(member, name)
                    if entry is None:
                        continue
                    buffer.add(entry)
                    if name in wanted and not entry.is_marker:
                        files.pop(name, None)  # a later duplicate wins
                        if member.isreg() and member.size <= capture_limit:
                            data = tar.extractfile(member)
                            if data is not None:
                                files[name] = data.read()
            tar_bytes.drain()  # the tar's trailing blocks belong to the diff_id
            raw.drain()
        except _TooLarge:
            which = "blob" if raw.size > max_bytes else "uncompressed tar"
            raise InvalidImageData(
                f"layer {digest} is larger than the {max_bytes}-byte limit ({which}); "
                "raise the layer size limit to analyse it"
            ) from None
        except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
            _check_blob_digest(raw, digest)  # bytes that are not the layer: say so first
            raise InvalidImageData(
                f"layer {digest} ({media_type or 'unknown media type'}) is not a readable "
                f"tar, gzip or zstd stream: {type(exc).__name__}: {exc}"
            ) from None
        except Exception as exc:
            if not type(exc).__module__.startswith("zstandard"):
                raise
            _check_blob_digest(raw, digest)
            raise InvalidImageData(f"layer {digest} is not a valid zstd stream: {exc}") from None
        _check_blob_digest(raw, digest)
        got_diff_id = tar_bytes.digest()
        if diff_id is not None and got_diff_id != diff_id:
            raise DigestMismatch(
                f"layer {digest} decompresses to {got_diff_id}, but the image config says {diff_id}"
            )
        source = buffer.finish()
    except BaseException:
        buffer.abort()
        raise
    return LayerIndex(
        digest=digest,
        diff_id=got_diff_id,
        media_type=media_type,
        compressed_size=raw.size,
        uncompressed_size=tar_bytes.size,
        content_size=content_size,
        entry_count=buffer.count,
        files=files,
        _source=source,
    )


def _check_blob_digest(raw: _HashingReader, digest: str) -> None:
    """Raise DigestMismatch unless the blob (read to its end) hashes to `digest`."""
    try:
        raw.drain()
    except (_TooLarge, OSError):
        return  # what was read cannot be checked; the caller's error stands
    got = raw.digest()
    if got != digest:
        raise DigestMismatch(f"layer blob {digest} hashes to {got}: the registry sent other bytes")


# ---- cache files ----------------------------------------------------------------------------


class _CorruptCacheFile(Exception):
    pass


def _write_index_file(index: LayerIndex, path: Path) -> None:
    """Write `index` to the SQLite file `path` atomically (a temp file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        source = index._source
        if isinstance(source, _SqliteRows):
            conn = sqlite3.connect(tmp, check_same_thread=False, isolation_level=None)
            source.backup_to(conn)
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("BEGIN")
        else:
            conn = _create_db(tmp)
            batch: list[tuple[bytes, int, int, int, int, int, bytes, int]] = []
            for entry in source:
                batch.append(_entry_row(entry))
                if len(batch) >= _INSERT_BATCH:
                    conn.executemany(_INSERT, batch)
                    batch = []
            conn.executemany(_INSERT, batch)
        try:
            meta = {
                "format": _FORMAT_VERSION,
                "digest": index.digest,
                "diff_id": index.diff_id,
                "media_type": index.media_type,
                "compressed_size": str(index.compressed_size),
                "uncompressed_size": str(index.uncompressed_size),
                "content_size": str(index.content_size),
                "entry_count": str(index.entry_count),
            }
            conn.execute("DELETE FROM meta")
            conn.execute("DELETE FROM files")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.executemany(
                "INSERT INTO files VALUES (?, ?)", [(_encode(p), c) for p, c in index.files.items()]
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_index_file(path: Path, digest: str, memory_entries: int) -> LayerIndex:
    """Open a cache file; FileNotFoundError when absent, _CorruptCacheFile when unusable."""
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise _CorruptCacheFile(str(exc)) from None
    keep_open = False
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != _FORMAT_VERSION or meta.get("digest") != digest:
            raise _CorruptCacheFile(f"format {meta.get('format')}, digest {meta.get('digest')}")
        count = int(meta["entry_count"])
        (stored,) = conn.execute("SELECT COUNT(*) FROM entries").fetchone()
        if stored != count:
            raise _CorruptCacheFile(f"{stored} entries stored, {count} expected")
        files = {_decode(p): bytes(c) for p, c in conn.execute("SELECT path, content FROM files")}
        source: _EntrySource
        if count <= memory_entries:
            source = _MemoryRows([_row_entry(r) for r in _rows(conn)])
        else:
            source = _SqliteRows(conn)
            keep_open = True
        return LayerIndex(
            digest=digest,
            diff_id=meta["diff_id"],
            media_type=meta["media_type"],
            compressed_size=int(meta["compressed_size"]),
            uncompressed_size=int(meta["uncompressed_size"]),
            content_size=int(meta["content_size"]),
            entry_count=count,
            files=files,
            _source=source,
        )
    except (sqlite3.Error, KeyError, ValueError, IndexError, TypeError) as exc:
        raise _CorruptCacheFile(f"{type(exc).__name__}: {exc}") from None
    finally:
        if not keep_open:
            conn.close()


def _rows(conn: sqlite3.Connection) -> Iterator[Sequence[Any]]:
    yield from conn.execute(
        "SELECT path, kind, size, mode, uid, gid, linkname, flags FROM entries ORDER BY rowid"
    )


# ---- the store ------------------------------------------------------------------------------


@dataclass
class StoreStats:
    """What a `LayerIndexStore` did: cache hits in memory and on disk, layers read, files
    dropped as corrupt, files evicted for the disk budget."""

    memory_hits: int = 0
    disk_hits: int = 0
    indexed: int = 0
    corrupt: int = 0
    evicted: int = 0


class LayerIndexStore:
    """Layer indexes cached by layer digest under `root` (e.g. `<state dir>/layers`).

    On disk: one SQLite file per digest, at most `max_disk_bytes` in all (least recently used
    files evicted first; a read refreshes a file's mtime). In memory: an LRU of indexes
    weighted by the entries they hold in memory, at most `memory_budget` entries. Indexes
    larger than `memory_entries` stay on disk and are read from there. Thread-safe; the same
    digest is read at most once at a time (`get_or_index`), and at most once per async flight
    (`fetch_layer_index`).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_disk_bytes: int = 2 * 1024**3,
        memory_budget: int = 200_000,
        memory_entries: int = DEFAULT_MEMORY_ENTRIES,
    ) -> None:
        self.root = root
        self.max_disk_bytes = max_disk_bytes
        self.memory_entries = memory_entries
        self.stats = StoreStats()
        self.flights: SingleFlight[str] = SingleFlight()
        self._memory: LRUCache[str, LayerIndex] = LRUCache(
            maxsize=memory_budget, getsizeof=lambda index: index._source.memory_weight()
        )
        self._lock = threading.Lock()
        self._digest_locks: dict[str, tuple[threading.Lock, int]] = {}
        self.scratch = root / "tmp"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._sweep_scratch()

    def path(self, digest: str) -> Path:
        """The cache file of `digest`."""
        algorithm, _, hexdigest = digest.partition(":")
        if not hexdigest or not hexdigest.isalnum() or not algorithm.isalnum():
            raise InvalidImageData(f"not a layer digest: {digest!r}")
        return self.root / f"{algorithm}-{hexdigest}.sqlite"

    def get(self, digest: str) -> LayerIndex | None:
        """The cached index of `digest`, or None; a corrupt cache file is dropped."""
        path = self.path(digest)
        with self._lock:
            found = self._memory.get(digest)
            if found is not None:
                self.stats.memory_hits += 1
        if found is not None:
            _touch(path)  # recently used on disk too, so the disk LRU does not evict it first
            return found
        try:
            index = _read_index_file(path, digest, self.memory_entries)
        except FileNotFoundError:
            return None
        except _CorruptCacheFile as exc:
            log.warning("dropping unusable layer index %s: %s", path, exc)
            path.unlink(missing_ok=True)
            with self._lock:
                self.stats.corrupt += 1
            return None
        _touch(path)
        with self._lock:
            self.stats.disk_hits += 1
            self._remember(index)
        return index

    def put(self, index: LayerIndex) -> LayerIndex:
        """Persist `index`, evict beyond the disk budget, and return the index to use (read
        from the cache file when it spilled, so no spill file outlives this call)."""
        path = self.path(index.digest)
        _write_index_file(index, path)
        if index.spilled:
            with suppress(FileNotFoundError, _CorruptCacheFile):  # just written: always there
                index = _read_index_file(path, index.digest, self.memory_entries)
        with self._lock:
            self.stats.indexed += 1
            self._remember(index)
        self._evict(keep=path)
        return index

    def get_or_index(
        self,
        digest: str,
        open_blob: Callable[[], AbstractContextManager[BinaryIO]],
        *,
        media_type: str,
        max_bytes: int,
        diff_id: str | None = None,
    ) -> LayerIndex:
        """The index of `digest`, cached or read from the blob `open_blob()` opens (called
        only on a miss; concurrent callers for one digest wait for a single read)."""
        found = self.get(digest)
        if found is not None:
            return found
        with self._digest_lock(digest):
            found = self.get(digest)
            if found is not None:
                return found
            with open_blob() as stream:
                index = index_layer(
                    stream,
                    digest=digest,
                    media_type=media_type,
                    max_bytes=max_bytes,
                    diff_id=diff_id,
                    memory_entries=self.memory_entries,
                    spill_dir=self.scratch,
                )
            stored = self.put(index)
            if stored is not index and isinstance(index._source, _SqliteRows):
                index._source.close()  # frees the unlinked spill file now, not when collected
            return stored

    def disk_bytes(self) -> int:
        """Bytes the cache files take now."""
        return sum(size for _, size, _ in self._files())

    def clear_memory(self) -> None:
        """Forget the in-memory indexes (the files stay)."""
        with self._lock:
            self._memory.clear()

    # ---- internals ---------------------------------------------------------------------------

    def _remember(self, index: LayerIndex) -> None:
        try:
            self._memory[index.digest] = index
        except ValueError:  # heavier than the whole budget: serve it without caching
            self._memory.pop(index.digest, None)

    def _files(self) -> list[tuple[Path, int, float]]:
        found: list[tuple[Path, int, float]] = []
        for path in self.root.glob("*.sqlite"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append((path, st.st_size, st.st_mtime))
        return found

    def _evict(self, keep: Path) -> None:
        files = self._files()
        total = sum(size for _, size, _ in files)
        for path, size, _ in sorted(files, key=lambda f: f[2]):
            if total <= self.max_disk_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            digest = path.stem.replace("-", ":", 1)
            with self._lock:
                self._memory.pop(digest, None)
                self.stats.evicted += 1

    def _sweep_scratch(self) -> None:
        """Remove scratch and temp files an earlier, killed process left behind."""
        cutoff = time.time() - 3600
        for path in [*self.scratch.iterdir(), *self.root.glob(".*.tmp")]:
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue

    def _digest_lock(self, digest: str) -> _DigestLock:
        return _DigestLock(self, digest)


class _DigestLock:
    """A per-digest lock, dropped from the store's table when its last user leaves."""

    def __init__(self, store: LayerIndexStore, digest: str) -> None:
        self._store = store
        self._digest = digest

    def __enter__(self) -> None:
        store = self._store
        with store._lock:
            lock, users = store._digest_locks.get(self._digest, (threading.Lock(), 0))
            store._digest_locks[self._digest] = (lock, users + 1)
        lock.acquire()

    def __exit__(self, *exc: object) -> None:
        store = self._store
        with store._lock:
            lock, users = store._digest_locks[self._digest]
            if users > 1:
                store._digest_locks[self._digest] = (lock, users - 1)
            else:
                del store._digest_locks[self._digest]
        lock.release()


def _touch(path: Path) -> None:
    with suppress(OSError):  # evicted meanwhile: nothing to refresh
        os.utime(path)


async def fetch_layer_index(
    store: LayerIndexStore,
    blobs: BlobStore,
    repo: Reference,
    *,
    digest: str,
    media_type: str,
    max_bytes: int,
    size: int | None = None,
    diff_id: str | None = None,
) -> LayerIndex:
    """The index of layer `digest` of `repo`: from `store`, else downloaded once through
    `blobs` (concurrent callers share one download) into the store's scratch directory,
    indexed off the event loop, and cached. `size` (the manifest's) refuses an oversized
    layer before any byte moves."""
    found = await asyncio.to_thread(store.get, digest)
    if found is not None:
        return found
    if size is not None and size > max_bytes:
        raise InvalidImageData(
            f"layer {digest} is {size} bytes, over the {max_bytes}-byte limit; raise the layer "
            "size limit to analyse it",
            reference=str(repo),
        )

    async def download_and_index() -> LayerIndex:
        scratch = store.scratch / f"{uuid.uuid4().hex}.blob"
        try:
            await blobs.download(repo, digest, scratch)
            return await asyncio.to_thread(
                store.get_or_index,
                digest,
                lambda: scratch.open("rb"),
                media_type=media_type,
                max_bytes=max_bytes,
                diff_id=diff_id,
            )
        finally:
            await asyncio.to_thread(scratch.unlink, missing_ok=True)

    return await store.flights.do(digest, download_and_index)
