"""`make bench`: deep inspection (issue 14) against a real registry: cold, warm, and a scan.

Images are built here as OCI images (gzip layers of mostly random, poorly compressible files,
written by a few worker processes) and pushed through `BlobStore`; no Docker engine is needed.
Each measurement runs `Checker.check` with `deep = "always"`, the checker built as
`ProcessContext.from_settings` builds it, in a fresh subprocess, so its peak RSS (`VmHWM` of
/proc/self/status: Linux's `ru_maxrss` would carry this process's peak over into the child)
is the measurement's own, beside its baseline after imports. The registry's access log counts
the blob GETs.

1. Cold analysis of a ~200 MB image (4 layers, empty layer cache): MB/s of blob, peak RSS.
2. Warm re-analysis of a derived image (the same 4 layers + one small new one), in a new
   process over the same cache directory: only the new layer's blob and the config are GETs.
3. A scan of 200 images over 20 shared bases (3 layers of a few MB each; each image adds 1–2
   small layers and has its own config; the images live in 8 repositories, so a base's layers
   are mounted in several), all checked at once (`Checker.check_all`, as the operator's scan
   gathers its checks), empty cache: images/s, layer blob GETs against distinct layers (each
   layer read once, whichever repository it is read from), peak RSS.

Prints one line per figure; exits 1 if a layer blob was read more than once, the warm check
read anything but the new layer and the config, or a check was an error.

    .venv/bin/python bench/bench_deep.py [--quick]   # --quick: 40 MB image, 40 images/4 bases
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import math
import random
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.registry import parse_access_log, start_registry  # noqa: E402
from webhook.registry.auth import Keyring  # noqa: E402
from webhook.registry.blobs import BlobStore  # noqa: E402
from webhook.registry.client import RegistryClient  # noqa: E402
from webhook.registry.reference import Reference  # noqa: E402
from webhook.settings import RegistrySettings  # noqa: E402

MB = 1024 * 1024
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"
SHARED_FILE = "usr/share/bench/settings.json"  # in the big image's 2nd layer; the derived
# image's new layer overwrites it (wasted bytes the warm analysis must find)
PUSHES = 8  # blob uploads at once
BLOB_GET = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class Scale:
    big_mb: int  # compressed size of the cold image, about
    images: int  # scan
    bases: int
    base_layer_mb: tuple[float, ...]  # each scan base's layers


FULL = Scale(big_mb=200, images=200, bases=20, base_layer_mb=(3.0, 2.0, 1.0))
QUICK = Scale(big_mb=40, images=40, bases=4, base_layer_mb=(1.5, 1.0, 0.5))
BIG_SPLIT = (0.45, 0.30, 0.17, 0.08)  # the cold image's layers, as parts of its size


# ---- layers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """What `write_layer` puts in a layer: `total` bytes of generated files under `prefix`
    (90% random bytes, 10% text; sizes log-uniform), then the literal `extra` files."""

    name: str
    seed: int
    prefix: str
    total: int
    extra: tuple[tuple[str, bytes], ...] = ()
    command: str = ""


@dataclass(frozen=True)
class Blob:
    digest: str
    diff_id: str
    size: int  # compressed
    tar_size: int
    files: int
    path: str
    command: str


class _Hashing:
    """A write-only file that hashes and counts what passes through to `inner`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        written: int = self.inner.write(data)
        return written

    def flush(self) -> None:
        self.inner.flush()


