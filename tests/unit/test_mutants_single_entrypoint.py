"""single-entrypoint: the parsers' exact answers, the nesting limit, the exact messages.

test_rule_single_entrypoint.py covers what real images do; `make mutate` showed the option
parsers of init shims, `env` and `exec` could skip one word too many or too few, the nesting
limit could move by one, and the fixes users read could change, all unnoticed. These pin them:
parser tables (what each parser returns for each input), a chain of exactly MAX_DEPTH wrappers
of each kind (passes) and one more (refused), and whole outcomes.
"""

from __future__ import annotations

import pytest

from tests.unit.factories import facts
from webhook.policy.model import Severity, SingleEntrypointRule
from webhook.policy.outcome import RuleOutcome, Violation
from webhook.policy.rules import single_entrypoint as se
from webhook.policy.rules.single_entrypoint import EXEC_FIX, MAX_DEPTH, MAX_SCRIPT_CHARS, ShellCall

LOW = Severity.low
RULE = SingleEntrypointRule(severity=LOW)
SHELL_OK = SingleEntrypointRule(severity=LOW, allow_shell_form=True)
SERVER = "/app/server"


def problem(argv: list[str], rule: SingleEntrypointRule = RULE) -> str | None:
    outcome = se.check(rule, facts(entrypoint=argv), None)
    assert outcome.facts == {"argv": argv}
    if not outcome.violations:
        return None
    [violation] = outcome.violations
    assert (violation.rule, violation.severity) == ("single-entrypoint", LOW)
    return violation.message


def test_a_violation_carries_the_argv_and_the_rules_severity() -> None:
    argv = ["/bin/sh", "-c", "a & b"]
    message = (
        "the shell command 'a & b' chains or backgrounds processes (&): they all share one "
        "container and only the shell gets signals. Run one process per container (split the "
        f"others into sidecars or init containers) and {EXEC_FIX}"
    )
    assert se.check(RULE, facts(entrypoint=argv), None) == RuleOutcome(
        [Violation("single-entrypoint", message, LOW)], {"argv": argv}
    )


# ---- the parsers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "child"),
    [
        ([SERVER], [SERVER]),
        (["--", "-x"], ["-x"]),
        (["-v"], []),
        (["-v", SERVER], [SERVER]),
        (["-v", SERVER, "8080"], [SERVER, "8080"]),
        (["-p", "15", SERVER], [SERVER]),
        (["-v", "-p", "15", SERVER], [SERVER]),
        (["-s", "-g", "--", SERVER], [SERVER]),
    ],
)
def test_an_init_shims_child_is_what_follows_its_options(args: list[str], child: list[str]) -> None:
    assert se._shim_child(args) == child


@pytest.mark.parametrize(
    ("args", "command"),
    [
        ([SERVER], [SERVER]),
        (["-i", SERVER], [SERVER]),
        (["-", "-i", SERVER], [SERVER]),
        (["--", "-x"], ["-x"]),
        (["-u", "FOO", SERVER], [SERVER]),
        (["-iu", "FOO", SERVER], [SERVER]),
        (["-uFOO", SERVER], [SERVER]),
        (["--unset", "FOO", SERVER], [SERVER]),
        (["--unset=FOO", SERVER], [SERVER]),
        (["-u"], []),
        (["-S"], []),
        (["-S/app/server -x"], [SERVER, "-x"]),
        (["-S", "/app/server -x"], [SERVER, "-x"]),
        (["--split-string", "/app/server -x"], [SERVER, "-x"]),
        (["--split-string=/app/server --x=1"], [SERVER, "--x=1"]),
        (["A=1", "B=2", SERVER, "C=3"], [SERVER, "C=3"]),
    ],
)
def test_the_command_env_runs_is_what_follows_its_options_and_assignments(
    args: list[str], command: list[str]
) -> None:
    assert se._env_command(args) == command


