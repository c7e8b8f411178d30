"""What an image's layers say, computed from their indexes (pure functions, layers bottom first).

* `dive_efficiency`: Dive's efficiency score, wasted bytes and user-wasted ratio, reproduced
  from Dive's own code (see its docstring), with the paths that waste bytes;
* `merge_layers`: the final file tree with OCI whiteout semantics, and what each layer added,
  changed and removed relative to the tree below it;
* `cache_files`, `setuid_files`, `world_writable_files`, `unreadable_by_others`: findings in
  the final tree;
* `resolve_user`, `resolve_image_user`: a named USER through the image's own `/etc/passwd` and
  `/etc/group`, as runc resolves it when the container starts;
* `analyze_layers`: all of it at once, as the `layerAnalysis` JSON of `imagegate check`.

Paths in results are absolute (`/etc/passwd`); `LayerEntry.path` is relative.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.layers.index import CAPTURED_FILES, LayerEntry, LayerIndex
from webhook.layers.junk import CATALOGUE, JunkKind, match_junk
from webhook.layers.tarfmt import WHITEOUT

__all__ = [
    "CacheFile",
    "DiveEfficiency",
    "FinalEntry",
    "LayerAnalysis",
    "LayerChanges",
    "LayerStats",
    "MergedImage",
    "ResolvedUser",
    "UnresolvedUser",
    "WastedPath",
    "analyze_layers",
    "cache_files",
    "dive_efficiency",
    "is_numeric_user",
    "layer_commands",
    "merge_layers",
    "resolve_image_user",
    "resolve_user",
    "setuid_files",
    "unreadable_by_others",
    "world_writable_files",
]

_MAX_ID = 2**31 - 1


def _abs(path: str) -> str:
    return "/" + path


# ---- Dive's efficiency ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WastedPath:
    """A path Dive counts as wasted: seen in more than one layer (`bytes` is the sum of every
    occurrence, as Dive counts it), first in layer `added_in`, then again (overwritten,
    removed, or touched) in layers `changed_in` (positions, bottom layer 0)."""

    path: str
    bytes: int
    added_in: int
    changed_in: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "bytes": self.bytes,
            "addedIn": self.added_in,
            "changedIn": list(self.changed_in),
        }


@dataclass(frozen=True, slots=True)
class DiveEfficiency:
    """Dive's figures for an image: `efficiency` (0..1), `wasted_bytes`, and
    `user_wasted_percent`: wasted bytes over the bytes of the layers above the base, a
    fraction like Dive's (None when there are no such bytes, where Dive divides by zero).
    `layer_wasted` attributes each wasted occurrence's bytes to its layer."""

    efficiency: float
    wasted_bytes: int
    user_wasted_percent: float | None
    size_bytes: int
    user_size_bytes: int
    inefficiencies: tuple[WastedPath, ...]
    layer_wasted: tuple[int, ...]


class _DiveNode:
    """A node of one of Dive's file trees (`filetree.FileNode`): a payload and named children.

    A node made only because a deeper path needs it has Dive's empty payload: size 0 and *not*
    a directory; that matters, because Dive sizes a whited-out path by its subtree only when
    the node's payload says directory.
    """

    __slots__ = ("children", "is_dir", "size")

    def __init__(self, size: int = 0, is_dir: bool = False) -> None:
        self.size = size
        self.is_dir = is_dir
        self.children: dict[str, _DiveNode] | None = None

    def child(self, name: str) -> _DiveNode:
        if self.children is None:
            self.children = {}
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = _DiveNode()
        return node

    def get(self, names: Sequence[str]) -> _DiveNode | None:
        node: _DiveNode | None = self
        for name in names:
            if node is None or node.children is None:
                return None
            node = node.children.get(name)
        return node

    def copy(self) -> _DiveNode:
        twin = _DiveNode(self.size, self.is_dir)
        if self.children is not None:
            twin.children = {name: child.copy() for name, child in self.children.items()}
        return twin

    def subtree_size(self) -> int:
        total, stack = 0, [self]
        while stack:
            node = stack.pop()
            total += node.size
            if node.children:
                stack.extend(node.children.values())
        return total

    def walk(self, post_order: bool) -> Iterator[tuple[tuple[str, ...], _DiveNode]]:
        """Nodes below this one, children by sorted name (Go's `sort.Strings`); each node
        after its children when `post_order`, and only leaves otherwise."""
        stack: list[tuple[tuple[str, ...], _DiveNode, bool]] = [((), self, False)]
        while stack:
            names, node, expanded = stack.pop()
            if node.children and not expanded:
                stack.append((names, node, True))
                for name in sorted(node.children, reverse=True):
                    stack.append(((*names, name), node.children[name], False))
                continue
            if names and (post_order or not node.children):
                yield names, node