def _file(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
    return info


def _dir(name: str) -> tarfile.TarInfo:
    info = _file(name, 0)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def write_layer(spec: LayerSpec, directory: str) -> Blob:
    """Write `spec` as a gzip layer blob in `directory` (a worker process runs this)."""
    rng = random.Random(spec.seed)
    text = b"the quick brown fox jumps over the lazy dog 0123456789\n" * 20_000
    path = Path(directory) / f"{spec.name}.tar.gz"
    files = 0
    with path.open("wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as gz:
            tar_stream = _Hashing(gz)
            with tarfile.open(
                fileobj=cast(IO[bytes], tar_stream), mode="w|", format=tarfile.PAX_FORMAT
            ) as tar:
                written, folder = 0, 0
                while written < spec.total:
                    if files % 200 == 0:
                        folder += 1
                        tar.addfile(_dir(f"{spec.prefix}/d{folder:03d}"))
                    size = min(int(math.exp(rng.uniform(math.log(256), math.log(MB)))), spec.total)
                    data = rng.randbytes(size) if rng.random() < 0.9 else text[:size]
                    name = f"{spec.prefix}/d{folder:03d}/f{files:05d}.bin"
                    tar.addfile(_file(name, len(data)), _reader(data))
                    tar.members.clear()  # type: ignore[attr-defined]  # keep the worker small
                    written += len(data)
                    files += 1
                for name, data in spec.extra:
                    tar.addfile(_file(name, len(data)), _reader(data))
                    files += 1
    return Blob(
        digest="sha256:" + compressed.hash.hexdigest(),
        diff_id="sha256:" + tar_stream.hash.hexdigest(),
        size=compressed.size,
        tar_size=tar_stream.size,
        files=files,
        path=str(path),
        command=spec.command or f"COPY {spec.prefix} /{spec.prefix}",
    )


def _reader(data: bytes) -> BinaryIO:
    return io.BytesIO(data)


# ---- images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    repository: str  # without the registry host
    tag: str
    layers: tuple[str, ...]  # LayerSpec names, bottom first
    user: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Plan:
    specs: tuple[LayerSpec, ...]
    big: Image
    derived: Image
    bases: tuple[Image, ...]
    scan: tuple[Image, ...]


def plan(scale: Scale) -> Plan:
    specs: list[LayerSpec] = []

    def layer(name: str, total: float, **kw: Any) -> str:
        specs.append(LayerSpec(name, seed=len(specs) + 1, prefix=name, total=int(total), **kw))
        return name

    etc = (("etc/passwd", PASSWD), ("etc/group", GROUP))
    big_layers = tuple(
        layer(
            f"big{i}",
            part * scale.big_mb * MB / 0.9,  # 10% of the files are text: ~big_mb of gzip
            extra={0: etc, 1: ((SHARED_FILE, b"{}" * 32_768),)}.get(i, ()),
        )
        for i, part in enumerate(BIG_SPLIT)
    )
    big = Image("bench/deep/big", "1", big_layers, "nobody")
    new = layer("derived", 0.5 * MB, extra=((SHARED_FILE, b'{"tuned": true}' * 4096),))
    derived = Image("bench/deep/derived", "1", (*big_layers, new), "nobody")

    bases: list[Image] = []
    for b in range(scale.bases):
        names = tuple(
            layer(f"base{b}-{i}", mb * MB, extra=etc if i == 0 else ())
            for i, mb in enumerate(scale.base_layer_mb)
        )
        bases.append(Image(f"bench/deep/base-{b}", "1", names, "65532"))
    rng = random.Random(14)
    scan: list[Image] = []
    for j in range(scale.images):
        base = bases[j % scale.bases]
        own = []
        for k in range(1 + j % 2):
            extra: tuple[tuple[str, bytes], ...] = ()
            if k == 0 and j % 5 == 0:  # apt lists left behind: a cache file to report
                extra = (("var/lib/apt/lists/deb.debian.org_dists_stable_main", b"P" * 50_000),)
            own.append(layer(f"app{j}-{k}", rng.uniform(50_000, 300_000), extra=extra))
        scan.append(
            Image(
                f"bench/deep/app-{j % 8}",
                str(j),
                (*base.layers, *own),
                "nobody" if j % 2 else "65532",
                (("app", str(j)),),
            )
        )
    return Plan(tuple(specs), big, derived, tuple(bases), tuple(scan))


def config(image: Image, blobs: dict[str, Blob]) -> bytes:
    layers = [blobs[name] for name in image.layers]
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": image.user,
                "Entrypoint": ["/usr/local/bin/app"],
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Labels": dict(image.labels),
            },
            "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layers]},
            "history": [{"created_by": b.command} for b in layers],
        },
        sort_keys=True,
    ).encode()


async def push(host: str, images: Iterable[Image], blobs: dict[str, Blob], work: Path) -> None:
    """Upload every image's blobs (a blob already pushed to another repository is mounted
    from there) and manifest, tagged."""
    pushed: dict[str, Reference] = {}  # digest -> a repository that has it
    present: set[tuple[Reference, str]] = set()  # never mount twice: the registry rewrites
    # the link file, and a manifest PUT reading it meanwhile fails (DIGEST_INVALID)
    locks: dict[str, asyncio.Lock] = {}
    limit = asyncio.Semaphore(PUSHES)
    async with RegistryClient(RegistrySettings(), Keyring.empty()) as client:
        store = BlobStore(client)

        async def put(repo: Reference, digest: str, path: Path) -> None:
            async with locks.setdefault(digest, asyncio.Lock()), limit:
                if (repo, digest) in present:
                    return
                source = pushed.get(digest)
                if source is None or not await store.mount(repo, digest, source):
                    await store.upload(repo, digest, path)
                pushed.setdefault(digest, repo)
                present.add((repo, digest))

        async def one(image: Image) -> None:
            repo = Reference.parse(f"{host}/{image.repository}")
            layers = [blobs[name] for name in image.layers]
            body = config(image, blobs)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            path = work / f"config-{digest[7:]}.json"
            path.write_bytes(body)
            await asyncio.gather(
                put(repo, digest, path), *(put(repo, b.digest, Path(b.path)) for b in layers)
            )
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(body)},
                "layers": [
                    {"mediaType": GZIP_LAYER, "digest": b.digest, "size": b.size} for b in layers
                ],
            }
            encoded = json.dumps(manifest).encode()
            await store.put_manifest(repo, image.tag, encoded, OCI_MANIFEST)

        await asyncio.gather(*(one(image) for image in images))


