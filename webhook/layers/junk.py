"""The catalogue of cache and junk directories an image should not ship, as data.

Shared by the layer analysis (what is left in the final image, `webhook.layers.analysis`) and,
later, by the rebuild engine (what a squash may drop). So it lists only directories that a
package manager or a build tool fills with caches it can rebuild at will: `~/.cache/pip`,
`~/.cache/go-build`, `~/.cache/yarn` yes; `~/.cache` as a whole no, because applications keep
real data there too (`~/.cache/ms-playwright` holds browsers, `~/.cache/huggingface` models).

Patterns are paths relative to `/`, one component per `/`: `*` matches exactly one component,
`**` any number (zero or more). A pattern names a directory whose *contents* are junk; the
directory itself is not (`/tmp` must stay, with mode 1777).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["CATALOGUE", "JunkKind", "JunkMatch", "junk_dirs", "match_junk"]


@dataclass(frozen=True, slots=True)
class JunkKind:
    """One kind of junk: `name` (used in JSON and reports), the directory patterns it covers,
    what it is, and whether it counts only when a layer above the base image made it
    (`build_only`: `__pycache__` of a base image's Python is not the user's to clean)."""

    name: str
    dirs: tuple[str, ...]
    description: str
    build_only: bool = False


CATALOGUE: tuple[JunkKind, ...] = (
    JunkKind(
        "apt-lists",
        ("var/lib/apt/lists",),
        "apt package lists (`apt-get update`); remove with `rm -rf /var/lib/apt/lists/*`",
    ),
    JunkKind(
        "apt-archives",
        ("var/cache/apt",),
        "downloaded .deb files and apt's package caches; `apt-get clean`",
    ),
    JunkKind(
        "apk-cache",
        ("var/cache/apk", "etc/apk/cache"),
        "Alpine apk cache; `apk add --no-cache`",
    ),
    JunkKind(
        "yum-cache",
        ("var/cache/yum", "var/cache/dnf"),
        "yum / dnf metadata and packages; `yum clean all` / `dnf clean all`",
    ),
    JunkKind(
        "pip-cache",
        ("root/.cache/pip", "home/*/.cache/pip"),
        "pip's wheel and HTTP cache; `pip install --no-cache-dir`",
    ),
    JunkKind(
        "npm-cache",
        ("root/.npm/_cacache", "home/*/.npm/_cacache", "root/.npm/_logs", "home/*/.npm/_logs"),
        "npm's content cache and logs; `npm cache clean --force`",
    ),
    JunkKind(
        "yarn-cache",
        (
            "usr/local/share/.cache/yarn",
            "root/.cache/yarn",
            "home/*/.cache/yarn",
            "root/.yarn/berry/cache",
            "home/*/.yarn/berry/cache",
        ),
        "yarn's package cache; `yarn cache clean`",
    ),
    JunkKind(
        "go-build-cache",
        ("root/.cache/go-build", "home/*/.cache/go-build"),
        "Go's build cache (GOCACHE); `go clean -cache`, or a multi-stage build",
    ),
    JunkKind(
        "pycache",
        ("**/__pycache__",),
        "Python bytecode written while building; `PYTHONDONTWRITEBYTECODE=1`",
        build_only=True,
    ),
    JunkKind("tmp", ("tmp", "var/tmp"), "scratch files left in /tmp and /var/tmp"),
)
"""Every kind of junk, in report order."""


@dataclass(frozen=True, slots=True)
class JunkMatch:
    """`path` lies inside `root`, a concrete directory matching a pattern of `kind`."""

    kind: JunkKind
    root: str


def junk_dirs(catalogue: Iterable[JunkKind] = CATALOGUE) -> tuple[str, ...]:
    """Every directory pattern of `catalogue` (for a squash that drops their contents)."""
    return tuple(pattern for kind in catalogue for pattern in kind.dirs)


def match_junk(path: str, catalogue: Sequence[JunkKind] = CATALOGUE) -> JunkMatch | None:
    """The first catalogue entry `path` (relative, normalised) is strictly inside, or None."""
    parts = tuple(path.split("/"))
    for kind, pattern in _compile(tuple(catalogue)).candidates(parts):
        depth = _prefix_match(pattern, parts)
        if depth is not None and depth < len(parts):
            return JunkMatch(kind, "/".join(parts[:depth]))
    return None


class _Compiled:
    """A catalogue's patterns bucketed so that a path is tried only against patterns that can
    match it: by a literal first component, or by a literal component a `**` pattern needs.
    Every path of an image goes through here, so this keeps the analysis fast."""

    def __init__(self, catalogue: tuple[JunkKind, ...]) -> None:
        self.by_first: dict[str, list[tuple[int, JunkKind, tuple[str, ...]]]] = {}
        self.by_needed: dict[str, list[tuple[int, JunkKind, tuple[str, ...]]]] = {}
        self.others: list[tuple[int, JunkKind, tuple[str, ...]]] = []
        order = 0
        for kind in catalogue:
            for text in kind.dirs:
                pattern = _split(text)
                item = (order, kind, pattern)
                order += 1
                literals = [p for p in pattern if p != "**" and not _is_glob(p)]
                if pattern and not _is_glob(pattern[0]) and pattern[0] != "**":
                    self.by_first.setdefault(pattern[0], []).append(item)
                elif literals:
                    self.by_needed.setdefault(literals[0], []).append(item)
                else:
                    self.others.append(item)

    def candidates(self, parts: tuple[str, ...]) -> list[tuple[JunkKind, tuple[str, ...]]]:
        found = list(self.by_first.get(parts[0], ())) + self.others
        for name, items in self.by_needed.items():
            if name in parts:
                found.extend(items)
        found.sort(key=lambda item: item[0])
        return [(kind, pattern) for _, kind, pattern in found]


@lru_cache(maxsize=64)  # callers may pass a few sub-catalogues (the squash does)
def _compile(catalogue: tuple[JunkKind, ...]) -> _Compiled:
    return _Compiled(catalogue)


def _is_glob(component: str) -> bool:
    return any(c in component for c in "*?[")


@lru_cache(maxsize=256)
def _split(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.strip("/").split("/"))


def _component_matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) if _is_glob(pattern) else name == pattern


def _prefix_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> int | None:
    """How many leading components of `parts` `pattern` matches (shortest match), or None."""
    if not pattern:
        return 0
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        for skip in range(len(parts) + 1):
            depth = _prefix_match(rest, parts[skip:])
            if depth is not None:
                return skip + depth
        return None
    if not parts or not _component_matches(parts[0], head):
        return None
    depth = _prefix_match(rest, parts[1:])
    return None if depth is None else depth + 1
