"""Switching an image's user without breaking the app (issue 15, point 1), and dropping setuid.

Setting `USER 65532:65532` on an image that ran as root passes the non-root rule and breaks the
app: a root-owned 0600 config it reads, a root-owned WORKDIR it writes, a named user (`USER
www-data`) replaced by a uid that owns nothing. This module decides what the user becomes and
what must change on disk for it, and writes that change as one small layer, as
`COPY --chown` would have made it. The engine calls it; it does no registry I/O.

1. `choose_user`: the image's USER resolved through its own `/etc/passwd` and `/etc/group`
   (as runc does). A non-root user is kept with its own uid:gid (`www-data` → `33:33`): its
   files are already its own. Root (empty, `root`, `0`, any uid-0 alias such as `toor`)
   switches to the requested numeric user. A name the image does not list is `Unfixable`.
2. `ownership_changes`: when switching from root, what the new user cannot use, and the
   owner and mode that make it usable (see its docstring for the exact rule).
3. `write_ownership_layer`: those paths in one reproducible gzip layer, their content copied
   from the layer blobs that hold them now.
4. `drop_setuid_changes` (the `dropSetuid` fix) and `setuid_report` (when it is off).
5. `ownership_history` / `setuid_history`: the layer's history entry (`imagegate: {…}`).

`plan_user_switch` and `merged_image` wrap 1 and 2 for a runtime config and downloaded blobs;
`as_draft_layer` turns a written layer into the `DraftLayer` an `ImageDraft` takes.

Why a layer and not a rewrite of the lower layers: the lower layers stay byte-identical (they
are mounted across repositories, shared with the source and its base), and the new layer is
small: only the paths that need it. Why bounded: every file in the layer is a second copy of
its bytes; beyond `MAX_PATHS` paths or `MAX_BYTES` bytes the author should set the owner in
the Dockerfile, and the error says how.
"""

from __future__ import annotations

import itertools
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Final

from webhook.errors import RebuildError, Unfixable, UsageError
from webhook.layers.analysis import (
    FinalEntry,
    MergedImage,
    ResolvedUser,
    UnresolvedUser,
    merge_layers,
    resolve_image_user,
)
from webhook.layers.index import LayerEntry, index_layer
from webhook.layers.tarfmt import ZSTD_MAGIC, normalize
from webhook.rebuild.draft import OCI_LAYER_GZIP, DraftLayer, HistoryEntry, history_entry
from webhook.rebuild.fixes import DROP_SETUID, NON_ROOT_USER
from webhook.rebuild.layers import (
    SOURCE_DATE_EPOCH,
    WrittenLayer,
    _key,
    _members,
    _normalized_info,
    gzip_file,
)
from webhook.rebuild.push import BlobSource

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_USER",
    "DROP_SETUID",
    "MAX_BYTES",
    "MAX_PATHS",
    "NON_ROOT_USER",
    "PROTECTED_DIRS",
    "Change",
    "OwnershipLayer",
    "OwnershipTooLarge",
    "UserChoice",
    "UserSwitch",
    "as_draft_layer",
    "choose_user",
    "drop_setuid_changes",
    "layers_needed",
    "merged_image",
    "ownership_changes",
    "ownership_history",
    "paths_in_config",
    "plan_user_switch",
    "setuid_history",
    "setuid_report",
    "write_ownership_layer",
]

