"""Cold layer indexing: throughput on a ~200 MB layer, and peak memory on 1,000,000 entries.

Generates two gzip layer blobs in a temp directory, then indexes each in a fresh subprocess
(so peak RSS, from `resource.getrusage`, is the indexing's own, beside the interpreter's
baseline after imports):

1. ~200 MB of files (half random bytes, half repetitive text) in 2,000 files: MB/s of
   uncompressed tar, MB/s of blob, peak RSS;
2. 1,000,000 empty files: entries/s and peak RSS, with the spill to SQLite (the bound keeps
   memory flat) and, for comparison, through a `LayerIndexStore` (persisted cache file).

    .venv/bin/python bench/bench_layers.py [--small]   # --small: 20 MB / 100,000 entries
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class _Hashing:
    """A write-only file that hashes what passes through to `inner`."""

    def __init__(self, inner: io.BufferedWriter) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()


Members = Iterator[tuple[tarfile.TarInfo, bytes | None]]


def write_layer(path: Path, members: Members) -> str:
    """Write a gzip layer of `members` ((TarInfo, bytes | None) pairs); return its digest."""
    with path.open("wb") as raw:
        hashing = _Hashing(raw)
        with (
            gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=1, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tar,
        ):
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
                tar.members.clear()  # type: ignore[attr-defined]  # keep this process small
    return "sha256:" + hashing.hash.hexdigest()


def big_files(total: int, count: int) -> Members:
    rng = random.Random(14)
    size = total // count
    text = (b"the quick brown fox jumps over the lazy dog 0123456789\n" * (size // 55 + 1))[:size]
    yield _dir("usr/share/data"), None
    for i in range(count):
        data = rng.randbytes(size) if i % 2 else text
        info = tarfile.TarInfo(f"usr/share/data/file-{i:05d}.bin")
        info.size = len(data)
        yield info, data


def tiny_files(count: int) -> Members:
    per_dir = 1000
    for i in range(count):
        if i % per_dir == 0:
            yield _dir(f"data/{i // per_dir:04d}"), None
        yield tarfile.TarInfo(f"data/{i // per_dir:04d}/f{i:07d}"), None


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def child(args: argparse.Namespace) -> None:
    """Index one blob in this (fresh) process; print timings and peak RSS as JSON."""
    from webhook.layers.index import LayerIndexStore, index_layer

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    blob = Path(args.blob)
    start = time.perf_counter()
    if args.store:
        store = LayerIndexStore(Path(args.store))
        index = store.get_or_index(
            args.digest, lambda: blob.open("rb"), media_type=GZIP_LAYER, max_bytes=1 << 40
        )
    else:
        with blob.open("rb") as stream:
            index = index_layer(
                stream,
                digest=args.digest,
                media_type=GZIP_LAYER,
                max_bytes=1 << 40,
                spill_dir=Path(args.spill),
            )
    seconds = time.perf_counter() - start
    count = sum(1 for _ in index.entries())  # read back too: bounded as well
    print(
        json.dumps(
            {
                "seconds": seconds,
                "entries": count,
                "spilled": index.spilled,
                "compressed": index.compressed_size,
                "uncompressed": index.uncompressed_size,
                "baseline_rss_kb": baseline,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


def measure(blob: Path, digest: str, work: Path, *, store: bool = False) -> dict[str, float]:
    """Run `child` in a new process. Linux keeps `ru_maxrss` across exec, so this process
    stays small (the generators keep no members) lest its size show as the child's peak."""
    command = [sys.executable, __file__, "--child", str(blob), digest, "--spill", str(work)]
    if store:
        command += ["--store", str(work / "store")]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="20 MB and 100,000 entries")
    parser.add_argument("--child", nargs=2, metavar=("BLOB", "DIGEST"), help=argparse.SUPPRESS)
    parser.add_argument("--spill", default=tempfile.gettempdir(), help=argparse.SUPPRESS)
    parser.add_argument("--store", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.blob, args.digest = args.child
        child(args)
        return

    total = (20 if args.small else 200) * MB
    entries = 100_000 if args.small else 1_000_000
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as tmp:
        work = Path(tmp)
        big = work / "big.tar.gz"
        print(f"generating a {total // MB} MB layer …", flush=True)
        big_digest = write_layer(big, big_files(total, 2000))
        r = measure(big, big_digest, work)
        print(
            f"cold index, {r['uncompressed'] / MB:.0f} MB tar ({r['compressed'] / MB:.0f} MB "
            f"gzip): {r['seconds']:.2f} s, {r['uncompressed'] / MB / r['seconds']:.0f} MB/s of "
            f"tar ({r['compressed'] / MB / r['seconds']:.0f} MB/s of blob), peak RSS "
            f"{r['peak_rss_kb'] / 1024:.0f} MB (baseline after imports "
            f"{r['baseline_rss_kb'] / 1024:.0f} MB)"
        )

        tiny = work / "tiny.tar.gz"
        print(f"generating a layer of {entries:,} entries …", flush=True)
        tiny_digest = write_layer(tiny, tiny_files(entries))
        for label, use_store in (("index_layer (spill)", False), ("LayerIndexStore", True)):
            r = measure(tiny, tiny_digest, work, store=use_store)
            print(
                f"{label}: {r['entries']:,.0f} entries in {r['seconds']:.1f} s "
                f"({r['entries'] / r['seconds']:,.0f}/s), spilled={bool(r['spilled'])}, peak RSS "
                f"{r['peak_rss_kb'] / 1024:.0f} MB (baseline {r['baseline_rss_kb'] / 1024:.0f} MB)"
            )


if __name__ == "__main__":
    main()
