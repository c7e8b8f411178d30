"""The fixes a rebuild can apply, each a function that edits an `ImageDraft`.

Fix names are the `ImageRebuild.spec.fixes` values: `nonRootUser`, `singleEntrypoint`,
`sizeBudget`, `allowedBase`. Each maps to the rule it repairs (`RULE_FIXES`). The functions here
do no I/O: the engine reads what a fix needs (the new base, the squashed layer) and hands it in.

* `nonRootUser`: `set_user`;
* `singleEntrypoint`: `exec_form_entrypoint` (the argv comes from `fix_entrypoint`);
* `allowedBase`: `rebase` onto an approved base (when asked to), then `record_base`;
* `sizeBudget`: `squash` the layers above the base into one.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from typing import Final

from webhook.errors import Unfixable, UsageError
from webhook.policy.model import SingleEntrypointRule
from webhook.policy.rules import single_entrypoint
from webhook.policy.rules.allowed_base import BASE_DIGEST, BASE_NAME
from webhook.rebuild.draft import (
    HISTORY_PREFIX,
    OCI_LAYER_GZIP,
    BaseImage,
    DraftLayer,
    ImageDraft,
    history_entry,
)
from webhook.rebuild.layers import SquashResult
from webhook.rebuild.push import BlobSource
from webhook.registry.facts import ImageFacts

NON_ROOT_USER: Final = "nonRootUser"
DROP_SETUID: Final = "dropSetuid"  # with nonRootUser unless the policy's remediation turns it off
SINGLE_ENTRYPOINT: Final = "singleEntrypoint"
SIZE_BUDGET: Final = "sizeBudget"
ALLOWED_BASE: Final = "allowedBase"
ALL_FIXES: Final = (NON_ROOT_USER, DROP_SETUID, SINGLE_ENTRYPOINT, SIZE_BUDGET, ALLOWED_BASE)

RULE_FIXES: Final = {
    "non-root-user": NON_ROOT_USER,
    "single-entrypoint": SINGLE_ENTRYPOINT,
    "size-budget": SIZE_BUDGET,
    "allowed-base": ALLOWED_BASE,
    "layer-efficiency": SIZE_BUDGET,  # wasted bytes and package caches: the squash drops them
}

DEFAULT_USER: Final = "65532:65532"

SHELLS = single_entrypoint.SHELLS
# Characters whose meaning the exec form cannot reproduce: expansions, globs, redirections,
# subshells, comments. Conservative on purpose: a quoted `*` is refused too.
SHELL_SYNTAX = frozenset("$`*?[]<>(){}~#\n")
SHELL_BUILTINS = frozenset(
    {
        "cd",
        "export",
        "set",
        "unset",
        "source",
        ".",
        "eval",
        "trap",
        "ulimit",
        "umask",
        "wait",
        "read",
        "shift",
        "alias",
        "if",
        "for",
        "while",
        "until",
        "case",
        "[[",
        "!",
    }
)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_NUMERIC_USER = re.compile(r"^(\d+)(?::(\d+))?$")


def normalize_fixes(fixes: list[str]) -> list[str]:
    """Validate fix names and return them in canonical order."""
    unknown = sorted(set(fixes) - set(ALL_FIXES))
    if unknown:
        raise UsageError(f"unknown fix {', '.join(unknown)}: choose from {', '.join(ALL_FIXES)}")
    return [f for f in ALL_FIXES if f in fixes]


def parse_user(user: str) -> str:
    """A numeric, non-root `uid[:gid]` (what `runAsNonRoot` can verify), or UsageError."""
    text = user.strip()
    match = _NUMERIC_USER.match(text)
    if not match:
        raise UsageError(
            f"user {user!r} must be numeric, uid or uid:gid (for example 65532:65532): the "
            "kubelet's runAsNonRoot cannot verify a named user"
        )
    if int(match.group(1)) == 0:
        raise UsageError(f"user {user!r} is uid 0 (root); choose a non-zero uid")
    return text


def exec_argv(script: str) -> list[str]:
    """The exec-form argv equivalent to `sh -c script`, or Unfixable saying why there is none."""
    if "\n" in script.strip():
        raise Unfixable(
            f"the shell command {script!r} has several lines, so it runs several commands: "
            "move them into an entrypoint script that ends with `exec`, or split them"
        )
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError as err:
        raise Unfixable(f"cannot parse the shell command {script!r}: {err}") from err
    while tokens and tokens[-1] == ";":
        tokens.pop()
    operators = sorted({t for t in tokens if t in single_entrypoint.CHAIN_OPERATORS})
    if operators:
        raise Unfixable(
            f"the shell command {script!r} chains or backgrounds processes "
            f"({', '.join(operators)}): that is several processes in one container, which no "
            "config edit can split. Run each process in its own container (sidecars or init "
            "containers), each with an exec-form ENTRYPOINT"
        )
    syntax = sorted(SHELL_SYNTAX & set(script))
    if syntax:
        shown = ", ".join(repr(c) for c in syntax)
        raise Unfixable(
            f"the shell command {script!r} uses shell syntax ({shown}: expansion, globbing, "
            "redirection or subshells) that the exec form cannot express; move it into an "
            "entrypoint script that ends with `exec`"
        )
    if tokens and tokens[0] == "exec":
        tokens = tokens[1:]
        if tokens and tokens[0].startswith("-"):
            raise Unfixable(f"`exec {tokens[0]}` in {script!r} has no exec-form equivalent")
    if not tokens:
        raise Unfixable(f"the shell command {script!r} runs nothing")
    if _ASSIGNMENT.match(tokens[0]):
        raise Unfixable(
            f"the shell command {script!r} sets variables inline ({tokens[0]}); put them in "
            "ENV and use the exec form"
        )
    if tokens[0] in SHELL_BUILTINS:
        raise Unfixable(
            f"the shell command {script!r} starts with the shell builtin {tokens[0]!r}, which "
            "has no program to exec"
        )
    return tokens


def fix_entrypoint(
    facts: ImageFacts, rule: SingleEntrypointRule | None = None
) -> tuple[list[str] | None, list[str] | None]:
    """New (Entrypoint, Cmd) that start one process in exec form, or Unfixable.

    Shell form without shell syntax becomes its argv (`sh -c "exec x y"` → `["x","y"]`); in the
    ENTRYPOINT the CMD is dropped, since `sh -c SCRIPT` only passed it as `$0`, `$1`… which a
    script without `$` never reads. A shell CMD behind an exec ENTRYPOINT (an init shim) is
    rewritten in place. Supervisors, chains and scripts with shell syntax are Unfixable.
    """
    rule = rule or SingleEntrypointRule()
    entrypoint = list(facts.entrypoint or []) or None
    cmd = list(facts.cmd or []) or None
    if entrypoint is None and cmd is None:
        raise Unfixable(
            "the image has no ENTRYPOINT or CMD, so there is no process to turn into exec "
            "form: set an exec-form ENTRYPOINT in its Dockerfile"
        )
    new_entrypoint, new_cmd = entrypoint, cmd
    ep_script = single_entrypoint.shell_script(entrypoint or [])
    cmd_script = single_entrypoint.shell_script(cmd or [])
    if ep_script is not None:
        new_entrypoint, new_cmd = exec_argv(ep_script), None
    elif cmd_script is not None and cmd is not None:
        new_cmd = exec_argv(cmd_script)
    outcome = single_entrypoint.check(
        rule, replace(facts, entrypoint=new_entrypoint, cmd=new_cmd), None
    )
    if outcome.violations:
        raise Unfixable(outcome.violations[0].message)
    return new_entrypoint, new_cmd


# ---- the fixes, on a draft ------------------------------------------------------------------


def set_user(draft: ImageDraft, user: str) -> None:
    """`nonRootUser`: the config's USER becomes `user` (numeric, see `parse_user`)."""
    draft.inner["User"] = user
    draft.note(NON_ROOT_USER, {"user": user})