DEFAULT_USER: Final = "65532:65532"
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH a container gets when its config sets none (Docker's and containerd's)."""

MAX_PATHS: Final = 10_000
"""At most this many paths in an ownership layer: beyond it the Dockerfile should set owners."""
MAX_BYTES: Final = 256 * 1024 * 1024
"""At most this many bytes of file content copied into an ownership layer."""

PROTECTED_DIRS: Final = frozenset(
    {
        "",  # the root
        "bin",
        "boot",
        "dev",
        "etc",
        "home",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "run",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib32",
        "usr/lib64",
        "usr/libexec",
        "usr/local",
        "usr/local/bin",
        "usr/local/lib",
        "usr/local/sbin",
        "usr/sbin",
        "usr/share",
        "var",
        "var/cache",
        "var/lib",
        "var/log",
        "var/run",
        "var/tmp",
    }
)
"""System directories (relative to `/`) that are never given to the app's user nor scanned as
a whole: chowning `/usr/bin` would let the app rewrite system programs. A *file* named in the
config is still changed where it is (`/etc/app.conf`); `/root`, `/opt`, `/srv` are not here
(apps live there, `WORKDIR /root` is common)."""

_R, _W, _X = 4, 2, 1
_SETID = 0o6000
_MAX_SYMLINKS = 40  # as the kernel's path walk (ELOOP)
_REQUESTED = re.compile(r"^(\d+)(?::(\d+))?$")
_SHOWN = 5  # paths named in an error message


# ---- the user -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserChoice:
    """What the image's USER becomes.

    `user` is the config's new `User` (numeric, so the kubelet's runAsNonRoot can verify
    it); `uid`/`gid` the process's ids and `groups` every gid it has (primary first, then the
    supplementary ones runc adds from `/etc/group`). `switched` is True when the image ran as
    root and now runs as the requested user (its files then need `ownership_changes`); False
    when the image's own non-root user is kept. `name` is the passwd name when the image lists
    the uid, `source` the USER as the image had it, `reason` one sentence for the status.
    """

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str | None
    switched: bool
    source: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "name": self.name,
            "from": self.source,
            "switched": self.switched,
            "reason": self.reason,
        }


def choose_user(merged: MergedImage, image_user: str, requested: str = DEFAULT_USER) -> UserChoice:
    """The user the replacement runs as: the image's own when it is not root, else `requested`.

    `image_user` is the config's `User` (`""`, `root`, `www-data`, `33:33`, `app:staff` …),
    resolved through the image's `/etc/passwd` and `/etc/group` as runc resolves it. A non-root
    result is kept with its own uid:gid, written numerically; when runc would give the named user
    supplementary groups (a name without a group part), the uid is written alone (`33`), since
    runc adds them only when no group is given, and the uid finds the same passwd entry.
    A uid-0 result switches to `requested` (numeric `uid[:gid]`, not 0; `UsageError` otherwise).

    Raises `Unfixable` when the image's USER names a user or group the image does not list (the
    container could not even start), with runc's reason.
    """
    spec = image_user.strip()
    resolved = resolve_image_user(merged, spec)
    if isinstance(resolved, UnresolvedUser):
        raise Unfixable(
            f"the image's USER {spec!r} cannot be resolved: {resolved.reason}. The container "
            "cannot start as it is; set a numeric USER (uid:gid) in the Dockerfile"
        )
    if resolved.uid != 0:
        return _kept(merged, spec, resolved)
    match = _REQUESTED.match(requested.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError(
            f"user {requested!r} must be a numeric non-root uid or uid:gid (for example "
            f"{DEFAULT_USER}): the kubelet's runAsNonRoot cannot verify a name, and uid 0 is root"
        )
    target = resolve_image_user(merged, requested.strip())
    assert isinstance(target, ResolvedUser)  # numeric specs always resolve
    named = _passwd_name(merged, target.uid)
    shown = f"USER {spec!r}" if spec else "no USER"
    return UserChoice(
        user=requested.strip(),
        uid=target.uid,
        gid=target.gid,
        groups=_process_groups(merged, requested.strip(), target, named),
        name=named,
        switched=True,
        source=spec,
        reason=f"the image runs as root ({shown}): switched to {target.uid}:{target.gid}",
    )


def _kept(merged: MergedImage, spec: str, resolved: ResolvedUser) -> UserChoice:
    user_part, _, group_part = spec.partition(":")
    named = user_part if not user_part.isdigit() else _passwd_name(merged, resolved.uid)
    groups = _process_groups(merged, spec, resolved, named)
    by_uid = _passwd_name(merged, resolved.uid)
    alone = not group_part and len(groups) > 1 and by_uid == named
    user = str(resolved.uid) if alone else f"{resolved.uid}:{resolved.gid}"
    return UserChoice(
        user=user,
        uid=resolved.uid,
        gid=resolved.gid,
        groups=groups,
        name=named,
        switched=False,
        source=spec,
        reason=(
            f"USER {spec!r} is {resolved.uid}:{resolved.gid} in the image, not root: kept as "
            f"{user}, the owner of its own files"
        ),
    )


def _passwd_name(merged: MergedImage, uid: int) -> str | None:
    """The first passwd name of `uid` (runc's first match), or None."""
    for parts in _records(merged.content("etc/passwd"), 4):
        if parts[2].isdigit() and int(parts[2]) == uid:
            return parts[0]
    return None


def _records(text: bytes | None, fields: int) -> Iterator[list[str]]:
    for line in (text or b"").decode("utf-8", "replace").splitlines():
        parts = line.strip().split(":")
        if len(parts) >= fields and not parts[0].startswith("#"):
            yield parts


def _process_groups(
    merged: MergedImage, spec: str, user: ResolvedUser, name: str | None
) -> tuple[int, ...]:
    """The gids the process has: the primary one, plus, when `spec` gives no group and the
    user has a passwd name, every `/etc/group` entry listing that name (runc's rule)."""
    gids = [user.gid]
    if name is not None and not spec.partition(":")[2]:
        for parts in _records(merged.content("etc/group"), 4):
            members = {m.strip() for m in parts[3].split(",")}
            if name in members and parts[2].isdigit() and int(parts[2]) not in gids:
                gids.append(int(parts[2]))
    return tuple(gids)


# ---- what the new user cannot use -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One path the ownership layer writes, and why.

    `path` is absolute; `kind` is `file`, `dir` or `hardlink` as written in the new layer.
    `old_*` describe the path as the image has it (`old_mode` None: the path does not exist and
    the layer creates it), `new_*` as the layer writes it. The content and header come from
    layer `layer` (position, bottom 0) at `source` (relative; for a hard-link group, the path
    of the inode's first member in that layer); `layer` None: nothing to copy (a directory the
    layer creates, or a hard link). `link` (absolute) makes this path a hard link to that
    member of the same group in the new layer. `size` is the bytes to copy (0 when unknown).
    """

    path: str
    kind: str
    old_uid: int
    old_gid: int
    old_mode: int | None
    new_uid: int
    new_gid: int
    new_mode: int
    reason: str
    layer: int | None = None
    source: str = ""
    link: str = ""
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        old = None if self.old_mode is None else _owner(self.old_uid, self.old_gid, self.old_mode)
        return {
            "path": self.path,
            "kind": self.kind,
            "from": old,
            "to": _owner(self.new_uid, self.new_gid, self.new_mode),
            "reason": self.reason,
        }


def _owner(uid: int, gid: int, mode: int) -> dict[str, Any]:
    return {"uid": uid, "gid": gid, "mode": f"{mode:04o}"}


class OwnershipTooLarge(Unfixable):
    """The ownership layer would copy more than `MAX_PATHS` paths or `MAX_BYTES` bytes."""


@dataclass
class _Need:
    """What the new user needs at one path (`bits`: r/w/x as in the owner triad) and why."""

    bits: int
    reasons: list[str] = field(default_factory=list)

    def add(self, bits: int, reason: str) -> None:
        self.bits |= bits
        if len(self.reasons) < 3 and reason not in self.reasons:
            self.reasons.append(reason)


@dataclass(frozen=True)
class _User:
    uid: int
    gid: int
    groups: frozenset[int]

    def allows(self, entry: LayerEntry, bits: int) -> bool:
        """The kernel's check: the owner triad for the owner, else the group triad for a
        member of the file's group, else the others triad (only one triad ever counts)."""
        if entry.uid == self.uid:
            have = entry.mode >> 6
        elif entry.gid in self.groups:
            have = entry.mode >> 3
        else:
            have = entry.mode
        return have & bits == bits


def paths_in_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The absolute paths the runtime config names (absolute path → where: `Entrypoint`,
    `Cmd`, `Env NAME`), by this rule:

    * the texts are every element of `Entrypoint` and `Cmd`, and every `Env` value (after the
      first `=`);
    * each text is split on whitespace (a `sh -c` script names its paths inside one element)
      and `'`/`"` are stripped from each word's ends;
    * a word with `=` is taken after its first `=` (`--config='/etc/app.yaml'`, quotes
      stripped again), then split on `:` (`PATH`-like lists);
    * a piece that starts with exactly one `/` is a path (`//host/x` from a URL is not), `/`
      alone is not. Normalised, in order of first mention.

    A path the image does not have is ignored by `ownership_changes`.
    """
    texts: list[tuple[str, str]] = []
    for key in ("Entrypoint", "Cmd"):
        texts += [(key, str(v)) for v in config.get(key) or ()]
    for item in config.get("Env") or ():
        name, _, value = str(item).partition("=")
        texts.append((f"Env {name}", value))
    found: dict[str, str] = {}
    for where, text in texts:
        for word in text.split():
            word = word.strip("'\"")
            head, equals, tail = word.partition("=")
            for piece in (tail if equals else head).strip("'\"").split(":"):
                if piece.startswith("/") and not piece.startswith("//"):
                    path = normalize(piece)
                    if path:
                        found.setdefault("/" + path, where)
    return found


def ownership_changes(
    merged: MergedImage,
    new_uid: int,
    new_gid: int,
    *,
    workdir: str,
    entrypoint: Sequence[str],
    config_paths: Mapping[str, str] | Iterable[str] = (),
    groups: Iterable[int] = (),
    search_path: str = DEFAULT_PATH,
    max_paths: int = MAX_PATHS,
    max_bytes: int = MAX_BYTES,
) -> list[Change]:
    """What uid `new_uid` (gid `new_gid`, supplementary `groups`) cannot use in `merged` that
    the image's root could, and the owner and mode that fix it, sorted by path.

    Where it looks (symlinks followed through the image's own tree, as the kernel would):

    * the **WORKDIR** (`workdir`, `/` when empty): every entry under it, and the directory
      itself must be writable (the app writes its files there);
    * the **entrypoint's directory**: the directory of `entrypoint[0]` (looked up in
      `search_path` when it has no `/`, relative to the WORKDIR when relative), and of every
      other absolute argv element naming an executable file (an init shim's or a shell's child,
      `/app/run.sh`): every entry under it;
    * the **paths named in the config** (`config_paths`, see `paths_in_config`): a file is
      checked itself, a directory with everything under it;
    * every **ancestor** of those must be searchable (x), and a symlink met under a scanned
      directory has its target checked (a directory target: once, without following its own
      symlinks further).

    A directory in `PROTECTED_DIRS` (`/`, `/usr/bin`, `/etc` …) is never scanned as a whole nor
    changed: as a WORKDIR it is not made writable (an app writing to `/` needs its Dockerfile
    fixed), as an ancestor that uid cannot search it is `Unfixable`.

    What it needs, by the kernel's rule (owner triad, else group triad, else others triad):
    a directory r-x (the WORKDIR rwx, an ancestor x); a file r, and x as well when any x bit is
    set. Devices, fifos and symlinks need nothing (a symlink's own mode is never checked).

    What it changes, as `COPY --chown=uid:gid` would: owner and group become `new_uid:new_gid`;
    the mode is kept, plus the owner bits that are needed (u+r, u+x, the WORKDIR u+rwx); a file
    loses setuid/setgid as the kernel's chown clears them. A hard link's whole visible group
    (same inode) changes with it, written as one inode.

    Raises `OwnershipTooLarge` beyond `max_paths` paths or `max_bytes` bytes of files.
    """
    user = _User(new_uid, new_gid, frozenset({new_gid, *groups}))
    named = (
        dict(config_paths) if isinstance(config_paths, Mapping) else {p: "" for p in config_paths}
    )
    wd = _resolve(merged, workdir or "/") or ""
    scan = _Scan(merged, user)
    if wd not in PROTECTED_DIRS:
        scan.root(wd, f"under the WORKDIR /{wd}")
        scan.need(wd, _R | _W | _X, f"the WORKDIR /{wd}, where the app writes")
    for program in _programs(merged, entrypoint, wd, search_path):
        directory = posixpath.dirname(program)
        if directory not in PROTECTED_DIRS:
            scan.root(directory, f"under the entrypoint's directory /{directory}")
        scan.named(program, "the entrypoint")
    for path, where in named.items():
        scan.named(path, f"named in the config ({where})" if where else "named in the config")
    scan.walk()
    return scan.changes(max_paths, max_bytes)


def _resolve(merged: MergedImage, path: str, base: str = "") -> str | None:
    """`path` (absolute, or relative to `base`) with every symlink followed, as a relative
    path in the image; None for a loop (more than 40 links). The result may not exist."""
    parts = deque(path.split("/") if path.startswith("/") else [*base.split("/"), *path.split("/")])
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        final = merged.get("/".join((*done, name)))
        if final is not None and final.entry.kind == "symlink":
            hops += 1
            if hops > _MAX_SYMLINKS:
                return None
            target = final.entry.linkname
            if target.startswith("/"):
                done = []
            parts.extendleft(reversed(target.split("/")))
            continue
        done.append(name)
    return "/".join(done)


def _programs(
    merged: MergedImage, argv: Sequence[str], workdir: str, search_path: str
) -> list[str]:
    """The programs `argv` names (relative, unresolved last component): `argv[0]` (from
    `search_path` when it has no `/`), and every other absolute element that is an executable
    file in the image (what a shim or a shell runs)."""
    found: list[str] = []
    for position, word in enumerate(argv):
        if position == 0 and "/" not in word:
            candidates = [posixpath.join(d, word) for d in search_path.split(":") if d]
        elif position == 0 or word.startswith("/"):
            candidates = [word]
        else:
            continue
        for candidate in candidates:
            resolved = _resolve(merged, candidate, workdir)
            final = merged.get(resolved) if resolved else None
            if final is not None and final.entry.kind in ("file", "hardlink"):
                if position == 0 or final.entry.mode & 0o111:
                    parent = _resolve(merged, posixpath.dirname(candidate), workdir) or ""
                    found.append(posixpath.join(parent, posixpath.basename(candidate)))
                break
    return found


class _Scan:
    """The walk of `ownership_changes`: roots to scan, paths to check, what each path needs."""

    def __init__(self, merged: MergedImage, user: _User) -> None:
        self.merged = merged
        self.user = user
        self.roots: dict[str, str] = {}  # directory (resolved) → reason
        self.needs: dict[str, _Need] = {}
        self.blocked: list[str] = []
        self.links: dict[tuple[int, str], list[str]] = {}  # (layer, first path) → link paths
        self.outside: list[str] = []  # checked files that may lie outside every root

    def root(self, directory: str, reason: str) -> None:
        self.roots.setdefault(directory, reason)

    def need(self, path: str, bits: int, reason: str) -> None:
        self.needs.setdefault(path, _Need(0)).add(bits, reason)

    def check(self, entry: LayerEntry, bits: int, reason: str) -> None:
        """`need`, kept only when `entry` does not already allow it (a scan of a million
        readable files keeps nothing)."""
        if entry.path in self.needs or not self.user.allows(entry, bits):
            self.need(entry.path, bits, reason)

    def named(self, path: str, reason: str) -> None:
        """A path the app uses: its target checked, a directory scanned (unless protected)."""
        resolved = _resolve(self.merged, "/" + path.lstrip("/"))
        if resolved is None:
            return
        final = self.merged.get(resolved)
        if final is None:
            return
        if final.entry.kind == "dir":
            if resolved not in PROTECTED_DIRS:
                self.root(resolved, f"{reason}: /{resolved}")
        elif final.entry.kind in ("file", "hardlink"):
            self.need(resolved, _file_bits(final.entry), reason)
            self.outside.append(resolved)

    def walk(self) -> None:
        """One pass over the image: check every entry under a root, remember hard links and
        the symlinks to follow; then a second pass for the directories those symlinks name."""
        followed = self._pass(self._under(self.roots))
        fresh = {d: r for d, r in followed.items() if not self._covered(d)}
        if fresh:
            self.roots.update(fresh)
            self._pass(self._under(fresh), follow=False)
        for path in [*self.roots, *(p for p in self.outside if not self._covered(p))]:
            self._ancestors(path)

    def _under(self, roots: Mapping[str, str]) -> list[tuple[str, str]]:
        return sorted(roots.items(), key=lambda item: -len(item[0]))  # deepest reason first

    def _covered(self, path: str) -> bool:
        return any(_within(path, r) for r in self.roots)

    def _pass(self, roots: list[tuple[str, str]], follow: bool = True) -> dict[str, str]:
        followed: dict[str, str] = {}
        for final in self.merged.entries():
            entry = final.entry
            if entry.kind == "hardlink" and follow:
                self.links.setdefault((final.layer, entry.linkname), []).append(final.path)
            reason = next((r for d, r in roots if _within(final.path, d)), None)
            if reason is None:
                continue
            if entry.kind == "dir":
                self.check(entry, _R | _X, reason)
            elif entry.kind in ("file", "hardlink"):
                self.check(entry, _file_bits(entry), reason)
            elif entry.kind == "symlink" and follow:
                target = _resolve(self.merged, "/" + final.path)
                found = self.merged.get(target) if target else None
                if target is None or found is None or self._covered(target):
                    continue
                why = f"the target of the symlink /{final.path} ({reason})"
                if found.entry.kind == "dir" and target not in PROTECTED_DIRS:
                    followed.setdefault(target, why)
                elif found.entry.kind in ("file", "hardlink"):
                    self.need(target, _file_bits(found.entry), why)
                    self.outside.append(target)
        return followed

    def _ancestors(self, path: str) -> None:
        parts = path.split("/") if path else []
        for depth in range(len(parts)):
            ancestor = "/".join(parts[:depth])
            self.need(ancestor, _X, f"on the way to /{path}")

    def changes(self, max_paths: int, max_bytes: int) -> list[Change]:
        changes: dict[str, Change] = {}
        over = 0
        for path, need in self.needs.items():
            final = self.merged.get(path)
            entry = final.entry if final is not None else None
            if entry is None:
                if need.bits & _W == 0:
                    continue  # an implied directory: extraction makes it 0755 root
                entry = LayerEntry(path, "dir", 0, 0o755, 0, 0)  # the WORKDIR, made here
            if self.user.allows(entry, need.bits):
                continue
            if path in PROTECTED_DIRS:
                self.blocked.append(_shown(entry, need))
                continue
            if len(changes) >= max_paths:
                over += 1
                continue
            changes["/" + path] = self._change(final, entry, need)
        if self.blocked:
            raise Unfixable(
                f"uid {self.user.uid} cannot use {', '.join(self.blocked[:_SHOWN])}, system "
                "directories imagegate never gives to the app's user: make them searchable "
                "(chmod o+rx) in the Dockerfile, or set the USER there"
            )
        _add_link_groups(self.merged, changes, self.links)
        _check_bounds(changes.values(), over, max_paths, max_bytes)
        return sorted(changes.values(), key=lambda c: _key(c.path[1:]))

    def _change(self, final: FinalEntry | None, entry: LayerEntry, need: _Need) -> Change:
        owner_bits = need.bits << 6
        mode = _perm(entry) | owner_bits
        if entry.kind != "dir":
            mode &= ~_SETID
        what = _missing(entry, need.bits, self.user)
        reason = f"{need.reasons[0]}: uid {self.user.uid} cannot {what}"
        kind = "dir" if entry.kind == "dir" else "file"
        layer, source = (final.layer, final.path) if final is not None else (None, "")
        if entry.kind == "hardlink":
            source = entry.linkname
        return Change(
            path="/" + entry.path,
            kind=kind,
            old_uid=entry.uid,
            old_gid=entry.gid,
            old_mode=_perm(entry) if final is not None else None,
            new_uid=self.user.uid,
            new_gid=self.user.gid,
            new_mode=mode,
            reason=reason,
            layer=layer,
            source=source,
            size=entry.size if entry.kind == "file" else _target_size(self.merged, final),
        )


def _within(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory + "/")


def _perm(entry: LayerEntry) -> int:
    """The permission bits of a tar mode (Go's tar writer adds the file type: 0o100644)."""
    return entry.mode & 0o7777


def _file_bits(entry: LayerEntry) -> int:
    return _R | (_X if entry.mode & 0o111 else 0)


def _missing(entry: LayerEntry, bits: int, user: _User) -> str:
    words = {_R: "read" if entry.kind != "dir" else "list", _W: "write", _X: "execute"}
    if entry.kind == "dir":
        words[_X] = "enter"
    lacking = [w for b, w in words.items() if bits & b and not user.allows(entry, b)]
    return " or ".join(lacking) + " it"


def _shown(entry: LayerEntry, need: _Need) -> str:
    return f"/{entry.path} ({entry.uid}:{entry.gid} {_perm(entry):04o}, {need.reasons[0]})"


def _target_size(merged: MergedImage, final: FinalEntry | None) -> int:
    """A hard link's bytes: its target's, when the target path still shows that inode."""
    if final is None or final.entry.kind != "hardlink":
        return 0
    target = merged.get(final.entry.linkname)
    if target is None or target.layer != final.layer or target.entry.kind != "file":
        return 0
    return target.entry.size


def _add_link_groups(
    merged: MergedImage, changes: dict[str, Change], links: Mapping[tuple[int, str], list[str]]
) -> None:
    """Give each changed hard-link group's other visible members the same change, and make
    the group one inode in the new layer: its first path (by sort order) carries the content,
    the others link to it (chown changes an inode, so every name of it changes)."""
    groups: dict[tuple[int, str], list[str]] = {}
    for change in changes.values():
        if change.kind != "file" or change.layer is None:
            continue
        identity = (change.layer, change.source)
        names = {change.path[1:], *links.get(identity, ())}
        first = merged.get(change.source)
        if first is not None and first.layer == change.layer and first.entry.kind == "file":
            names.add(change.source)
        if len(names) > 1:
            groups[identity] = sorted(names, key=_key)
    for (layer, source), members in groups.items():
        paths = ["/" + m for m in members]
        template = next(changes[p] for p in paths if p in changes)
        size = max(changes[p].size for p in paths if p in changes)
        carrier = paths[0]
        for path in paths:
            final = merged.get(path)
            if final is None:  # pragma: no cover - members are visible entries
                continue
            entry = final.entry
            reason = (
                changes[path].reason
                if path in changes
                else f"shares its inode with {template.path} ({template.reason})"
            )
            changes[path] = replace(
                template,
                path=path,
                old_uid=entry.uid,
                old_gid=entry.gid,
                old_mode=_perm(entry),
                reason=reason,
                kind="file" if path == carrier else "hardlink",
                layer=layer if path == carrier else None,
                source=source if path == carrier else "",
                link="" if path == carrier else carrier,
                size=size if path == carrier else 0,
            )


def _check_bounds(
    changes: Iterable[Change], over: int, max_paths: int, max_bytes: int, copied: int = 0
) -> None:
    """OwnershipTooLarge when `changes` (and `over` more paths not kept) exceed the bounds;
    `copied` is the bytes actually read, when known (it replaces the sizes the index gave)."""
    listed = list(changes)
    count = len(listed) + over
    size = copied or sum(c.size for c in listed)
    if count <= max_paths and size <= max_bytes:
        return
    top = Counter(posixpath.dirname(c.path) for c in listed).most_common(3)
    where = ", ".join(f"{d} ({n:,})" for d, n in top)
    user = _User(listed[0].new_uid, listed[0].new_gid, frozenset())
    raise OwnershipTooLarge(
        f"switching to uid {user.uid} needs {count:,} paths ({size:,} bytes of files) copied "
        f"into a layer with a new owner, over the limit of {max_paths:,} paths and "
        f"{max_bytes:,} bytes (every copy doubles those bytes); most are in {where}. Give "
        f"them to the user in the Dockerfile instead (`COPY --chown={user.uid}:{user.gid}`, or "
        f"`chown -R {user.uid}:{user.gid}` in the RUN that makes them, or `chmod -R o+rX`) "
        f"and set `USER {user.uid}:{user.gid}` there"
    )


# ---- setuid / setgid ------------------------------------------------------------------------


def drop_setuid_changes(merged: MergedImage, *, skip: Iterable[str] = ()) -> list[Change]:
    """`dropSetuid`: every setuid/setgid file loses those bits (owner, content, mtime and
    other bits kept), hard-link groups as one inode. `skip`: absolute paths another change
    already writes (a chown clears the bits itself), so the two layers never overlap."""
    skipped = set(skip)
    changes: dict[str, Change] = {}
    links: dict[tuple[int, str], list[str]] = {}
    for final in merged.entries():
        entry = final.entry
        if entry.kind == "hardlink":
            links.setdefault((final.layer, entry.linkname), []).append(final.path)
        if entry.kind not in ("file", "hardlink") or not entry.mode & _SETID:
            continue
        path = "/" + final.path
        if path in skipped:
            continue
        bits = " and ".join(
            b for b, m in (("setuid", 0o4000), ("setgid", 0o2000)) if entry.mode & m
        )
        changes[path] = Change(
            path=path,
            kind="file",
            old_uid=entry.uid,
            old_gid=entry.gid,
            old_mode=_perm(entry),
            new_uid=entry.uid,
            new_gid=entry.gid,
            new_mode=_perm(entry) & ~_SETID,
            reason=(
                f"{bits} {entry.uid}:{entry.gid}: it would run as its owner whatever the "
                "container's user is"
            ),
            layer=final.layer,
            source=entry.linkname if entry.kind == "hardlink" else final.path,
            size=entry.size if entry.kind == "file" else _target_size(merged, final),
        )
    _add_link_groups(merged, changes, links)
    for path in skipped & set(changes):  # pragma: no cover - a group member chowned apart
        del changes[path]
    return sorted(changes.values(), key=lambda c: _key(c.path[1:]))


def setuid_report(merged: MergedImage) -> list[dict[str, Any]]:
    """The setuid/setgid files and what `dropSetuid` would make of them, for the status when
    the fix is off (they are reported, never kept without a word)."""
    return [c.to_json() for c in drop_setuid_changes(merged)]


# ---- the layer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnershipLayer:
    """An ownership (or setuid) layer written by `write_ownership_layer`: the blob (`layer`:
    path, digest, diff_id, size) and the changes it makes, for the status."""

    layer: WrittenLayer
    changes: tuple[Change, ...]

    @property
    def path(self) -> Path:
        return self.layer.path

    @property
    def digest(self) -> str:
        return self.layer.digest

    @property
    def diff_id(self) -> str:
        return self.layer.diff_id

    @property
    def size(self) -> int:
        return self.layer.size

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path the layer changes (absolute, sorted)."""
        return tuple(c.path for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "count": len(self.changes),
            "changes": [c.to_json() for c in self.changes],
        }


def layers_needed(changes: Sequence[Change], merged: MergedImage) -> set[int]:
    """The layer positions whose blobs `write_ownership_layer` reads for `changes` (the
    changed paths' and their parents'): download only those."""
    return {c.layer for c in [*changes, *_parents(changes, merged)] if c.layer is not None}


def _parents(changes: Sequence[Change], merged: MergedImage) -> list[Change]:
    """Every parent directory of a changed path that is not changed itself, as it is.

    Written because a runtime may not look below: Docker's layer applier makes a parent the
    layer lacks as a new 0755 root directory in the layer's own tree, and overlayfs shows the
    upper directory's owner and mode, so `/var/www` (0750, 33:33) would become 0755 root. A
    parent no layer wrote (implied) is written as extraction makes it: 0755 root."""
    changed = {c.path for c in changes}
    parents: dict[str, Change] = {}
    for change in changes:
        parts = change.path[1:].split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            if path in changed or path in parents:
                continue
            final = merged.get(path)
            if final is not None and final.entry.kind != "dir":
                continue  # pragma: no cover - a changed path's parents are directories
            entry = final.entry if final is not None else LayerEntry(path, "dir", 0, 0o755, 0, 0)
            parents[path] = Change(
                path, "dir", entry.uid, entry.gid, _perm(entry), entry.uid, entry.gid, _perm(entry),
                reason="the parent of a changed path, unchanged",
                layer=final.layer if final is not None else None,
                source=final.path if final is not None else "",
            )  # fmt: skip
    return list(parents.values())


@dataclass
class _Picked:
    member: tarfile.TarInfo
    spool: Path | None = None


def write_ownership_layer(
    changes: Sequence[Change],
    layer_blobs: Sequence[Path] | Mapping[int, Path],
    out_dir: Path,
    *,
    merged: MergedImage,
    name: str = "ownership",
    max_paths: int = MAX_PATHS,
    max_bytes: int = MAX_BYTES,
) -> OwnershipLayer:
    """Write `changes` as one gzip layer `out_dir/<name>.tar.gz`, as `COPY --chown` makes it.

    `layer_blobs`: the image's layer blobs (gzip, zstd or plain tar) by position, bottom 0
    (a mapping needs only `layers_needed(changes, merged)`); `merged` the image they make (the
    one the changes were found in). Each changed path is taken from the layer the change
    names, as that layer's *last* member of that path (the one the image shows): its header
    (mtime, xattrs) and content, with the new owner and mode. Directories are written as
    directory entries (their children stay where they are); a hard-link group as its first path
    with the content and the others linking to it; no symlink is ever written (access goes
    through the target, whose own change is here). Every parent directory of a changed path is
    written too, exactly as the image has it (see `_parents` for why).

    Reproducible: entries sorted by path (component by component), mtimes from the source
    entries (`SOURCE_DATE_EPOCH` for a directory the layer creates), no user/group names, gzip
    mtime 0, so the same changes and blobs give the same digest. Blobs are streamed once each
    and contents spooled to a scratch directory under `out_dir`, removed after.

    Raises `OwnershipTooLarge` beyond `max_paths` / `max_bytes` (counted as the bytes are
    read), `RebuildError` when a blob lacks a path the change names (blobs and analysis do not
    match) or is unreadable, `ValueError` for no changes at all (nothing to write).
    """
    if not changes:
        raise ValueError("no changes: there is no ownership layer to write")
    _check_bounds(changes, 0, max_paths, max_bytes)
    blobs = dict(layer_blobs) if isinstance(layer_blobs, Mapping) else dict(enumerate(layer_blobs))
    entries = [*changes, *_parents(changes, merged)]
    wanted: dict[int, dict[str, list[Change]]] = {}
    for change in entries:
        if change.layer is not None:
            wanted.setdefault(change.layer, {}).setdefault(change.source, []).append(change)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ownership-", dir=out_dir) as scratch:
        picked: dict[tuple[int, str], _Picked] = {}
        copied = 0
        for position in sorted(wanted):
            blob = blobs.get(position)
            if blob is None:
                raise RebuildError(f"the blob of layer {position} was not given")
            copied = _pick(blob, position, wanted[position], Path(scratch), picked, copied)
            _check_bounds(changes, 0, max_paths, max_bytes, copied)
        plain = Path(scratch) / "layer.tar"
        _write_tar(plain, sorted(entries, key=lambda c: _key(c.path[1:])), picked)
        written = gzip_file(plain, out_dir / f"{name}.tar.gz")
    ordered = tuple(sorted(changes, key=lambda c: _key(c.path[1:])))
    return OwnershipLayer(written, ordered)


def _open_tar(blob: Path) -> tuple[IO[bytes], tarfile.TarFile]:
    """A stream-mode tar over `blob` (gzip and plain by tarfile, zstd by `zstandard`)."""
    raw = blob.open("rb")
    try:
        stream: IO[bytes] = raw
        if raw.read(4) == ZSTD_MAGIC:
            raw.seek(0)
            import zstandard  # imported here, as only zstd layers need it

            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        else:
            raw.seek(0)
        return raw, tarfile.open(fileobj=stream, mode="r|*")
    except BaseException:
        raw.close()
        raise


def _pick(
    blob: Path,
    position: int,
    wanted: Mapping[str, list[Change]],
    scratch: Path,
    picked: dict[tuple[int, str], _Picked],
    copied: int,
) -> int:
    """Stream layer `position`'s blob once and keep the last member of each wanted path
    (content spooled); returns the bytes copied so far."""
    seen: dict[str, _Picked] = {}
    numbers = itertools.count()
    try:
        raw, tar = _open_tar(blob)
        with raw, tar:
            for member in _members(tar):
                name = normalize(member.name)
                if name not in wanted:
                    continue
                previous = seen.pop(name, None)
                if previous is not None and previous.spool is not None:
                    copied -= previous.member.size
                    previous.spool.unlink()
                choice = _Picked(member)
                if member.isreg():
                    choice.spool = scratch / f"{position}-{next(numbers)}"
                    data = tar.extractfile(member)
                    assert data is not None  # regular members always have data
                    with data, choice.spool.open("wb") as out:
                        shutil.copyfileobj(data, out)
                    copied += member.size
                seen[name] = choice
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise RebuildError(f"cannot read layer {position} ({blob.name}): {exc}") from None
    for source, changes in wanted.items():
        found = seen.get(source)
        want_dir = changes[0].kind == "dir"
        if found is None or found.member.isdir() != want_dir or found.member.islnk():
            what = "no such entry" if found is None else "another kind of entry"
            raise RebuildError(
                f"layer {position} ({blob.name}) has {what} at /{source}, which the layer "
                "analysis found there: the blobs given are not the image's layers"
            )
        picked[(position, source)] = found
    return copied


def _write_tar(
    out: Path, changes: Sequence[Change], picked: Mapping[tuple[int, str], _Picked]
) -> None:
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        mtimes: dict[str, float] = {}
        for change in changes:
            rel = change.path[1:]
            found = picked.get((change.layer, change.source)) if change.layer is not None else None
            if found is not None:
                info = _normalized_info(found.member, rel)
            else:
                info = tarfile.TarInfo(rel)
                info.type = tarfile.DIRTYPE if change.kind == "dir" else tarfile.LNKTYPE
                info.mtime = mtimes.get(change.link, SOURCE_DATE_EPOCH)
            if change.link:
                info.type, info.linkname, info.size = tarfile.LNKTYPE, change.link[1:], 0
            info.uid, info.gid, info.mode = change.new_uid, change.new_gid, change.new_mode
            mtimes[change.path] = info.mtime
            if found is not None and found.spool is not None and not change.link:
                with found.spool.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
            tar.members.clear()  # type: ignore[attr-defined]


# ---- provenance and the draft ---------------------------------------------------------------


def ownership_history(created: str, choice: UserChoice, layer: OwnershipLayer) -> HistoryEntry:
    """The ownership layer's history entry:
    `imagegate: {"fix": "nonRootUser", "user": "65532:65532", "from": "", "chowned": 3}`
    (`from`: the image's USER, empty when it had none)."""
    details = {"user": choice.user, "from": choice.source, "chowned": len(layer.changes)}
    return history_entry(created, NON_ROOT_USER, details, empty_layer=False)


def setuid_history(created: str, layer: OwnershipLayer) -> HistoryEntry:
    """The setuid layer's history entry: `imagegate: {"fix": "dropSetuid", "cleared": 2}`."""
    return history_entry(created, DROP_SETUID, {"cleared": len(layer.changes)}, empty_layer=False)


def as_draft_layer(layer: OwnershipLayer, history: HistoryEntry) -> DraftLayer:
    """The written layer as an `ImageDraft` layer (uploaded from its file on publish)."""
    return DraftLayer(
        {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size},
        layer.diff_id,
        BlobSource(layer.digest, file=layer.path),
        (history,),
    )


def merged_image(
    blobs: Sequence[Path],
    layers: Sequence[DraftLayer],
    *,
    max_bytes: int = 64 * 1024**3,
    spill_dir: Path | None = None,
) -> MergedImage:
    """The final tree of an image from its downloaded layer blobs (bottom first), each
    indexed once and verified against its draft layer's digest and diff_id."""
    indexes = []
    for blob, layer in zip(blobs, layers, strict=True):
        with blob.open("rb") as stream:
            indexes.append(
                index_layer(
                    stream,
                    digest=layer.digest,
                    media_type=str(layer.descriptor.get("mediaType") or ""),
                    max_bytes=max_bytes,
                    diff_id=layer.diff_id,
                    spill_dir=spill_dir,
                )
            )
    return merge_layers(indexes)


@dataclass(frozen=True)
class UserSwitch:
    """`plan_user_switch`'s answer: the user, and the changes its files need (none when the
    image's own user is kept)."""

    choice: UserChoice
    changes: tuple[Change, ...]


def plan_user_switch(
    merged: MergedImage, config: Mapping[str, Any], requested: str = DEFAULT_USER
) -> UserSwitch:
    """`choose_user` and, when it switches from root, `ownership_changes` for the runtime
    `config` (`User`, `WorkingDir`, `Entrypoint` + `Cmd`, `Env` with its `PATH`)."""
    choice = choose_user(merged, str(config.get("User") or ""), requested)
    if not choice.switched:
        return UserSwitch(choice, ())
    env: dict[str, str] = {}
    for item in config.get("Env") or ():
        name, _, value = str(item).partition("=")
        env[name] = value
    argv = [str(a) for a in [*(config.get("Entrypoint") or ()), *(config.get("Cmd") or ())]]
    changes = ownership_changes(
        merged,
        choice.uid,
        choice.gid,
        groups=choice.groups,
        workdir=str(config.get("WorkingDir") or "/"),
        entrypoint=argv,
        config_paths=paths_in_config(config),
        search_path=env.get("PATH", DEFAULT_PATH),
    )
    return UserSwitch(choice, tuple(changes))