def _dive_tree(layer: LayerIndex) -> _DiveNode:
    """Dive's tree of one layer (`processLayerTar` + `FileTree.AddPath`), in tar order.

    A whiteout is a node named `.wh.NAME`; an opaque marker is never added (`AddPath` stops at
    a `.wh..wh.` component) but the directories above it are made, with empty payloads.
    """
    root = _DiveNode(is_dir=True)
    for entry in layer.entries():
        if entry.opaque:
            node = root
            for name in entry.path.split("/") if entry.path else ():
                node = node.child(name)
            continue
        if entry.whiteout:
            parent, base = posixpath.split(entry.path)
            names = [*parent.split("/"), WHITEOUT + base] if parent else [WHITEOUT + base]
        else:
            names = entry.path.split("/")
        node = root
        for name in names:
            node = node.child(name)
        node.size, node.is_dir = entry.size, entry.kind == "dir"
    return root


def _dive_stack(lower: _DiveNode, upper: _DiveNode) -> None:
    """Dive's `FileTree.Stack`: every node of `upper`, children first, onto `lower`; a whiteout
    removes its path, anything else takes the node's payload (keeping lower children)."""
    for names, node in upper.walk(post_order=True):
        leaf = names[-1]
        if leaf.startswith(WHITEOUT):
            parent = lower.get(names[:-1])
            if parent is not None and parent.children:
                parent.children.pop(leaf[len(WHITEOUT) :], None)
            continue
        target = lower
        for name in names:
            target = target.child(name)
        target.size, target.is_dir = node.size, node.is_dir


class _PathWaste:
    __slots__ = ("count", "cumulative", "minimum", "occurrences")

    def __init__(self) -> None:
        self.count = 0
        self.cumulative = 0
        self.minimum = -1
        self.occurrences: list[tuple[int, int]] = []  # (layer, bytes)