def exec_form_entrypoint(
    draft: ImageDraft, facts: ImageFacts, rule: SingleEntrypointRule | None = None
) -> None:
    """`singleEntrypoint`: ENTRYPOINT/CMD of the source (`facts`) in exec form, or Unfixable.

    An image that already starts one process in exec form is left as it is (and the fix is not
    counted as applied).
    """
    entrypoint, cmd = fix_entrypoint(facts, rule)
    if (entrypoint, cmd) != (facts.entrypoint, facts.cmd):
        draft.inner["Entrypoint"] = entrypoint
        draft.inner["Cmd"] = cmd
        draft.note(SINGLE_ENTRYPOINT, {"entrypoint": entrypoint, "cmd": cmd})


def rebase_point(draft: ImageDraft, onto: str) -> int:
    """How many of the draft's layers a rebase onto `onto` replaces: its base's, verified as a
    prefix of its own. Unfixable when they are not known."""
    base = draft.base
    if base is None or base.layers is None:
        why = (
            "its base image cannot be identified"
            if base is None
            else f"the layers of its base {base.name} are not a prefix of its own"
        )
        raise Unfixable(
            f"cannot rebase {draft.name} onto {onto}: {why}, so imagegate cannot tell which "
            "layers are the application's"
        )
    return base.layers