def test_env_split_string_is_analysed_up_to_the_script_limit() -> None:
    value = SERVER + " " * (MAX_SCRIPT_CHARS - len(SERVER))
    assert se._env_command(["-S", value]) == [SERVER]
    assert se._env_command(["-S", value + " "]) == (
        f"`env -S` with {MAX_SCRIPT_CHARS + 1:,} characters is too long to analyse"
    )


@pytest.mark.parametrize(
    ("args", "command"),
    [
        ([SERVER], [SERVER]),
        (["-", "x"], ["-", "x"]),
        (["--", "-x"], ["-x"]),
        (["--", SERVER], [SERVER]),
        (["-a", "name", SERVER], [SERVER]),
        (["-cl", "-a", "name", SERVER], [SERVER]),
    ],
)
def test_the_command_exec_runs_is_what_follows_its_options(
    args: list[str], command: list[str]
) -> None:
    assert se._exec_command(args) == command


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["sh", "-", "x.sh", "a"], ShellCall("sh", None, ["x.sh", "a"])),
        (["/bin/bash", "Xrun.sh", "a"], ShellCall("/bin/bash", None, ["Xrun.sh", "a"])),
        (["sh", "-ec", "exec x", "$0"], ShellCall("sh", "exec x", ["$0"])),
        (["busybox", "sh", "-c", "x"], ShellCall("busybox sh", "x", [])),
    ],
)
def test_a_shell_is_parsed_as_it_parses_itself(argv: list[str], call: ShellCall) -> None:
    assert se.parse_shell(argv) == call


@pytest.mark.parametrize(
    ("words", "shown"),
    [(["a" * 120], "a" * 120), (["a" * 121], "a" * 119 + "…"), (["a b"], "'a b'")],
)
def test_shown_commands_are_cut_at_120_characters(words: list[str], shown: str) -> None:
    assert se._shown(words) == shown


# ---- the nesting limit -----------------------------------------------------------------------

# One level of each wrapper the rule looks through, then what it runs.
LEVELS = {
    "init-shim": ["tini", "--"],
    "env": ["env"],
    "busybox": ["busybox"],
    "wrapper-script": ["/docker-entrypoint.sh"],
    "shell-exec": ["sh", "-c", 'exec "$@"', "sh"],
}


@pytest.mark.parametrize("kind", LEVELS)
def test_max_depth_wrappers_are_looked_through(kind: str) -> None:
    assert problem(LEVELS[kind] * MAX_DEPTH + [SERVER]) is None


@pytest.mark.parametrize("kind", LEVELS)
def test_one_wrapper_more_than_max_depth_is_refused(kind: str) -> None:
    message = problem(LEVELS[kind] * (MAX_DEPTH + 1) + [SERVER])
    assert message is not None
    assert message.endswith(
        f"cannot tell what the container runs: more than {MAX_DEPTH} nested wrappers (init "
        f"shims, env, busybox, shells, wrapper scripts): {EXEC_FIX}"
    )


def test_shell_form_is_looked_through_to_max_depth_when_allowed() -> None:
    level = ["sh", "-c", '"$@"', "sh"]
    assert problem(level * MAX_DEPTH + [SERVER], SHELL_OK) is None
    assert f"more than {MAX_DEPTH} nested wrappers" in (
        problem(level * (MAX_DEPTH + 1) + [SERVER], SHELL_OK) or ""
    )