def dive_efficiency(layers: Sequence[LayerIndex], *, base_layers: int = 1) -> DiveEfficiency:
    """Dive's efficiency, wasted bytes and user-wasted ratio, exactly as Dive computes them.

    Read from Dive's source (github.com/wagoodman/dive): `dive/filetree/efficiency.go`
    (`Efficiency`), `dive/filetree/file_tree.go` (`AddPath`, `Stack`, `StackTreeRange`),
    `dive/filetree/file_node.go` (`IsWhiteout`, `Path`, `VisitDepthChildFirst`),
    `dive/image/docker/image_archive.go` (layer trees and sizes), `dive/image/analysis.go`
    (`Analyze`) and `cmd/dive/cli/internal/command/ci/rules.go` (the CI thresholds):

    * each layer is a tree of its tar entries; only its *leaves* count (a directory that has
      entries below it in the same layer does not), each as an occurrence of its path;
    * an occurrence's size is the tar header size, except for a whiteout (`.wh.NAME`, path
      NAME): the summed sizes of NAME's subtree in the layers below stacked Dive's way, when
      that node's payload is a directory, and 0 otherwise (a whited-out file counts 0);
    * per path: `minimum` and `cumulative` size over its occurrences;
      `efficiency = Σ minimum / Σ cumulative` (1.0 when Σ cumulative is 0);
    * `wastedBytes = Σ cumulative` over the paths seen twice or more (the whole of every
      occurrence, not the excess over the minimum);
    * `userWastedPercent = wastedBytes / Σ sizes of the layers above the base`, where a
      layer's size is the sum of its tar entries' sizes. Dive takes exactly one base layer
      (the first); `base_layers` can name the real base's layer count instead.

    Dive's quirks are kept because the figures must match Dive's: opaque markers are ignored;
    the layers below a whiteout in layer k are layer 0 stacked on a copy of itself, then 1..k-1;
    a directory implied only by deeper paths has a non-directory payload; and a whiteout whose
    path is not in the stacked tree ends that layer's walk (the rest of its leaves are not
    counted) and, if its path was new, leaves a minimum of -1 for it.
    """
    stats: dict[str, _PathWaste] = {}
    stacked: _DiveNode | None = None
    for position, layer in enumerate(layers):
        tree = _dive_tree(layer)
        if stacked is None:
            stacked = tree.copy()  # StackTreeRange(trees, 0, -1) is a copy of layer 0
        for names, node in tree.walk(post_order=False):
            leaf = names[-1]
            whiteout = leaf.startswith(WHITEOUT)
            path = "/".join((*names[:-1], leaf[len(WHITEOUT) :] if whiteout else leaf))
            waste = stats.get(path)
            if waste is None:
                waste = stats[path] = _PathWaste()
            if whiteout:
                below = stacked.get((*names[:-1], leaf[len(WHITEOUT) :]))
                if below is None:
                    break  # Dive's visitor returns an error: the layer's walk stops here
                size = below.subtree_size() if below.is_dir else 0
            else:
                size = node.size
            waste.count += 1
            waste.cumulative += size
            if waste.minimum < 0 or size < waste.minimum:
                waste.minimum = size
            waste.occurrences.append((position, size))
        _dive_stack(stacked, tree)

    minimum_total = sum(w.minimum for w in stats.values())
    cumulative_total = sum(w.cumulative for w in stats.values())
    efficiency = 1.0 if cumulative_total == 0 else minimum_total / cumulative_total
    layer_wasted = [0] * len(layers)
    wasted: list[WastedPath] = []
    for path, waste in stats.items():
        if waste.count < 2:
            continue
        for position, size in waste.occurrences:
            layer_wasted[position] += size
        positions = [p for p, _ in waste.occurrences]
        wasted.append(WastedPath(_abs(path), waste.cumulative, positions[0], tuple(positions[1:])))
    wasted.sort(key=lambda w: (-w.bytes, w.path))
    wasted_bytes = sum(w.bytes for w in wasted)
    size_bytes = sum(layer.content_size for layer in layers)
    user_size = sum(layer.content_size for layer in layers[base_layers:])
    return DiveEfficiency(
        efficiency=efficiency,
        wasted_bytes=wasted_bytes,
        user_wasted_percent=wasted_bytes / user_size if user_size else None,
        size_bytes=size_bytes,
        user_size_bytes=user_size,
        inefficiencies=tuple(wasted),
        layer_wasted=tuple(layer_wasted),
    )


# ---- the merged tree (OCI semantics) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerChanges:
    """What one layer did to the tree below it, counting non-directories only (a layer
    re-emits every parent directory of what it touches, so directories would say nothing):
    paths it `added`, `changed` (existed below), and `removed` (gone, by a whiteout, an opaque
    directory or a replacement)."""

    added: int
    changed: int
    removed: int


@dataclass(frozen=True, slots=True)
class FinalEntry:
    """An entry of the final image and the position of the layer it comes from."""

    path: str
    layer: int
    entry: LayerEntry


class _Node:
    """A node of the merged tree; `entry` None is a directory no layer wrote (implied)."""

    __slots__ = ("children", "entry", "layer")

    def __init__(self, entry: LayerEntry | None, layer: int) -> None:
        self.entry = entry
        self.layer = layer
        self.children: dict[str, _Node] | None = None

    @property
    def is_dir(self) -> bool:
        return self.entry is None or self.entry.kind == "dir"


