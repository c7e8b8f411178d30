"""`single-entrypoint`: one process per container, started in exec form.

The process is `(container.command or image Entrypoint) + (container.args or (image Cmd unless
container.command is set))`. Shell form (`sh -c "…"`) makes the shell PID 1, which does not
forward SIGTERM, and `a & b` / `a; b` start several processes. Supervisors run several processes
by design. Tiny init shims (tini, dumb-init) that run one child are fine: the child is checked.
Exec-form scripts (`/docker-entrypoint.sh`) are accepted: what they do is not visible from the
config, and the common ones end in `exec "$@"`.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from webhook.policy.model import SingleEntrypointRule
from webhook.policy.outcome import ContainerContext, RuleOutcome, Violation
from webhook.registry.facts import ImageFacts

RULE = "single-entrypoint"
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh"})
# Shell operators that start more than one process or put one in the background.
CHAIN_OPERATORS = frozenset({";", "&", "&&", "||", "|", "|&", ";;"})
# Shim options that take a value, so the value is not mistaken for the child program.
SHIM_OPTIONS_WITH_VALUE = frozenset({"-p", "-e", "-r", "--rewrite"})
# Redirections whose `&` is not a background job: `2>&1`, `>&2`, `<&0`, `1>&-`, bash `&>file`.
REDIRECT_DUP = re.compile(r"\d*[<>]&(?:\d+|-)")
REDIRECT_ALL = re.compile(r"&>>?")
EXEC_FIX = 'use the exec form, for example ENTRYPOINT ["/app/server", "--port", "8080"]'


def effective_argv(
    entrypoint: list[str] | None, cmd: list[str] | None, container: ContainerContext | None
) -> list[str]:
    """The argv the runtime starts, combining the image config and the pod spec (DESIGN §4)."""
    ctx = container or ContainerContext()
    if ctx.command:
        return [*ctx.command, *(ctx.args or [])]
    return [*(entrypoint or []), *(ctx.args if ctx.args is not None else (cmd or []))]


def check(
    rule: SingleEntrypointRule, facts: ImageFacts, container: ContainerContext | None
) -> RuleOutcome:
    argv = effective_argv(facts.entrypoint, facts.cmd, container)
    found: dict[str, object] = {"argv": argv}
    problem = _problem(rule, argv)
    if problem is None:
        return RuleOutcome(facts=found)
    return RuleOutcome([Violation(RULE, problem, rule.severity)], found)


def _problem(rule: SingleEntrypointRule, argv: list[str]) -> str | None:
    """Why `argv` is not one well-behaved process, or None when it is."""
    if not argv or not argv[0].strip():
        return (
            "the image has no ENTRYPOINT or CMD, so the container has nothing to run: " + EXEC_FIX
        )
    program = argv[0]
    if _listed(program, rule.init_shims):
        child = _shim_child(argv[1:])
        if not child:
            return f"the init shim {program!r} has no program to run: add it after `--`"
        return _problem(rule, child)
    if _listed(program, rule.supervisors):
        return (
            f"{program!r} is a process supervisor: it runs several processes in one container. "
            "Run each process in its own container (sidecars in the same pod), each with its "
            "own exec-form ENTRYPOINT"
        )
    script = shell_script(argv)
    if script is None:
        return None
    return _shell_problem(rule, program, script)


def _shell_problem(rule: SingleEntrypointRule, shell: str, script: str) -> str | None:
    try:
        words = REDIRECT_ALL.sub(">", REDIRECT_DUP.sub(" ", script)).replace("\n", " ; ")
        lexer = shlex.shlex(words, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as err:
        return f"cannot parse the shell command {script!r} ({err}): {EXEC_FIX}"
    while tokens and tokens[-1] == ";":
        tokens.pop()
    operators = sorted({t for t in tokens if t in CHAIN_OPERATORS})
    if operators:
        return (
            f"the shell command {script!r} chains or backgrounds processes "
            f"({', '.join(operators)}): they all share one container and only the shell gets "
            "signals. Run one process per container (split the others into sidecars or init "
            f"containers) and {EXEC_FIX}"
        )
    if not tokens:
        return f"the shell command {script!r} is empty: {EXEC_FIX}"
    if tokens[0] == "exec":
        return _problem(rule, tokens[1:]) if len(tokens) > 1 else f"bare `exec`: {EXEC_FIX}"
    if rule.allow_shell_form:
        return _problem(rule, tokens)
    return (
        f"shell form: {shell} runs as PID 1 and does not forward SIGTERM to {tokens[0]!r}, so "
        f"the container cannot stop cleanly. {EXEC_FIX}, or start the command with `exec`"
    )


def shell_script(argv: list[str]) -> str | None:
    """The script of `sh [-opts] -c SCRIPT`, or None when argv is not shell form."""
    if not argv:
        return None
    if posixpath.basename(argv[0]) not in SHELLS:
        return None
    for index, token in enumerate(argv[1:], start=1):
        if not token.startswith("-") or token == "--":
            return None
        if "c" in token.lstrip("-") and not token.startswith("--"):
            return argv[index + 1] if index + 1 < len(argv) else ""
    return None


def _shim_child(args: list[str]) -> list[str]:
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            return args[index + 1 :]
        if not token.startswith("-"):
            return args[index:]
        index += 2 if token in SHIM_OPTIONS_WITH_VALUE else 1
    return []


def _listed(program: str, names: list[str]) -> bool:
    """A listed path matches the full program path; a listed name matches its basename."""
    base = posixpath.basename(program)
    return any(program == name if "/" in name else base == name for name in names)