# ---- whole messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            [],
            f"the image has no ENTRYPOINT or CMD, so the container has nothing to run: {EXEC_FIX}",
            id="nothing",
        ),
        pytest.param(["tini", SERVER], None, id="shim-without-dashes"),
        pytest.param(
            ["tini", "--", ""],
            f"the command [''] has no program to run: {EXEC_FIX}",
            id="shim-empty-child",
        ),
        pytest.param(
            ["runsvdir", "/etc/service"],
            "'runsvdir' is a process supervisor: it runs several processes in one container. "
            "Run each process in its own container (sidecars in the same pod), each with its "
            "own exec-form ENTRYPOINT",
            id="supervisor",
        ),
        pytest.param(["busybox"], None, id="busybox-alone"),
        pytest.param(["busybox", "httpd"], None, id="busybox-applet"),
        pytest.param(
            ["busybox", "runsvdir"],
            "'runsvdir' is a process supervisor: it runs several processes in one container. "
            "Run each process in its own container (sidecars in the same pod), each with its "
            "own exec-form ENTRYPOINT",
            id="busybox-supervisor",
        ),
        pytest.param(["busybox", "-run.sh", "runsvdir"], None, id="busybox-option-runs-nothing"),
        pytest.param(
            ["sh", "/docker-entrypoint.sh", "runsvdir"],
            "'/docker-entrypoint.sh' is a wrapper script, which hands over to its arguments "
            "(`exec \"$@\"`), so `runsvdir` is what runs: 'runsvdir' is a process supervisor: it "
            "runs several processes in one container. Run each process in its own container "
            "(sidecars in the same pod), each with its own exec-form ENTRYPOINT",
            id="shell-runs-a-wrapper-script",
        ),
        pytest.param(
            ["sh", "-c", ""], f"the shell command '' runs nothing: {EXEC_FIX}", id="empty-script"
        ),
        pytest.param(["sh", "-c", "exec"], f"bare `exec`: {EXEC_FIX}", id="bare-exec"),
        pytest.param(
            ["sh", "-c", 'exec "$@"'],
            'the shell command \'exec "$@"\' runs its arguments (`"$@"`), but none follow the '
            f"command string and `$0`: {EXEC_FIX}",
            id="exec-arguments-without-any",
        ),
        pytest.param(
            ["sh", "-c", "nginx"],
            "shell form: sh runs as PID 1 and does not forward SIGTERM to 'nginx', so the "
            f"container cannot stop cleanly. {EXEC_FIX}, or start the command with `exec`",
            id="shell-form",
        ),
        pytest.param(
            ["sh", "-c", "Xvfb :99"],
            "shell form: sh runs as PID 1 and does not forward SIGTERM to 'Xvfb', so the "
            f"container cannot stop cleanly. {EXEC_FIX}, or start the command with `exec`",
            id="shell-form-names-the-whole-first-word",
        ),
        pytest.param(
            ["sh", "-c", "2>&1 nginx"],
            "shell form: sh runs as PID 1 and does not forward SIGTERM to 'nginx', so the "
            f"container cannot stop cleanly. {EXEC_FIX}, or start the command with `exec`",
            id="a-leading-redirect-is-not-the-program",
        ),
        pytest.param(
            ["sh", "-c", "&>/dev/null nginx"],
            "shell form: sh runs as PID 1 and does not forward SIGTERM to '>/dev/null', so the "
            f"container cannot stop cleanly. {EXEC_FIX}, or start the command with `exec`",
            id="a-leading-redirect-of-both-is-one-word",
        ),
        pytest.param(["sh", "-c", "exec /app/server\n"], None, id="trailing-newline"),
        pytest.param(
            ["sh", "-c", "PATH=/opt/bin:/usr/bin exec /app/server"], None, id="assignment-colon"
        ),
        pytest.param(
            ["sh", "-c", "a & b; c"],
            "the shell command 'a & b; c' chains or backgrounds processes (&, ;): they all share "
            "one container and only the shell gets signals. Run one process per container "
            f"(split the others into sidecars or init containers) and {EXEC_FIX}",
            id="chain",
        ),
    ],
)
def test_the_message_says_what_runs_and_the_fix(argv: list[str], message: str | None) -> None:
    assert problem(argv) == message


def test_a_script_of_the_limit_is_analysed_and_a_longer_one_refused() -> None:
    script = "exec /app/server" + " " * (MAX_SCRIPT_CHARS - len("exec /app/server"))
    assert problem(["sh", "-c", script]) is None
    longer = script + " "
    assert problem(["sh", "-c", longer]) == (
        f"the shell command {longer[:60]!r}… is {MAX_SCRIPT_CHARS + 1:,} characters, too long "
        f"to analyse (over {MAX_SCRIPT_CHARS:,}): {EXEC_FIX}"
    )