def _non_dirs(node: _Node, path: str) -> Iterator[str]:
    """`path` (when not a directory) and every non-directory below `node`."""
    stack = [(path, node)]
    while stack:
        here, current = stack.pop()
        if not current.is_dir:
            yield here
        if current.children:
            stack.extend((posixpath.join(here, n), c) for n, c in current.children.items())


class MergedImage:
    """The final file tree of an image (OCI whiteout semantics) and each layer's changes.

    Build it with `merge_layers`. `content(path)` gives a captured file's bytes
    (`CAPTURED_FILES`) as the final image has them, or None.
    """

    def __init__(
        self, root: _Node, changes: Sequence[LayerChanges], files: Mapping[str, bytes]
    ) -> None:
        self._root = root
        self.changes: tuple[LayerChanges, ...] = tuple(changes)
        self._files = dict(files)

    def get(self, path: str) -> FinalEntry | None:
        """The final entry at `path` (absolute or relative), or None (absent or implied)."""
        path = path.strip("/")
        node = _find(self._root, path)
        if node is None or node.entry is None:
            return None
        return FinalEntry(path, node.layer, node.entry)

    def entries(self) -> Iterator[FinalEntry]:
        """Every entry of the final image, sorted by path components."""
        stack: list[tuple[str, _Node]] = [("", self._root)]
        while stack:
            path, node = stack.pop()
            if node.entry is not None and path:
                yield FinalEntry(path, node.layer, node.entry)
            if node.children:
                for name in sorted(node.children, reverse=True):
                    stack.append((posixpath.join(path, name), node.children[name]))

    def content(self, path: str) -> bytes | None:
        return self._files.get(path.strip("/"))


def _find(root: _Node, path: str) -> _Node | None:
    node: _Node | None = root
    for name in path.split("/") if path else ():
        if node is None or node.children is None:
            return None
        node = node.children.get(name)
    return node


def merge_layers(layers: Sequence[LayerIndex]) -> MergedImage:
    """Apply `layers` bottom first, as a container runtime unpacks them (DESIGN §4).

    In each layer, opaque markers apply first (hiding every lower child of their directory),
    then whiteouts (hiding lower paths), then the entries in tar order: a directory over a
    directory merges, anything else replaces what was there with everything below it. No
    marker hides an entry of its own layer.
    """
    root = _Node(None, -1)
    changes: list[LayerChanges] = []
    for position, layer in enumerate(layers):
        opaque: list[str] = []
        whiteouts: list[str] = []
        seen: set[str] = set()
        added = changed = 0
        for entry in layer.entries():
            if entry.opaque:
                opaque.append(entry.path)
            elif entry.whiteout:
                whiteouts.append(entry.path)
            elif entry.kind != "dir" and entry.path not in seen:
                seen.add(entry.path)
                if _find(root, entry.path) is None:
                    added += 1
                else:
                    changed += 1
        del seen
        gone: set[str] = set()
        for directory in opaque:
            node = _find(root, directory)
            if node is not None and node.is_dir and node.children:
                for name, child in node.children.items():
                    gone.update(_non_dirs(child, posixpath.join(directory, name)))
                node.children = None
        for path in whiteouts:
            parent_path, name = posixpath.split(path)
            parent = _find(root, parent_path)
            if parent is not None and parent.children and name in parent.children:
                gone.update(_non_dirs(parent.children.pop(name), path))
        for entry in layer.entries():
            if not entry.is_marker:
                _apply(root, entry, position, gone)
        removed = 0
        for path in gone:
            node = _find(root, path)
            if node is None or node.is_dir:
                removed += 1
        changes.append(LayerChanges(added, changed, removed))
    files: dict[str, bytes] = {}
    for path in CAPTURED_FILES:
        node = _find(root, path)
        if node is not None and node.entry is not None and node.entry.kind == "file":
            content = layers[node.layer].files.get(path)
            if content is not None:
                files[path] = content
    return MergedImage(root, changes, files)