def config_digest(image: Image, blobs: dict[str, Blob]) -> str:
    return "sha256:" + hashlib.sha256(config(image, blobs)).hexdigest()


# ---- the measuring child ---------------------------------------------------------------------


def child(spec: dict[str, Any]) -> None:
    """Check `spec["refs"]` with deep inspection forced on, in this fresh process; print the
    timing, the verdicts and peak RSS as JSON."""
    from webhook.context import ProcessContext
    from webhook.policy.model import ImagePolicy
    from webhook.registry.facts import Platform
    from webhook.settings import LayerSettings, Settings

    data = ImagePolicy().model_dump(by_alias=True)
    rules = data["spec"]["rules"]
    for off in ("allowedBases", "sizeBudget", "immutableReference"):
        rules[off]["enabled"] = False  # no verdicts besides the layers' (and no outside bases)
    rules["nonRootUser"]["requireNumericUser"] = False  # USER nobody: resolved from the layers
    policy = ImagePolicy.model_validate(data)
    settings = Settings(layers=LayerSettings(cache_dir=Path(spec["cache"]), deep="always"))
    platform = Platform.parse("linux/amd64")

    async def run() -> dict[str, Any]:
        context = ProcessContext.from_settings(settings, keyring=Keyring.empty())
        try:
            baseline = peak_rss_kb()
            start = time.perf_counter()
            results = await context.checker.check_all(spec["refs"], [policy], platform)
            seconds = time.perf_counter() - start
        finally:
            await context.aclose()
        analyses = [r.facts.get("layerAnalysis") for r in results]
        return {
            "seconds": seconds,
            "verdicts": Counter(r.verdict for r in results),
            "errors": [r.error for r in results if r.verdict == "error"][:3],
            "analysed": sum(a is not None for a in analyses),
            "first": analyses[0],
            "failed_rules": Counter(v.rule for r in results for v in r.violations),
            "resolved_users": sum(r.facts.get("resolvedUser") is not None for r in results),
            "downloads": settings.layers.download_concurrency,
            "baseline_rss_kb": baseline,
            "peak_rss_kb": peak_rss_kb(),
        }

    print(json.dumps(asyncio.run(run())))


def peak_rss_kb() -> int:
    """This process's peak RSS in kB: `VmHWM`, the high-water mark of its own address space
    (Linux), else `ru_maxrss`, which Linux carries over from the parent across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(refs: list[str], cache: Path) -> dict[str, Any]:
    """Run `child` in a new process; it reports its own peak RSS (`peak_rss_kb`)."""
    spec = json.dumps({"refs": refs, "cache": str(cache)})
    proc = subprocess.run(
        [sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"measuring child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = result["errors"]
    if errors:
        raise SystemExit(f"{result['verdicts'].get('error')} checks were errors, first: {errors}")
    return result


def blob_gets(log: Path, since: int) -> Counter[str]:
    """Successful blob GETs by digest in the registry's access log from offset `since`."""
    time.sleep(0.5)  # the registry writes its access line after answering
    found: Counter[str] = Counter()
    for entry in parse_access_log(log, since=since):
        match = BLOB_GET.match(entry.uri)
        if entry.method == "GET" and entry.status == 200 and match:
            found[match["digest"]] += 1
    return found


