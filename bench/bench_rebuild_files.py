"""Squash memory with many files: a layer of 1,000,000 small files plus a small layer on top.

Issue 15.7: the squash once kept ~1.5 KB per tar entry (a `TarInfo` each), 1.5 GB for a
million files; the bound is a peak RSS under 256 MB. This script writes both layer tars (plain,
as the engine hands them to `squash` after `decompress`) with hand-made ustar headers, so that
this process stays small, then squashes them in a fresh subprocess and reports its wall time,
CPU time (steadier than wall time on a busy machine) and peak RSS (`ru_maxrss` of that child,
as `getrusage(RUSAGE_CHILDREN)` gives it; Linux carries `ru_maxrss` across fork and exec, hence
the small parent). Exits 1 above the bound.

The upper layer overwrites files, whites out a directory of a thousand files, adds an apt cache
(dropped) and a hard link whose target path it overwrites (the group stays one).

    .venv/bin/python bench/bench_rebuild_files.py [--files N] [--module PATH]

`--module PATH` squashes with another copy of `webhook/rebuild/layers.py` (for a before/after
figure: `git show HEAD:webhook/rebuild/layers.py > /tmp/old_layers.py`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIMIT_MB = 256.0
PER_DIR = 1000
BLOCK = 512


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def _header(
    name: str, *, kind: bytes = b"0", size: int = 0, mode: int = 0o644, link: str = ""
) -> bytes:
    """A ustar header block (names under 100 bytes), with its checksum."""
    fields = [
        name.encode().ljust(100, b"\0"),
        _octal(mode, 8),
        _octal(0, 8),
        _octal(0, 8),
        _octal(size, 12),
        _octal(1_700_000_000, 12),
        b" " * 8,
        kind,
        link.encode().ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 32,
        b"\0" * 32,
        _octal(0, 8),
        _octal(0, 8),
        b"\0" * 155,
    ]
    block = b"".join(fields).ljust(BLOCK, b"\0")
    checksum = f"{sum(block):06o}".encode() + b"\0 "
    return block[:148] + checksum + block[156:]


def _write(out: BinaryIO, name: str, data: bytes | None = None, **kwargs: Any) -> None:
    if data is None:
        out.write(_header(name, **kwargs))
        return
    out.write(_header(name, size=len(data), **kwargs))
    out.write(data + b"\0" * (-len(data) % BLOCK))


def write_lower(path: Path, files: int) -> None:
    """`files` small files, a thousand per directory, under /data."""
    with path.open("wb") as out:
        _write(out, "data/", kind=b"5", mode=0o755)
        for i in range(files):
            if i % PER_DIR == 0:
                _write(out, f"data/{i // PER_DIR:04d}/", kind=b"5", mode=0o755)
            _write(out, f"data/{i // PER_DIR:04d}/f{i:07d}", f"file {i}\n".encode())
        _write(out, "data/tool", b"version 1\n", mode=0o755)
        _write(out, "data/tool-alias", kind=b"1", link="data/tool", mode=0o755)
        out.write(b"\0" * BLOCK * 2)


def write_upper(path: Path) -> None:
    """A few changes on top: overwrites, a whiteout, a dropped cache, a replaced link target."""
    with path.open("wb") as out:
        _write(out, "data/", kind=b"5", mode=0o755)
        _write(out, "data/0000/", kind=b"5", mode=0o755)
        for i in range(0, 100):
            _write(out, f"data/0000/f{i:07d}", f"changed {i}\n".encode())
        _write(out, "data/.wh.0001", b"")
        _write(out, "data/tool", b"version 2\n", mode=0o755)
        _write(out, "var/lib/apt/lists/deb.debian.org_Packages", b"x" * 4096)
        out.write(b"\0" * BLOCK * 2)


def _load(module: str) -> Any:
    if not module:
        from webhook.rebuild import layers

        return layers
    spec = importlib.util.spec_from_file_location("layers_under_test", module)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # dataclasses look their module up there
    spec.loader.exec_module(loaded)
    return loaded


def child(lower: str, upper: str, out: str, module: str) -> None:
    """Squash in this fresh process; print what it wrote and how long it took, as JSON."""
    layers = _load(module)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = layers.squash([Path(lower), Path(upper)], Path(out))
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "entries": result.entries,
                "dropped": getattr(result, "dropped_count", len(result.dropped)),
                "bytes": result.layer.size,
                "baseline_rss_kb": baseline,
            }
        )
    )


def measure(work: Path, module: str) -> dict[str, float]:
    """Run `child` in a new process: its wall time, and its peak RSS from `wait4`."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(work / "lower.tar"),
        str(work / "upper.tar"),
    ]
    command += [str(work / "out.tar.gz"), "--module", module]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the squash failed (exit {proc.returncode})")
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    result["wall"] = wall
    result["cpu"] = usage.ru_utime + usage.ru_stime
    result["peak_rss_kb"] = usage.ru_maxrss
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1_000_000, help="files in the big layer")
    parser.add_argument("--module", default="", help="squash with this copy of layers.py")
    parser.add_argument(
        "--child", nargs=3, metavar=("LOWER", "UPPER", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        lower, upper, out = args.child
        child(lower, upper, out, args.module)
        return

    with tempfile.TemporaryDirectory(prefix="bench-rebuild-files-") as tmp:
        work = Path(tmp)
        print(f"generating a layer of {args.files:,} small files …", flush=True)
        write_lower(work / "lower.tar", args.files)
        write_upper(work / "upper.tar")
        size = (work / "lower.tar").stat().st_size
        print(f"squashing ({size / 2**20:,.0f} MB of tar) in a subprocess …", flush=True)
        r = measure(work, args.module)
        peak = r["peak_rss_kb"] / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"squash of {args.files:,} files + a small layer: {r['entries']:,.0f} entries "
            f"written ({r['dropped']:,.0f} cache paths dropped, {r['bytes'] / 2**20:,.1f} MB "
            f"gzip) in {r['wall']:.1f} s wall ({r['seconds']:.1f} s in squash, {r['cpu']:.1f} s "
            f"CPU), peak RSS "
            f"{peak:.0f} MB (RUSAGE_CHILDREN {children:.0f} MB; baseline after imports "
            f"{r['baseline_rss_kb'] / 1024:.0f} MB); bound {LIMIT_MB:.0f} MB"
        )
        if peak > LIMIT_MB:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