def rebase(draft: ImageDraft, onto: ImageDraft, digest: str) -> None:
    """`allowedBase` by rebasing: the base's layers (with their history) become `onto`'s.

    `onto` is the new base's draft (its `name` the reference asked for), `digest` what it
    resolved to. The layers above the old base, and their history, stay as they are.
    """
    keep = rebase_point(draft, onto.name)
    old = draft.base.name if draft.base else None
    below, above = list(onto.layers), draft.layers[keep:]
    if onto.extra_history:  # the new base's history beyond its layers stays below the app's
        if below:
            top = below[-1]
            below[-1] = replace(top, history=(*top.history, *onto.extra_history))
        elif above:
            above[0] = replace(above[0], history=(*onto.extra_history, *above[0].history))
        else:
            draft.extra_history[:0] = onto.extra_history
    draft.layers = [*below, *above]
    draft.base = BaseImage(onto.name, digest, "rebase", len(below))
    draft.note(ALLOWED_BASE, {"rebasedFrom": old, "base": onto.name, "digest": digest})


def record_base(draft: ImageDraft) -> None:
    """`allowedBase`: name the base in the manifest annotations and config labels
    (`org.opencontainers.image.base.name` / `.digest`), the rule's strongest evidence."""
    base = draft.base
    if base is None:
        raise Unfixable(
            f"cannot tell which base {draft.name} was built on, so there is nothing to "
            "record; rebase it onto an approved base instead"
        )
    labels = draft.labels()
    draft.annotations[BASE_NAME] = base.name
    labels[BASE_NAME] = base.name
    if base.digest:
        draft.annotations[BASE_DIGEST] = base.digest
        labels[BASE_DIGEST] = base.digest
    elif BASE_DIGEST in labels:
        del labels[BASE_DIGEST]
    if ALLOWED_BASE not in draft.applied:
        details = {"base": base.name, "evidence": base.evidence}
        draft.note(ALLOWED_BASE, details | ({"digest": base.digest} if base.digest else {}))


def squash(draft: ImageDraft, result: SquashResult) -> None:
    """`sizeBudget`: the layers above the base (`draft.base_layers`) become `result`'s one
    layer, with one history entry; the source history above the base goes with them, the
    other fixes' notes stay (they are provenance, not the squashed layers' history)."""
    start = draft.base_layers
    count = len(draft.layers) - start
    if count <= 0:
        return
    layer = result.layer
    dropped = result.dropped_count
    # layers this rebuild wrote (ownership, setuid) carry their fix's entry: it stays, as a note
    ours = [
        {**h, "empty_layer": True}
        for squashed in draft.layers[start:]
        for h in squashed.history
        if str(h.get("created_by", "")).startswith(HISTORY_PREFIX)
    ]
    draft.notes[:0] = ours
    details = {
        "squashedLayers": count,
        "droppedPaths": dropped,
        "droppedBytes": result.dropped_bytes,
    }
    entry = history_entry(draft.created, SIZE_BUDGET, details, empty_layer=False)
    draft.layers[start:] = [
        DraftLayer(
            {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size},
            layer.diff_id,
            BlobSource(layer.digest, file=layer.path),
            (entry,),
        )
    ]
    draft.extra_history = []
    draft.squashed_layers, draft.dropped_paths = count, dropped
    draft.mark(SIZE_BUDGET)