def rss(result: dict[str, Any]) -> str:
    return (
        f"peak RSS {result['peak_rss_kb'] / 1024:.0f} MB "
        f"(baseline after imports {result['baseline_rss_kb'] / 1024:.0f} MB)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 MB image, 40 images, 4 bases")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0

    scale = QUICK if args.quick else FULL
    the_plan = plan(scale)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-deep-") as tmp:
        state = Path(tmp)
        (state / "blobs").mkdir()
        t0 = time.perf_counter()
        registry = start_registry(state / "registry")
        try:
            with ProcessPoolExecutor() as pool:
                made = pool.map(
                    partial(write_layer, directory=str(state / "blobs")), the_plan.specs
                )
                blobs = {s.name: b for s, b in zip(the_plan.specs, made, strict=True)}
            images = (the_plan.big, the_plan.derived, *the_plan.bases, *the_plan.scan)
            asyncio.run(push(registry.host, images, blobs, state))
            on_disk = sum(b.size for b in blobs.values())
            print(
                f"setup: registry, {len(blobs)} layers ({on_disk / MB:.0f} MB gzip) in "
                f"{len(images)} images, built and pushed: {time.perf_counter() - t0:.0f} s",
                flush=True,
            )

            def ref(image: Image) -> str:
                return f"{registry.host}/{image.repository}:{image.tag}"

            # 1. cold
            big = [blobs[n] for n in the_plan.big.layers]
            big_bytes, big_tar = sum(b.size for b in big), sum(b.tar_size for b in big)
            cache = state / "cache"
            since = registry.log_offset()
            cold = measure([ref(the_plan.big)], cache)
            gets = blob_gets(registry.log_path, since)
            expected = Counter({b.digest: 1 for b in big})
            expected[config_digest(the_plan.big, blobs)] += 1
            print(
                f"cold deep check, {len(big)} layers, {big_bytes / MB:.0f} MB gzip "
                f"({big_tar / MB:.0f} MB tar, {sum(b.files for b in big):,} files): "
                f"{cold['seconds']:.2f} s ({cold['downloads']} layer downloads at once), "
                f"{big_bytes / MB / cold['seconds']:.0f} MB/s of blob "
                f"({big_tar / MB / cold['seconds']:.0f} MB/s of tar), {rss(cold)}; registry saw "
                f"{sum(gets.values())} blob GETs ({len(big)} layers + config)",
                flush=True,
            )
            if gets != expected:
                failures.append(f"cold: blob GETs {dict(gets)}, expected each layer + config once")

            # 2. warm, derived image: a new process over the same cache directory
            new = blobs[the_plan.derived.layers[-1]]
            since = registry.log_offset()
            warm = measure([ref(the_plan.derived)], cache)
            gets = blob_gets(registry.log_path, since)
            expected = Counter({new.digest: 1, config_digest(the_plan.derived, blobs): 1})
            first = warm["first"] or {"wastedBytes": -1, "efficiency": -1.0}
            print(
                f"warm deep check of a derived image ({len(big)} shared layers + 1 new of "
                f"{new.size / 1024:.0f} kB): {warm['seconds'] * 1000:.0f} ms, {rss(warm)}; "
                f"registry saw {sum(gets.values())} blob GETs "
                f"({sum(n for d, n in gets.items() if d == new.digest)} new layer, "
                f"{sum(n for d, n in gets.items() if d in expected and d != new.digest)} config, "
                f"{sum(n for d, n in gets.items() if d not in expected)} other); "
                f"wasted {first['wastedBytes']:,} B (both copies of the overwritten file, as "
                f"Dive counts), efficiency {first['efficiency']:.4f}",
                flush=True,
            )
            if warm["analysed"] != 1:
                failures.append("warm: the derived image was not analysed")
            if gets != expected:
                failures.append(f"warm: blob GETs {dict(gets)}, expected the new layer + config")

            # 3. the scan: its own empty cache
            layers = {blobs[n].digest: blobs[n] for i in the_plan.scan for n in i.layers}
            configs = {config_digest(i, blobs) for i in the_plan.scan}
            since = registry.log_offset()
            scan = measure([ref(i) for i in the_plan.scan], state / "scan-cache")
            gets = blob_gets(registry.log_path, since)
            layer_gets = sum(n for d, n in gets.items() if d in layers)
            config_gets = sum(n for d, n in gets.items() if d in configs)
            read = sum(layers[d].size for d in gets if d in layers)
            n = len(the_plan.scan)
            print(
                f"deep scan of {n} images over {scale.bases} bases "
                f"({sum(layers[d].size for d in layers) / MB:.0f} MB of distinct layers): "
                f"{scan['seconds']:.2f} s, {n / scan['seconds']:.1f} images/s "
                f"({read / MB / scan['seconds']:.0f} MB/s of blob), {rss(scan)}",
                flush=True,
            )
            print(
                f"deep scan registry GETs: {layer_gets} layer blobs for {len(layers)} distinct "
                f"layers ({len(layers) - scale.bases * len(scale.base_layer_mb)} image-own + "
                f"{scale.bases * len(scale.base_layer_mb)} base), {config_gets} configs for "
                f"{len(configs)}, {sum(gets.values()) - layer_gets - config_gets} other",
                flush=True,
            )
            verdicts = dict(scan["verdicts"])
            print(
                f"deep scan verdicts: {verdicts}, {scan['analysed']} analysed, "
                f"{scan['resolved_users']} named users resolved, "
                f"violations by rule {dict(sorted(scan['failed_rules'].items()))}",
                flush=True,
            )
            if any(gets[d] != 1 for d in layers) or layer_gets != len(layers):
                failures.append(f"scan: {layer_gets} layer GETs for {len(layers)} layers")
            if scan["analysed"] != n:
                failures.append(f"scan: {scan['analysed']} of {n} images analysed")
        finally:
            registry.stop()
    print(f"total: {time.perf_counter() - t0:.0f} s")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
