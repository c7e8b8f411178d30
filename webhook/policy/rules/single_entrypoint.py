"""`single-entrypoint`: one process per container, started in exec form.

The process is `(container.command or image Entrypoint) + (container.args or (image Cmd unless
container.command is set))`. Shell form (`sh -c "…"`) makes the shell PID 1, which does not
forward SIGTERM, and `a & b` / `a; b` start several processes. Supervisors run several processes
by design. Tiny init shims (tini, dumb-init) that run one child are fine: the child is checked.

What runs is found the way the programs themselves find it:

* Shells (`sh`, `bash`, `ash`, `dash`, `zsh`, `ksh`, `mksh`, by name or path, and `busybox sh`)
  parse options as sh does: clusters (`-ec`, `-xec`), `-o NAME` / `+o NAME` and bash's `-O NAME`
  take the next word (also inside a cluster: `-eo pipefail`), bash's `--rcfile FILE` and
  `--init-file FILE` too, other `--long` options are flags, `-` or `--` ends the options. With
  `-c` the command string is the first operand after the options, then `$0`, `$1`…; `exec "$@"`
  in the command string runs those operands. Without `-c` the first operand is a script file,
  treated as a wrapper script (below).
* `env [-i] [-u NAME] [-C DIR] [-S STRING] [--] [NAME=VALUE…] COMMAND…` runs COMMAND; `env`
  without a command only prints the environment.
* `busybox APPLET ARGS…` is the applet `APPLET ARGS…`.
* Wrapper scripts hand over to their arguments (`exec "$@"`, the convention of the official
  images' `docker-entrypoint.sh`), so their arguments (usually the CMD) are checked as the
  command that runs. A program is a wrapper script when its file name ends in `.sh` or `.bash`,
  contains `entrypoint` (`docker-entrypoint`, `docker-php-entrypoint`), or is `start`, `run` or
  `startup` (with or without an extension). What the script itself does is not visible from
  the config; arguments that are not a command (`-c key=value`) pass. The arguments of any other
  program are its own and are not checked.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from webhook.policy.model import SingleEntrypointRule
from webhook.policy.outcome import ContainerContext, RuleOutcome, Violation
from webhook.registry.facts import ImageFacts

RULE = "single-entrypoint"
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh"})
# Shell operators that start more than one process or put one in the background (`&|` is
# zsh's background-and-disown, one token to the lexer: `a &| b` runs two processes).
CHAIN_OPERATORS = frozenset({";", "&", "&&", "||", "|", "|&", ";;", "&|"})
# Shim options that take a value, so the value is not mistaken for the child program.
SHIM_OPTIONS_WITH_VALUE = frozenset({"-p", "-e", "-r", "--rewrite"})
# Shell option letters that take the next word (`-o errexit`, `+o posix`, bash `-O extglob`),
# and bash's long options that do.
SHELL_OPTIONS_WITH_VALUE = frozenset("oO")
SHELL_LONG_OPTIONS_WITH_VALUE = frozenset({"--rcfile", "--init-file"})
# env options that take a value: -u NAME, -C DIR, -S STRING (and their long forms).
ENV_OPTIONS_WITH_VALUE = frozenset("uCS")
ENV_LONG_OPTIONS_WITH_VALUE = frozenset({"--unset", "--chdir", "--split-string"})
# Wrapper scripts by name (see the module docstring).
WRAPPER_SCRIPT_EXTENSIONS = frozenset({".sh", ".bash"})
WRAPPER_SCRIPT_NAMES = frozenset({"start", "run", "startup"})
# The positional parameters as one word after the shell removed the quotes: `"$@"`, `$*`.
POSITIONAL_PARAMETERS = frozenset({"$@", "${@}", "$*", "${*}"})
# How many wrappers (shims, env, busybox, shells, scripts) deep the rule looks before it gives up.
MAX_DEPTH = 32
# Redirections whose `&` is not a background job: `2>&1`, `>&2`, `<&0`, `1>&-`, bash `&>file`.
REDIRECT_DUP = re.compile(r"\d*[<>]&(?:\d+|-)")
REDIRECT_ALL = re.compile(r"&>>?")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
EXEC_FIX = 'use the exec form, for example ENTRYPOINT ["/app/server", "--port", "8080"]'


@dataclass(frozen=True)
class ShellCall:
    """A shell invocation, parsed as the shell parses its own arguments."""

    shell: str
    """How the message names the shell: `/bin/sh`, `bash`, `busybox sh`."""
    script: str | None
    """The `-c` command string, or None when the shell runs a script file (or reads stdin)."""
    operands: list[str]
    """After the command string: `$0`, `$1`…; without `-c`: the script file, then `$1`…"""


# A command string longer than this is not analysed (and fails): no single-process container
# needs one, and parsing megabytes would hold the webhook for seconds.
MAX_SCRIPT_CHARS = 64 * 1024


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


def _problem(rule: SingleEntrypointRule, argv: list[str], depth: int = 0) -> str | None:
    """Why `argv` is not one well-behaved process, or None when it is."""
    if depth > MAX_DEPTH:
        return (
            f"cannot tell what the container runs: more than {MAX_DEPTH} nested wrappers (init "
            f"shims, env, busybox, shells, wrapper scripts): {EXEC_FIX}"
        )
    if not argv or not argv[0].strip():
        if depth:
            return f"the command {argv!r} has no program to run: {EXEC_FIX}"
        return (
            "the image has no ENTRYPOINT or CMD, so the container has nothing to run: " + EXEC_FIX
        )
    program = argv[0]
    if _listed(program, rule.init_shims):
        child = _shim_child(argv[1:])
        if not child:
            return f"the init shim {program!r} has no program to run: add it after `--`"
        return _problem(rule, child, depth + 1)
    if _listed(program, rule.supervisors):
        return (
            f"{program!r} is a process supervisor: it runs several processes in one container. "
            "Run each process in its own container (sidecars in the same pod), each with its "
            "own exec-form ENTRYPOINT"
        )
    name = posixpath.basename(program)
    if name == "env":
        command = _env_command(argv[1:])
        if isinstance(command, str):
            return command
        return _problem(rule, command, depth + 1) if command else None
    if name == "busybox" and len(argv) > 1 and posixpath.basename(argv[1]) not in SHELLS:
        # `busybox APPLET …` is the applet; `busybox --list` and friends run no program.
        return None if argv[1].startswith("-") else _problem(rule, argv[1:], depth + 1)
    call = parse_shell(argv)
    if call is not None:
        if call.script is not None:
            return _shell_problem(rule, call, depth)
        if call.operands:
            return _wrapper_problem(rule, call.operands[0], call.operands[1:], depth)
        return None
    if is_wrapper_script(program):
        return _wrapper_problem(rule, program, argv[1:], depth)
    return None


def _wrapper_problem(
    rule: SingleEntrypointRule, script: str, args: list[str], depth: int
) -> str | None:
    """A wrapper script ends in `exec "$@"`: its arguments are the command that runs."""
    if not args or not args[0].strip():
        return None
    problem = _problem(rule, args, depth + 1)
    if problem is None:
        return None
    return (
        f'{script!r} is a wrapper script, which hands over to its arguments (`exec "$@"`), '
        f"so `{_shown(args)}` is what runs: {problem}"
    )


def _shell_problem(rule: SingleEntrypointRule, call: ShellCall, depth: int) -> str | None:
    script = call.script or ""
    if len(script) > MAX_SCRIPT_CHARS:  # shlex is slow on megabytes, and blocks the webhook
        return (
            f"the shell command {script[:60]!r}… is {len(script):,} characters, too long to "
            f"analyse (over {MAX_SCRIPT_CHARS:,}): {EXEC_FIX}"
        )
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
    # `NAME=value cmd` sets a variable for cmd; `"$@"` is the operands after `$0`.
    while tokens and ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    positional = call.operands[1:]
    runs_arguments = any(t in POSITIONAL_PARAMETERS for t in tokens)
    tokens = [w for t in tokens for w in (positional if t in POSITIONAL_PARAMETERS else [t])]
    if not tokens:
        return f"the shell command {script!r} runs nothing: {EXEC_FIX}"
    if tokens[0] == "exec":
        command = _exec_command(tokens[1:])
        if command:
            return _problem(rule, command, depth + 1)
        if runs_arguments:
            return (
                f'the shell command {script!r} runs its arguments (`"$@"`), but none follow '
                f"the command string and `$0`: {EXEC_FIX}"
            )
        return f"bare `exec`: {EXEC_FIX}"
    if rule.allow_shell_form:
        return _problem(rule, tokens, depth + 1)
    return (
        f"shell form: {call.shell} runs as PID 1 and does not forward SIGTERM to {tokens[0]!r}, "
        f"so the container cannot stop cleanly. {EXEC_FIX}, or start the command with `exec`"
    )


def parse_shell(argv: list[str]) -> ShellCall | None:
    """`argv` as a shell parses it (`sh [options] [-c STRING [$0 $1…] | FILE $1…]`), or None
    when argv[0] is not a shell (by name or path) or `busybox SHELL`."""
    if not argv:
        return None
    shell, name, rest = argv[0], posixpath.basename(argv[0]), argv[1:]
    if name == "busybox" and rest:
        name = posixpath.basename(rest[0])
        shell, rest = f"busybox {name}", rest[1:]
    if name not in SHELLS:
        return None
    command = False
    index = 0
    while index < len(rest):
        word = rest[index]
        index += 1
        if word in ("-", "--"):
            break
        if word.startswith("--"):
            if word in SHELL_LONG_OPTIONS_WITH_VALUE:
                index += 1
            continue
        if len(word) < 2 or word[0] not in "-+":
            index -= 1
            break
        for letter in word[1:]:
            if letter == "c":
                command = True
            elif letter in SHELL_OPTIONS_WITH_VALUE:
                index += 1
    operands = rest[index:]
    if command:
        return ShellCall(shell, operands[0] if operands else "", operands[1:])
    return ShellCall(shell, None, operands)


def shell_script(argv: list[str]) -> str | None:
    """The command string of `SHELL [options] -c STRING …`, or None when argv is not shell form.

    Only a shell itself: `busybox sh` and `env … sh` are not unwrapped here, so a rebuild that
    replaces the argv by the script's exec form loses neither the applet nor the environment.
    """
    if not argv or posixpath.basename(argv[0]) not in SHELLS:
        return None
    call = parse_shell(argv)
    return call.script if call is not None else None


def is_wrapper_script(program: str) -> bool:
    """Whether `program` is named like an entrypoint script that ends in `exec "$@"`."""
    name = posixpath.basename(program)
    stem, extension = posixpath.splitext(name)
    return (
        extension in WRAPPER_SCRIPT_EXTENSIONS
        or "entrypoint" in name.lower()
        or stem in WRAPPER_SCRIPT_NAMES
    )


def _env_command(args: list[str]) -> list[str] | str:
    """The command `env ARGS` runs ([] when it only prints the environment), or why unknown.

    Options come first (GNU env stops at the first operand), then NAME=VALUE assignments.
    `-S STRING` splits STRING into words that env parses again, as `#!/usr/bin/env -S` does.
    """
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        if word == "--":
            break
        if word == "-":  # the old spelling of -i
            continue
        if not word.startswith("-"):
            index -= 1
            break
        option, value = word, None  # value: the option's argument when it takes one
        if word.startswith("--"):
            option, has_value, attached = word.partition("=")
            if option in ENV_LONG_OPTIONS_WITH_VALUE:
                value = attached if has_value else None
        else:
            for position, letter in enumerate(word[1:], start=1):
                if letter in ENV_OPTIONS_WITH_VALUE:
                    option, value = f"-{letter}", word[position + 1 :] or None
                    break
        takes_value = option in ENV_LONG_OPTIONS_WITH_VALUE or option[1:] in ENV_OPTIONS_WITH_VALUE
        if takes_value and value is None:
            value = args[index] if index < len(args) else ""
            index += 1
        if option in ("-S", "--split-string"):
            if len(value or "") > MAX_SCRIPT_CHARS:
                return f"`env -S` with {len(value or ''):,} characters is too long to analyse"
            try:
                words = shlex.split(value or "")
            except ValueError as err:
                return f"cannot parse `env -S {value}` ({err}): {EXEC_FIX}"
            args, index = [*words, *args[index:]], 0
    while index < len(args) and "=" in args[index]:
        index += 1
    return args[index:]


def _exec_command(args: list[str]) -> list[str]:
    """The command of `exec [-cl] [-a NAME] [--] COMMAND…` (bash's options)."""
    index = 0
    while index < len(args) and args[index].startswith("-") and len(args[index]) > 1:
        word = args[index]
        index += 1
        if word == "--":
            break
        if word.endswith("a"):
            index += 1
    return args[index:]


def _shown(args: list[str], limit: int = 120) -> str:
    text = shlex.join(args)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
