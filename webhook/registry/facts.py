"""What imagegate learns about one image: the input of every rule."""

from __future__ import annotations

import functools
import platform as _platform
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

# Variants that are implied when an index entry omits them (containerd's normalisation).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


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

    def matches(self, os: str, architecture: str, variant: str | None) -> bool:
        """True when an index entry with these fields serves this platform."""
        if (os, architecture) != (self.os, self.architecture):
            return False
        if self.variant is None:
            return True
        default = _DEFAULT_VARIANT.get(architecture)
        return (variant or default) == (self.variant or default)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


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

    @property
    def compressed_size(self) -> int:
        return sum(self.layer_sizes)
