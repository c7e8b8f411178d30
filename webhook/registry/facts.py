"""What imagegate learns about one image: the input of every rule."""

from __future__ import annotations

import functools
import platform as _platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from webhook.errors import UsageError

_MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "i386": "386",
    "i686": "386",
}

# containerd's normalisation (platforms.Normalize): architecture aliases, and the variants
# that are implied (`arm64` is `arm64/v8`, `arm` is `arm/v7`, `amd64` is `amd64/v1`).
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}
_ARM_VARIANTS = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}
_ARM64_VARIANTS = {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}

# The one operating system whose images a node of the clusters imagegate guards can run.
RUNNABLE_OS = "linux"


@dataclass(frozen=True)
class Platform:
    """An OCI platform: `os/architecture[/variant]`."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"invalid platform {text!r}: expected os/arch or os/arch/variant, "
                "for example linux/amd64 or linux/arm64/v8"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine, as a node's kubelet would ask for it."""
        return _host_platform()

    @classmethod
    def _read_host(cls) -> Platform:
        machine = _platform.machine().lower()
        arch = _MACHINE_TO_ARCH.get(machine, machine)
        variant = "v6" if machine == "armv6l" else None
        return cls("linux", arch, variant)

    def normalized(self) -> Platform:
        """containerd's normal form: `arm64/v8` and `arm64` are `arm64`, `arm` is `arm/v7`,
        `amd64/v1` is `amd64`, `aarch64` is `arm64`, `x86_64` is `amd64`, `i386` is `386`."""
        os_ = self.os.lower()
        arch = self.architecture.lower()
        variant = (self.variant or "").lower()
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "386" or (arch == "amd64" and variant == "v1"):
            variant = ""
        elif arch == "arm64":
            variant = _ARM64_VARIANTS.get(variant, variant)
        elif arch in ("armhf", "armel"):
            arch, variant = "arm", "v7" if arch == "armhf" else "v6"
        elif arch == "arm":
            variant = _ARM_VARIANTS.get(variant, variant)
        return Platform(os_, arch, variant or None)

    def compatible(self) -> tuple[Platform, ...]:
        """What a node of this platform runs, best first (containerd's `platforms.Only`):
        itself, then older variants of its architecture, then the 32-bit architecture
        (`amd64/v3` → v2, v1, `386`; `arm64` → `arm/v8` … `arm/v5`; `arm/v7` → v6, v5)."""
        me = self.normalized()
        vector = [me]
        number = _variant_number(me.variant)
        if me.architecture == "amd64":
            vector += [
                Platform(me.os, "amd64", f"v{n}" if n > 1 else None)
                for n in range(number - 1, 0, -1)
            ]
            vector.append(Platform(me.os, "386"))
        elif me.architecture == "arm":
            vector += [Platform(me.os, "arm", f"v{n}") for n in range(number - 1, 4, -1)]
        elif me.architecture == "arm64":
            vector += Platform(me.os, "arm", "v8").compatible()
        return tuple(vector)

    def matches(self, os: str, architecture: str, variant: str | None) -> bool:
        """True when an index entry with these fields is this platform (containerd's
        `platforms.NewMatcher`: equal once both are normalised)."""
        return Platform(os, architecture, variant).normalized() == self.normalized()

    @property
    def runnable(self) -> bool:
        """A Linux image of a real architecture (not an attestation's `unknown/unknown`)."""
        me = self.normalized()
        return me.os == RUNNABLE_OS and me.architecture not in ("", "unknown")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _variant_number(variant: str | None) -> int:
    """`v3` → 3; no variant → 1 (the architecture's baseline); anything else → 0."""
    if not variant:
        return 1
    digits = variant[1:] if variant.startswith("v") else variant
    return int(digits) if digits.isascii() and digits.isdigit() else 0


def best_match(wanted: Platform, entries: Sequence[Platform]) -> int | None:
    """The position of the entry a node of platform `wanted` pulls, as containerd chooses it:
    the best-ranked compatible platform (`Platform.compatible`), and among equals the first in
    index order. None when the node can run none of them."""
    ranks = {p: rank for rank, p in reversed(list(enumerate(wanted.compatible())))}
    best: tuple[int, int] | None = None
    for i, entry in enumerate(entries):
        rank = ranks.get(entry.normalized())
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, i)
    return None if best is None else best[1]


def runnable_platforms(entries: Iterable[Platform]) -> list[Platform]:
    """The entries of an index a Linux node can run, in index order: attestations
    (`unknown/unknown`) and other operating systems dropped, and of entries that are equal once
    normalised (`arm64` and `arm64/v8`) only the first, the one containerd picks."""
    seen: set[Platform] = set()
    found: list[Platform] = []
    for entry in entries:
        key = entry.normalized()
        if entry.runnable and key not in seen:
            seen.add(key)
            found.append(entry)
    return found


@functools.cache
def _host_platform() -> Platform:
    return Platform._read_host()


ImageSource = Literal["registry", "docker-daemon"]


@dataclass(frozen=True)
class ImageFacts:
    """Everything the rules look at, read from the manifest and config blob.

    `digest` is the manifest digest for registry images (the one a Pod can pin) and the image
    id (config digest) for `docker-daemon:` images, which have no manifest until pushed.
    `layer_sizes` are compressed sizes for registry images; the Docker engine only records
    uncompressed sizes, so daemon images report those (an upper bound).
    """

    reference: str
    digest: str
    platform: str
    user: str
    entrypoint: list[str] | None
    cmd: list[str] | None
    diff_ids: list[str]
    layer_sizes: list[int]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source: ImageSource = "registry"
    config_digest: str = ""
    manifest_digest: str = ""

    @property
    def compressed_size(self) -> int:
        return sum(self.layer_sizes)
