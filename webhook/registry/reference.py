"""Image references, parsed and normalised exactly as Docker does (distribution/reference).

`nginx` → `docker.io/library/nginx:latest`; `localhost:5001/app:1.2`; `repo@sha256:…`;
`repo:tag@sha256:…` keeps both, and the digest is what gets fetched.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

from webhook.errors import InvalidReference

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")
_DOMAIN = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


MAX_REFERENCE_LENGTH = 1024


@dataclass(frozen=True)
class Reference:
    """A normalised image reference. `tag` is None only when a digest is given."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse like Docker; raises InvalidReference saying what is wrong. Memoised: the
        webhook parses the same few references on every admission. Longer than any valid
        reference (name 255, tag 128, a sha512 digest, a 253-character host) is refused
        before the memo, so tenants cannot fill it with megabytes."""
        if len(text) > MAX_REFERENCE_LENGTH:
            raise InvalidReference(
                f"invalid reference {text[:60]!r}…: {len(text)} characters, over the "
                f"{MAX_REFERENCE_LENGTH} any valid image reference fits in"
            )
        return _parse(text)

    @classmethod
    def _parse_uncached(cls, text: str) -> Reference:
        original = text
        text = text.strip()
        if not text:
            raise InvalidReference("empty image reference")
        if "://" in text:
            raise InvalidReference(f"invalid reference {original!r}: remove the URL scheme")
        digest: str | None = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not _DIGEST.match(digest):
                raise InvalidReference(f"invalid reference {original!r}: bad digest {digest!r}")
            if digest.startswith("sha256:") and not _SHA256.match(digest):
                raise InvalidReference(
                    f"invalid reference {original!r}: a sha256 digest has 64 lowercase hex digits"
                )
        tag: str | None = None
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            text, tag = text.rsplit(":", 1)
            if not _TAG.match(tag):
                raise InvalidReference(f"invalid reference {original!r}: bad tag {tag!r}")
        registry, repository = _split_domain(text, original)
        for component in repository.split("/"):
            if not _PATH_COMPONENT.match(component):
                hint = (
                    " (repository names must be lowercase)"
                    if component.lower() != component
                    else ""
                )
                raise InvalidReference(
                    f"invalid reference {original!r}: bad repository component {component!r}{hint}"
                )
        if len(registry) + 1 + len(repository) > 255:
            raise InvalidReference(
                f"invalid reference {original!r}: name longer than 255 characters"
            )
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def pinned(self) -> bool:
        """True when the reference names a digest, so what runs is what was checked."""
        return self.digest is not None

    @property
    def api_host(self) -> str:
        """Host that serves the /v2/ API for this registry."""
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    @property
    def lookup(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def familiar(self) -> str:
        """The short form Docker prints (`nginx:1.27`, `localhost:5001/app:1`)."""
        name = self.repository if self.registry == DOCKER_HUB else self.name
        if self.registry == DOCKER_HUB and name.startswith("library/"):
            name = name[len("library/") :]
        out = name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> Reference:
    return Reference._parse_uncached(text)


def _split_domain(text: str, original: str) -> tuple[str, str]:
    first, _, rest = text.partition("/")
    is_domain = bool(rest) and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    )
    if is_domain:
        if not _DOMAIN.match(first):
            raise InvalidReference(f"invalid reference {original!r}: bad registry host {first!r}")
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, text
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not repository:
        raise InvalidReference(f"invalid reference {original!r}: missing repository name")
    return registry, repository


def normalize_host(host: str) -> str:
    """Registry host as Docker keys it: strips a scheme and path, maps Hub aliases."""
    host = host.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.split("/", 1)[0]
    return DOCKER_HUB if host in _HUB_ALIASES else host
