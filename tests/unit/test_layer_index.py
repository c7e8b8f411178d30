"""The layer index: one streamed read of a real layer blob (tar files made here with `tarfile`),
verified, size-bounded, spilling to disk beyond an entry bound, and cached by layer digest.

The tar builders at the top are shared with `test_layer_analysis.py`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from webhook.errors import DigestMismatch, InvalidImageData, UnsupportedMediaType
from webhook.layers.index import (
    LayerEntry,
    LayerIndex,
    LayerIndexStore,
    index_layer,
)

# ---- tar fixtures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A tar member to write: `info` and, for a regular file, its `data`."""

    info: tarfile.TarInfo
    data: bytes = b""


def _info(name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.mtime = 1_700_000_000
    return info


def d(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Member:
    """A directory."""
    return Member(_info(name, tarfile.DIRTYPE, mode, uid, gid))


def f(name: str, data: bytes | int = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Member:
    """A regular file; an int `data` is that many bytes."""
    content = b"x" * data if isinstance(data, int) else data
    info = _info(name, tarfile.REGTYPE, mode, uid, gid)
    info.size = len(content)
    return Member(info, content)


def hl(name: str, target: str) -> Member:
    """A hard link to `target`."""
    info = _info(name, tarfile.LNKTYPE, 0o644, 0, 0)
    info.linkname = target
    return Member(info)


def sl(name: str, target: str) -> Member:
    """A symbolic link to `target`."""
    info = _info(name, tarfile.SYMTYPE, 0o777, 0, 0)
    info.linkname = target
    return Member(info)


def wh(path: str) -> Member:
    """A whiteout hiding `path` of the layers below (`.wh.NAME`)."""
    parent, _, name = path.rpartition("/")
    return f(f"{parent}/.wh.{name}" if parent else f".wh.{name}")


def opq(directory: str) -> Member:
    """An opaque marker hiding every lower child of `directory`."""
    return f(f"{directory}/.wh..wh..opq")


def tar_bytes(members: Sequence[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member.info, io.BytesIO(member.data) if member.data else None)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gzip_blob(members: Sequence[Member]) -> bytes:
    return gzip.compress(tar_bytes(members), mtime=0)


GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def layer(*members: Member, **kwargs: object) -> LayerIndex:
    """The index of a gzip layer made of `members`."""
    blob = gzip_blob(members)
    return index_layer(
        io.BytesIO(blob),
        digest=sha256(blob),
        media_type=GZIP_LAYER,
        max_bytes=1 << 30,
        **kwargs,  # type: ignore[arg-type]
    )


def listing(index: LayerIndex) -> list[tuple[str, str, int, bool, bool]]:
    return [(e.path, e.kind, e.size, e.whiteout, e.opaque) for e in index.entries()]


class ReadOnce(io.RawIOBase):
    """A forward-only stream that counts what it hands out and refuses to seek."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.handed_out = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self.handed_out += len(chunk)
        return chunk

    def seekable(self) -> bool:
        return False


# ---- what an index records ------------------------------------------------------------------


def test_a_gzip_layer_is_indexed_entry_by_entry_in_tar_order() -> None:
    members = [
        d("./etc/"),
        f("./etc/hostname", b"box\n", mode=0o600, uid=10, gid=20),
        hl("etc/hostname.bak", "./etc/hostname"),
        sl("bin/sh", "/bin/busybox"),
        d("var/lib/apt/lists"),
        wh("usr/share/doc"),
        opq("opt"),
        f(".wh..wh.plnk/123.456", b"aufs"),  # aufs metadata: not content
    ]
    blob = gzip_blob(members)
    stream = ReadOnce(blob)

    index = index_layer(
        stream,  # type: ignore[arg-type]
        digest=sha256(blob),
        media_type=GZIP_LAYER,
        max_bytes=1 << 20,
    )

    assert stream.handed_out == len(blob)
    assert listing(index) == [
        ("etc", "dir", 0, False, False),
        ("etc/hostname", "file", 4, False, False),
        ("etc/hostname.bak", "hardlink", 0, False, False),
        ("bin/sh", "symlink", 0, False, False),
        ("var/lib/apt/lists", "dir", 0, False, False),
        ("usr/share/doc", "file", 0, True, False),
        ("opt", "file", 0, False, True),
    ]
    hostname, backup, shell = list(index.entries())[1:4]
    assert (hostname.mode, hostname.uid, hostname.gid) == (0o600, 10, 20)
    assert backup.linkname == "etc/hostname"
    assert shell.linkname == "/bin/busybox"
    assert index.digest == sha256(blob)
    assert index.diff_id == sha256(tar_bytes(members))
    assert index.compressed_size == len(blob)
    assert index.uncompressed_size == len(tar_bytes(members))
    assert index.content_size == 4 + 4  # every header size, the aufs file's too (as Dive sums)
    assert index.entry_count == 7
    assert not index.spilled


def test_an_uncompressed_layer_has_its_digest_as_diff_id() -> None:
    tar = tar_bytes([f("hello", b"hi")])

    index = index_layer(
        io.BytesIO(tar), digest=sha256(tar), media_type=TAR_LAYER, max_bytes=1 << 20
    )

    assert index.diff_id == index.digest == sha256(tar)
    assert listing(index) == [("hello", "file", 2, False, False)]


def test_the_contents_of_passwd_and_group_are_captured_and_a_later_duplicate_wins() -> None:
    index = layer(
        f("etc/passwd", b"old:x:1:1::/:/bin/sh\n"),
        f("etc/group", b"root:x:0:\n"),
        f("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        f("etc/shadow", b"secret"),
    )

    assert dict(index.files) == {
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
        "etc/group": b"root:x:0:\n",
    }


def test_a_captured_file_over_the_limit_is_left_out() -> None:
    index = layer(f("etc/passwd", 2000), capture_limit=1000)

    assert "etc/passwd" not in index.files
    assert listing(index) == [("etc/passwd", "file", 2000, False, False)]


# ---- refusals ---------------------------------------------------------------------------------


def test_a_blob_that_does_not_hash_to_its_digest_is_refused_naming_the_layer() -> None:
    blob = gzip_blob([f("a", b"1")])
    claimed = sha256(b"something else")

    with pytest.raises(DigestMismatch, match=claimed):
        index_layer(io.BytesIO(blob), digest=claimed, media_type=GZIP_LAYER, max_bytes=1 << 20)


def test_a_tar_that_does_not_hash_to_the_config_diff_id_is_refused() -> None:
    blob = gzip_blob([f("a", b"1")])

    with pytest.raises(DigestMismatch, match=r"image config says sha256:0+"):
        index_layer(
            io.BytesIO(blob),
            digest=sha256(blob),
            media_type=GZIP_LAYER,
            max_bytes=1 << 20,
            diff_id="sha256:" + "0" * 64,
        )


@pytest.mark.parametrize(
    ("members", "max_bytes", "which"),
    [
        pytest.param([f("random", random.Random(1).randbytes(16384))], 4096, "blob", id="blob"),
        pytest.param([f("zeros", 200_000)], 100_000, "uncompressed tar", id="gzip-bomb"),
    ],
)
def test_a_layer_over_the_size_limit_is_refused_naming_the_layer(
    members: list[Member], max_bytes: int, which: str
) -> None:
    blob = gzip_blob(members)
    digest = sha256(blob)
    assert len(blob) < max_bytes or which == "blob"

    with pytest.raises(InvalidImageData, match=rf"layer {digest} is larger .*\({which}\)"):
        index_layer(io.BytesIO(blob), digest=digest, media_type=GZIP_LAYER, max_bytes=max_bytes)


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(gzip_blob([f("a", 5000)])[:-20], id="truncated-gzip"),
        pytest.param(gzip_blob([f("a", 5000)])[:30] + b"\xff" * 40, id="corrupt-deflate"),
        pytest.param(tar_bytes([f("a", 5000)])[:2000], id="truncated-tar"),
        pytest.param(b"this is not a layer at all, just text" * 20, id="not-a-tar"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_corrupt_layer_is_an_inspection_error_naming_the_layer(blob: bytes) -> None:
    digest = sha256(blob)

    with pytest.raises(InvalidImageData, match=f"layer {digest}"):
        index_layer(io.BytesIO(blob), digest=digest, media_type=GZIP_LAYER, max_bytes=1 << 20)


def test_a_zstd_layer_is_read() -> None:
    import zstandard

    tar = tar_bytes([f("hello", b"hi")])
    blob = zstandard.ZstdCompressor().compress(tar)
    index = index_layer(
        io.BytesIO(blob), digest=sha256(blob), media_type=ZSTD_LAYER, max_bytes=1 << 20
    )
    assert index.diff_id == sha256(tar)
    assert listing(index) == [("hello", "file", 2, False, False)]


def test_unreadable_bytes_that_are_not_the_layer_asked_for_are_a_digest_mismatch() -> None:
    good = gzip_blob([f("a", 5000)])
    sent = good[:30] + b"\xff" * 40  # a lying or broken registry

    with pytest.raises(DigestMismatch, match=sha256(good)):
        index_layer(io.BytesIO(sent), digest=sha256(good), media_type=GZIP_LAYER, max_bytes=1 << 20)


def test_an_unverifiable_digest_algorithm_is_refused() -> None:
    with pytest.raises(UnsupportedMediaType, match="md5"):
        index_layer(io.BytesIO(b""), digest="md5:abc", media_type=GZIP_LAYER, max_bytes=10)


# ---- bounded memory -------------------------------------------------------------------------


def many_files(count: int) -> list[Member]:
    return [d("data"), *(f(f"data/{i:06d}", i % 7) for i in range(count))]


def test_beyond_the_entry_bound_entries_spill_to_disk_and_read_back_in_order(
    tmp_path: Path,
) -> None:
    members = many_files(1000)
    in_memory = layer(*members)

    spilled = layer(*members, memory_entries=100, spill_dir=tmp_path)

    assert spilled.spilled
    assert not in_memory.spilled
    assert spilled.entry_count == 1001
    assert list(spilled.entries()) == list(in_memory.entries())
    assert list(spilled.entries()) == list(in_memory.entries())  # read again, same rows
    assert list(tmp_path.iterdir()) == []  # the spill file lives only as long as the index


def test_an_index_that_fails_midway_leaves_no_spill_file(tmp_path: Path) -> None:
    blob = gzip_blob(many_files(500))

    with pytest.raises(DigestMismatch):
        index_layer(
            io.BytesIO(blob),
            digest=sha256(b"other"),
            media_type=GZIP_LAYER,
            max_bytes=1 << 30,
            memory_entries=10,
            spill_dir=tmp_path,
        )
    assert list(tmp_path.iterdir()) == []


def test_undecodable_file_names_survive_a_spill(tmp_path: Path) -> None:
    name = b"caf\xe9-latin1".decode("utf-8", "surrogateescape")
    members = [f(f"n{i}") for i in range(5)] + [f(name, b"1")]

    spilled = layer(*members, memory_entries=2, spill_dir=tmp_path)

    assert [e.path for e in spilled.entries()][-1] == name


# ---- the store ------------------------------------------------------------------------------


class Blobs:
    """Layer blobs by digest, counting how often each is opened (a registry's blob GETs)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.opened: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, *members: Member) -> str:
        blob = gzip_blob(members)
        digest = sha256(blob)
        self.blobs[digest] = blob
        return digest

    def opener(self, digest: str) -> Callable[[], AbstractContextManager[BinaryIO]]:
        @contextmanager
        def open_blob() -> Iterator[BinaryIO]:
            with self._lock:
                self.opened[digest] = self.opened.get(digest, 0) + 1
            yield io.BytesIO(self.blobs[digest])

        return open_blob


def fetch(store: LayerIndexStore, blobs: Blobs, digest: str) -> LayerIndex:
    return store.get_or_index(
        digest, blobs.opener(digest), media_type=GZIP_LAYER, max_bytes=1 << 30
    )


def cache_files(root: Path) -> list[Path]:
    return sorted(root.glob("*.sqlite"))


def test_a_layer_shared_by_many_images_is_read_once(tmp_path: Path) -> None:
    blobs = Blobs()
    base = blobs.add(d("etc"), f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"))
    store = LayerIndexStore(tmp_path)

    first = fetch(store, blobs, base)
    for _ in range(5):
        assert fetch(store, blobs, base) is first

    assert blobs.opened == {base: 1}
    assert (store.stats.indexed, store.stats.memory_hits) == (1, 5)


def test_a_new_store_on_the_same_directory_reads_the_index_from_disk(tmp_path: Path) -> None:
    blobs = Blobs()
    digest = blobs.add(d("etc"), f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), wh("tmp/x"))
    original = fetch(LayerIndexStore(tmp_path), blobs, digest)

    store = LayerIndexStore(tmp_path)
    again = fetch(store, blobs, digest)

    assert blobs.opened == {digest: 1}
    assert store.stats.disk_hits == 1
    assert again == original
    assert list(again.entries()) == list(original.entries())
    assert dict(again.files) == dict(original.files)


def test_concurrent_requests_for_one_layer_read_it_once(tmp_path: Path) -> None:
    blobs = Blobs()
    digest = blobs.add(*many_files(3000))
    store = LayerIndexStore(tmp_path)
    results: list[LayerIndex] = []

    threads = [
        threading.Thread(target=lambda: results.append(fetch(store, blobs, digest)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert blobs.opened == {digest: 1}
    assert [r.entry_count for r in results] == [3001] * 8


def test_the_least_recently_used_files_are_evicted_beyond_the_disk_budget(
    tmp_path: Path,
) -> None:
    blobs = Blobs()
    digests = [blobs.add(*(f(f"{n}/{i}", 10) for i in range(200))) for n in "abc"]
    probe = LayerIndexStore(tmp_path / "probe")
    fetch(probe, blobs, digests[0])
    one_file = probe.disk_bytes()
    store = LayerIndexStore(tmp_path / "cache", max_disk_bytes=2 * one_file + one_file // 2)

    for step in (
        lambda: fetch(store, blobs, digests[0]),
        lambda: fetch(store, blobs, digests[1]),
        store.clear_memory,
        lambda: fetch(store, blobs, digests[0]),  # a disk hit: `a` is recently used again
        lambda: fetch(store, blobs, digests[2]),  # over budget: `b`, least recently used, goes
    ):
        step()
        time.sleep(0.01)  # distinct mtimes even on coarse-grained file systems

    assert store.stats.evicted == 1
    assert [p.name for p in cache_files(store.root)] == sorted(
        store.path(d).name for d in (digests[0], digests[2])
    )
    assert store.get(digests[1]) is None
    fetch(store, blobs, digests[1])  # read again when asked again
    assert blobs.opened[digests[1]] == 2
    assert store.disk_bytes() <= store.max_disk_bytes


def test_a_spilled_index_in_the_store_reads_from_its_file_even_after_eviction(
    tmp_path: Path,
) -> None:
    blobs = Blobs()
    digest = blobs.add(*many_files(500))
    store = LayerIndexStore(tmp_path, memory_entries=50)

    index = fetch(store, blobs, digest)
    store.path(digest).unlink()  # evicted (or deleted by hand) under a reader

    assert index.spilled
    assert sum(1 for _ in index.entries()) == 501
    assert list(store.scratch.iterdir()) == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not a database"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:4096]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    ],
)
def test_a_corrupt_cache_file_is_dropped_and_the_layer_read_again(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    blobs = Blobs()
    digest = blobs.add(*many_files(400))
    expected = list(fetch(LayerIndexStore(tmp_path), blobs, digest).entries())
    damage(LayerIndexStore(tmp_path).path(digest))

    store = LayerIndexStore(tmp_path)
    again = fetch(store, blobs, digest)

    assert store.stats.corrupt == 1
    assert blobs.opened[digest] == 2
    assert list(again.entries()) == expected
    assert LayerIndexStore(tmp_path).get(digest) is not None  # rewritten whole


def test_a_cache_file_of_another_layer_is_not_trusted(tmp_path: Path) -> None:
    blobs = Blobs()
    one = blobs.add(f("one", b"1"))
    two = blobs.add(f("two", b"2"))
    store = LayerIndexStore(tmp_path)
    fetch(store, blobs, one)
    store.path(one).rename(store.path(two))  # a file under the wrong name
    store.clear_memory()

    index = fetch(store, blobs, two)

    assert [e.path for e in index.entries()] == ["two"]
    assert store.stats.corrupt == 1


def test_a_missing_cache_directory_is_made(tmp_path: Path) -> None:
    store = LayerIndexStore(tmp_path / "state" / "layers")

    assert store.get("sha256:" + "a" * 64) is None
    assert store.scratch.is_dir()


def test_layer_entries_are_small_immutable_values() -> None:
    entry = LayerEntry("etc/passwd", "file", 10, 0o644, 0, 0)

    with pytest.raises(AttributeError):
        entry.size = 11  # type: ignore[misc]
    assert not hasattr(entry, "__dict__")