def _apply(root: _Node, entry: LayerEntry, position: int, gone: set[str]) -> None:
    names = entry.path.split("/")
    node = root
    for depth, name in enumerate(names[:-1]):
        if node.children is None:
            node.children = {}
        child = node.children.get(name)
        if child is None:
            child = node.children[name] = _Node(None, position)
        elif not child.is_dir:  # a lower file where this layer needs a directory
            gone.add("/".join(names[: depth + 1]))
            child.entry, child.layer = None, position
        node = child
    if node.children is None:
        node.children = {}
    name = names[-1]
    existing = node.children.get(name)
    if existing is None:
        node.children[name] = _Node(entry, position)
        return
    if entry.kind == "dir" and existing.is_dir:
        existing.entry, existing.layer = entry, position  # directories merge
        return
    gone.update(_non_dirs(existing, entry.path))
    node.children[name] = _Node(entry, position)


# ---- findings in the final tree -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheFile:
    """Cache or junk of `kind` (`webhook.layers.junk`) left under directory `path`: `bytes` in
    `files` non-directory entries."""

    kind: str
    path: str
    bytes: int
    files: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "bytes": self.bytes}


def cache_files(
    image: MergedImage,
    *,
    base_layers: int = 0,
    catalogue: Sequence[JunkKind] = CATALOGUE,
) -> tuple[CacheFile, ...]:
    """Cache and junk directories of the final image holding bytes, largest first.

    Kinds marked `build_only` count only files from layers at or above position
    `base_layers` (the user's build, not the base image)."""
    found: dict[tuple[str, str], list[int]] = {}
    for final in image.entries():
        if final.entry.kind == "dir":
            continue
        match = match_junk(final.path, catalogue)
        if match is None or (match.kind.build_only and final.layer < base_layers):
            continue
        totals = found.setdefault((match.kind.name, match.root), [0, 0])
        totals[0] += final.entry.size if final.entry.kind == "file" else 0
        totals[1] += 1
    result = [
        CacheFile(kind, _abs(root), size, count)
        for (kind, root), (size, count) in found.items()
        if size > 0
    ]
    result.sort(key=lambda c: (-c.bytes, c.path))
    return tuple(result)


def setuid_files(image: MergedImage) -> tuple[str, ...]:
    """Files of the final image with the setuid or setgid bit."""
    return tuple(
        _abs(f.path)
        for f in image.entries()
        if f.entry.kind in ("file", "hardlink") and f.entry.mode & 0o6000
    )


def world_writable_files(image: MergedImage) -> tuple[str, ...]:
    """Entries anyone may write: files, and directories without the sticky bit (`/tmp` is
    fine). Symbolic links are left out (their mode is always 0777 and means nothing)."""
    return tuple(
        _abs(f.path)
        for f in image.entries()
        if f.entry.kind != "symlink"
        and f.entry.mode & 0o002
        and not (f.entry.kind == "dir" and f.entry.mode & 0o1000)
    )


def unreadable_by_others(image: MergedImage, under: Iterable[str]) -> tuple[str, ...]:
    """Entries owned by uid 0 under the directories `under` (the WORKDIR, the entrypoint's
    directory) that a non-root user cannot use: files without read permission for others,
    directories without read and search permission for others. What breaks when the image's
    USER changes from root."""
    roots = sorted({p.strip("/") for p in under})
    if not roots:
        return ()
    found: list[str] = []
    for f in image.entries():
        if not any(not r or f.path == r or f.path.startswith(r + "/") for r in roots):
            continue
        entry = f.entry
        if entry.uid != 0:
            continue
        if (entry.kind in ("file", "hardlink") and not entry.mode & 0o004) or (
            entry.kind == "dir" and entry.mode & 0o005 != 0o005
        ):
            found.append(_abs(f.path))
    return tuple(found)


# ---- users ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedUser:
    """The image USER `name` (as written, user part) resolved to `uid`:`gid`."""

    name: str
    uid: int
    gid: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "gid": self.gid}


@dataclass(frozen=True, slots=True)
class UnresolvedUser:
    """The image USER `spec` cannot be resolved; `reason` says why (as runc would fail)."""

    spec: str
    reason: str


def is_numeric_user(spec: str) -> bool:
    """True for `uid` and `uid:gid` (and empty): nothing to look up in the image."""
    user, _, group = spec.partition(":")
    return all(not part or _number(part) is not None for part in (user, group))


def _number(part: str) -> int | None:
    """A uid or gid as runc reads it (Go's `strconv.Atoi`): ASCII digits after an optional
    sign; None for what runc looks up as a name (`²` and `٣` too, which Python's `isdigit`
    calls digits). Longer numbers than 18 digits are out of any id range either way."""
    digits = part[1:] if part[:1] in ("+", "-") else part
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    return int(part)


def _records(text: bytes | None, fields: int) -> Iterator[list[str]]:
    if text is None:
        return
    for line in text.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            yield parts


def _passwd(text: bytes | None) -> Iterator[tuple[str, int, int]]:
    for parts in _records(text, 4):
        if parts[2].isdigit() and parts[3].isdigit():
            yield parts[0], int(parts[2]), int(parts[3])


def _groups(text: bytes | None) -> Iterator[tuple[str, int]]:
    for parts in _records(text, 3):
        if parts[2].isdigit():
            yield parts[0], int(parts[2])


def resolve_user(
    spec: str, passwd: bytes | None, group: bytes | None
) -> ResolvedUser | UnresolvedUser:
    """Resolve a USER (`user`, `uid`, `user:group`, `uid:gid`, `uid:group`, `user:gid`, empty
    for root) the way runc does at container start (libcontainer/user `GetExecUser`):

    * a numeric user is a uid, whether or not `passwd` lists it; a name must be in `passwd`
      (first match wins), else it is an error;
    * the gid is the group part when given (a number, or a name that must be in `group`),
      else the matched passwd entry's gid, else 0.

    `passwd` / `group` are the files' bytes, None when the image has none.
    """
    user, _, group_part = spec.partition(":")
    number = _number(user)
    numeric = number is not None
    wanted_uid = number or 0
    matched: tuple[str, int, int] | None = None
    for entry in _passwd(passwd):
        if entry[1] == wanted_uid if (numeric or not user) else entry[0] == user:
            matched = entry  # first match wins
            break
    if matched is not None:
        uid, gid = matched[1], matched[2]
    elif not user:
        uid, gid = 0, 0
    elif number is not None:
        uid, gid = number, 0
    else:
        where = "its /etc/passwd" if passwd is not None else "it has no /etc/passwd"
        return UnresolvedUser(
            spec, f"user {user!r} is not in the image: no matching entry in {where}"
        )
    if not 0 <= uid <= _MAX_ID:
        return UnresolvedUser(spec, f"uid {uid} is out of range (0..{_MAX_ID})")
    if group_part:
        group_number = _number(group_part)
        if group_number is not None:
            gid = group_number
        else:
            found = next((g for name, g in _groups(group) if name == group_part), None)
            if found is None:
                where = "its /etc/group" if group is not None else "it has no /etc/group"
                return UnresolvedUser(
                    spec, f"group {group_part!r} is not in the image: no matching entry in {where}"
                )
            gid = found
        if not 0 <= gid <= _MAX_ID:
            return UnresolvedUser(spec, f"gid {gid} is out of range (0..{_MAX_ID})")
    return ResolvedUser(user or (matched[0] if matched else "root"), uid, gid)


def resolve_image_user(image: MergedImage, spec: str) -> ResolvedUser | UnresolvedUser:
    """`resolve_user` with the final image's own `/etc/passwd` and `/etc/group`."""
    return resolve_user(spec, image.content("etc/passwd"), image.content("etc/group"))


# ---- everything at once ---------------------------------------------------------------------


def layer_commands(history: Sequence[Mapping[str, Any]], layer_count: int) -> tuple[str, ...]:
    """The `created_by` of each layer: the config's history entries that are not
    `empty_layer`, in order, matched to the layers ("" when history runs out)."""
    commands = [str(h.get("created_by", "")) for h in history if not h.get("empty_layer", False)]
    commands += [""] * (layer_count - len(commands))
    return tuple(commands[:layer_count])


@dataclass(frozen=True, slots=True)
class LayerStats:
    """One layer in the analysis: position (0 is the bottom), what made it, its size (sum of
    its tar entries' sizes, as Dive counts), its changes and the wasted bytes it holds."""

    position: int
    digest: str
    created_by: str
    size: int
    added: int
    changed: int
    removed: int
    wasted_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "createdBy": self.created_by,
            "size": self.size,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "wastedBytes": self.wasted_bytes,
        }


@dataclass(frozen=True, slots=True)
class LayerAnalysis:
    """Everything the layers say about an image (`facts.layerAnalysis` in JSON)."""

    efficiency: float
    wasted_bytes: int
    user_wasted_percent: float | None
    layers: tuple[LayerStats, ...]
    top_wasted: tuple[WastedPath, ...]
    cache_files: tuple[CacheFile, ...]
    setuid: tuple[str, ...]
    world_writable: tuple[str, ...]
    unreadable_by_others: tuple[str, ...]

    def clipped(self, limit: int) -> LayerAnalysis:
        """The same analysis with each path list cut to `limit` entries (the verdict cache and
        the reports keep the first ones; a million setuid files need not all be named)."""
        return dataclasses.replace(
            self,
            top_wasted=self.top_wasted[:limit],
            cache_files=self.cache_files[:limit],
            setuid=self.setuid[:limit],
            world_writable=self.world_writable[:limit],
            unreadable_by_others=self.unreadable_by_others[:limit],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "efficiency": self.efficiency,
            "wastedBytes": self.wasted_bytes,
            "userWastedPercent": self.user_wasted_percent,
            "layers": [layer.to_json() for layer in self.layers],
            "topWasted": [w.to_json() for w in self.top_wasted],
            "cacheFiles": [c.to_json() for c in self.cache_files],
            "setuid": list(self.setuid),
            "worldWritable": list(self.world_writable),
            "unreadableByOthers": list(self.unreadable_by_others),
        }


def analyze_layers(
    layers: Sequence[LayerIndex],
    *,
    created_by: Sequence[str] | None = None,
    base_layers: int = 1,
    readable_under: Iterable[str] = (),
    top: int = 10,
    merged: MergedImage | None = None,
) -> LayerAnalysis:
    """The whole analysis of an image's layers (bottom first).

    `created_by`: each layer's command (`layer_commands`); `base_layers`: how many bottom
    layers are the base image (Dive's default is 1) for the user-wasted ratio and for
    build-only junk; `readable_under`: directories whose root-only files are reported;
    `top`: how many wasted paths to list (those with bytes only); `merged`: a
    `merge_layers` result to reuse.
    """
    dive = dive_efficiency(layers, base_layers=base_layers)
    image = merged if merged is not None else merge_layers(layers)
    commands = tuple(created_by or ())
    stats = tuple(
        LayerStats(
            position=i,
            digest=layer.digest,
            created_by=commands[i] if i < len(commands) else "",
            size=layer.content_size,
            added=image.changes[i].added,
            changed=image.changes[i].changed,
            removed=image.changes[i].removed,
            wasted_bytes=dive.layer_wasted[i],
        )
        for i, layer in enumerate(layers)
    )
    return LayerAnalysis(
        efficiency=dive.efficiency,
        wasted_bytes=dive.wasted_bytes,
        user_wasted_percent=dive.user_wasted_percent,
        layers=stats,
        top_wasted=tuple(w for w in dive.inefficiencies if w.bytes > 0)[:top],
        cache_files=cache_files(image, base_layers=base_layers),
        setuid=setuid_files(image),
        world_writable=world_writable_files(image),
        unreadable_by_others=unreadable_by_others(image, readable_under),
    )
