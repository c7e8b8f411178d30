"""single-entrypoint: one process per container, cases from real public images."""

from __future__ import annotations

import pytest

from tests.unit.factories import facts
from webhook.policy.model import SingleEntrypointRule
from webhook.policy.outcome import ContainerContext
from webhook.policy.rules import single_entrypoint
from webhook.policy.rules.single_entrypoint import effective_argv

RULE = SingleEntrypointRule()
SHELL_OK = SingleEntrypointRule(allow_shell_form=True)


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "rule", "passes", "says"),
    [
        pytest.param(["/app/server"], None, RULE, True, "", id="exec-form"),
        pytest.param(
            ["/docker-entrypoint.sh"],
            ["nginx", "-g", "daemon off;"],
            RULE,
            True,
            "",
            id="nginx-entrypoint-script",
        ),
        pytest.param(None, ["python", "app.py"], RULE, True, "", id="cmd-only-exec-form"),
        pytest.param(None, None, RULE, False, "no ENTRYPOINT or CMD", id="no-entrypoint"),
        pytest.param([], [], RULE, False, "no ENTRYPOINT or CMD", id="empty-lists"),
        pytest.param(
            None,
            ["/bin/sh", "-c", "httpd -f & sleep infinity"],
            RULE,
            False,
            "&",
            id="shell-background-job",
        ),
        pytest.param(
            None,
            ["/bin/sh", "-c", "a & b"],
            SHELL_OK,
            False,
            "chains",
            id="chain-refused-even-when-shell-allowed",
        ),
        pytest.param(
            None, ["/bin/sh", "-c", "migrate; serve"], RULE, False, ";", id="shell-sequence"
        ),
        pytest.param(
            None, ["/bin/sh", "-c", "migrate && serve"], RULE, False, "&&", id="shell-and"
        ),
        pytest.param(None, ["/bin/sh", "-c", "gen | serve"], RULE, False, "|", id="shell-pipe"),
        pytest.param(
            None, ["/bin/sh", "-c", "migrate\nserve"], RULE, False, ";", id="shell-newline"
        ),
        pytest.param(
            None,
            ["/bin/sh", "-c", "echo 'a;b'"],
            SHELL_OK,
            True,
            "",
            id="quoted-semicolon-is-not-a-chain",
        ),
        pytest.param(
            None,
            ["/bin/sh", "-c", "node server.js"],
            RULE,
            False,
            "shell form",
            id="shell-form-single-command",
        ),
        pytest.param(
            None, ["/bin/sh", "-c", "node server.js"], SHELL_OK, True, "", id="shell-form-allowed"
        ),
        pytest.param(
            None,
            ["/bin/sh", "-c", "exec node server.js"],
            RULE,
            True,
            "",
            id="shell-form-with-exec",
        ),
        pytest.param(
            None, ["/bin/sh", "-c", "exec /app/server 2>&1"], RULE, True, "", id="stderr-to-stdout"
        ),
        pytest.param(
            None, ["bash", "-c", "exec /app/server &>/dev/null"], RULE, True, "", id="bash-redirect"
        ),
        pytest.param(
            None, ["/bin/sh", "-c", "exec /app/server >&2 <&-"], RULE, True, "", id="fd-duplication"
        ),
        pytest.param(
            None,
            ["/bin/sh", "-c", "/app/a 2>&1 & /app/b"],
            RULE,
            False,
            "&",
            id="redirect-then-job",
        ),
        pytest.param(
            None, ["bash", "-ec", "exec gunicorn app:app"], RULE, True, "", id="bash-ec-exec"
        ),
        pytest.param(
            None,
            ["/bin/sh", "-c", "exec supervisord -n"],
            RULE,
            False,
            "supervisor",
            id="exec-into-supervisor",
        ),
        pytest.param(
            None,
            ["/bin/sh", "-c", "echo 'unterminated"],
            RULE,
            False,
            "cannot parse",
            id="unparseable-shell",
        ),
        pytest.param(
            ["sh", "/entrypoint.sh"], None, RULE, True, "", id="shell-running-a-script-file"
        ),
        pytest.param(
            ["/usr/bin/supervisord", "-n"], None, RULE, False, "supervisor", id="supervisord"
        ),
        pytest.param(["/init"], None, RULE, False, "supervisor", id="s6-overlay-init"),
        pytest.param(
            ["/command/s6-svscan", "/run/service"], None, RULE, False, "supervisor", id="s6-svscan"
        ),
        pytest.param(["/sbin/init"], None, RULE, False, "supervisor", id="systemd-style-init"),
        pytest.param(["/app/init"], None, RULE, True, "", id="path-init-is-not-slash-init"),
        pytest.param(["/sbin/tini", "--"], ["/app/server"], RULE, True, "", id="tini"),
        pytest.param(
            ["tini", "-g", "--", "/app/server"], None, RULE, True, "", id="tini-with-options"
        ),
        pytest.param(
            ["tini", "-p", "SIGTERM", "/app/server"],
            None,
            RULE,
            True,
            "",
            id="tini-option-with-value",
        ),
        pytest.param(
            ["/usr/bin/dumb-init", "--"],
            ["supervisord"],
            RULE,
            False,
            "supervisor",
            id="dumb-init-wrapping-supervisor",
        ),
        pytest.param(["tini", "--"], None, RULE, False, "no program", id="tini-without-child"),
        pytest.param(
            ["tini", "--"], ["/bin/sh", "-c", "a & b"], RULE, False, "&", id="tini-wrapping-chain"
        ),
    ],
)
def test_image_entrypoints(
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    rule: SingleEntrypointRule,
    passes: bool,
    says: str,
) -> None:
    outcome = single_entrypoint.check(rule, facts(entrypoint=entrypoint, cmd=cmd), None)
    assert (not outcome.violations) is passes, outcome.violations
    if says:
        assert says in outcome.violations[0].message


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "ctx", "argv"),
    [
        pytest.param(["/ep"], ["c"], None, ["/ep", "c"], id="image-only"),
        pytest.param(
            ["/ep"], ["c"], ContainerContext(args=("a",)), ["/ep", "a"], id="args-replace-cmd"
        ),
        pytest.param(
            ["/ep"], ["c"], ContainerContext(command=("/x",)), ["/x"], id="command-drops-cmd"
        ),
        pytest.param(
            ["/ep"],
            ["c"],
            ContainerContext(command=("/x",), args=("a",)),
            ["/x", "a"],
            id="command-and-args",
        ),
        pytest.param(["/ep"], ["c"], ContainerContext(args=()), ["/ep"], id="empty-args-clear-cmd"),
    ],
)
def test_effective_argv(
    entrypoint: list[str], cmd: list[str], ctx: ContainerContext | None, argv: list[str]
) -> None:
    assert effective_argv(entrypoint, cmd, ctx) == argv


def test_pod_command_can_fix_a_shell_form_image() -> None:
    image = facts(entrypoint=None, cmd=["/bin/sh", "-c", "a & b"])
    outcome = single_entrypoint.check(RULE, image, ContainerContext(command=("/app/a",)))
    assert not outcome.violations


def test_custom_supervisor_list() -> None:
    rule = SingleEntrypointRule(supervisors=["mysup"])
    assert single_entrypoint.check(rule, facts(entrypoint=["/usr/bin/mysup"]), None).violations
    assert not single_entrypoint.check(rule, facts(entrypoint=["supervisord"]), None).violations


# ---- issue 12 item 5: shells parsed the way sh parses them; env, busybox and wrapper scripts
# are transparent. Each case: (entrypoint, cmd, rule, passes, text the first message contains).

SHELL_OPTION_CASES = [
    pytest.param(
        None, ["sh", "-o", "errexit", "-c", "a & b"], RULE, False, "&", id="sh-o-errexit-c"
    ),
    pytest.param(
        None, ["sh", "+o", "errexit", "-c", "a & b"], RULE, False, "&", id="sh-plus-o-name"
    ),
    pytest.param(
        None,
        ["/bin/bash", "-eo", "pipefail", "-c", "a & b"],
        RULE,
        False,
        "&",
        id="bash-eo-pipefail-dockerfile-shell",
    ),
    pytest.param(
        None,
        ["/bin/bash", "-o", "pipefail", "-o", "nounset", "-c", "a; b"],
        RULE,
        False,
        ";",
        id="bash-two-o-options",
    ),
    pytest.param(
        None, ["bash", "-O", "extglob", "-c", "a | b"], RULE, False, "|", id="bash-shopt-option"
    ),
    pytest.param(None, ["sh", "-ec", "a & b"], RULE, False, "&", id="sh-ec-cluster"),
    pytest.param(None, ["/bin/sh", "-xec", "migrate; serve"], RULE, False, ";", id="sh-xec"),
    pytest.param(None, ["sh", "-c", "-e", "a & b"], RULE, False, "&", id="options-after-c-flag"),
    pytest.param(None, ["sh", "-c", "--", "a & b"], RULE, False, "&", id="double-dash-after-c"),
    pytest.param(None, ["bash", "--login", "-c", "a & b"], RULE, False, "&", id="bash-login-c"),
    pytest.param(
        None,
        ["bash", "--noprofile", "--norc", "-c", "a && b"],
        RULE,
        False,
        "&&",
        id="bash-noprofile-norc",
    ),
    pytest.param(
        None,
        ["bash", "--rcfile", "/etc/app.rc", "-c", "a & b"],
        RULE,
        False,
        "&",
        id="bash-rcfile-takes-a-value",
    ),
    pytest.param(None, ["bash", "-l", "-c", "a & b"], RULE, False, "&", id="bash-l"),
    pytest.param(None, ["bash", "-i", "-c", "a & b"], RULE, False, "&", id="bash-i"),
    pytest.param(None, ["/usr/bin/zsh", "-c", "a & b"], RULE, False, "&", id="zsh"),
    pytest.param(None, ["/bin/ksh", "-e", "-c", "a & b"], RULE, False, "&", id="ksh"),
    pytest.param(None, ["/bin/mksh", "-c", "a & b"], RULE, False, "&", id="mksh"),
    pytest.param(None, ["/bin/dash", "-ec", "a & b"], RULE, False, "&", id="dash"),
    pytest.param(
        None,
        ["sh", "-o", "errexit", "-c", "node server.js"],
        RULE,
        False,
        "shell form",
        id="sh-o-errexit-single-command-is-shell-form",
    ),
    pytest.param(
        None,
        ["/bin/bash", "-euo", "pipefail", "-c", "exec gunicorn app:app"],
        RULE,
        True,
        "",
        id="bash-euo-pipefail-exec",
    ),
    pytest.param(
        None,
        ["sh", "-c", "a & b", "my-zero", "arg1"],
        RULE,
        False,
        "&",
        id="operands-after-command-string-are-not-the-script",
    ),
    pytest.param(
        None,
        ["sh", "-c", 'exec "$@"', "sh", "supervisord", "-n"],
        RULE,
        False,
        "supervisor",
        id="exec-positional-parameters-runs-supervisor",
    ),
    pytest.param(
        ["sh", "-c", 'exec "$@"', "--"],
        ["/app/server", "--port", "8080"],
        RULE,
        True,
        "",
        id="exec-positional-parameters-runs-one-program",
    ),
    pytest.param(
        None,
        ["sh", "-c", 'exec "$@"'],
        RULE,
        False,
        "none follow",
        id="exec-positional-parameters-without-operands",
    ),
    pytest.param(
        None,
        ["sh", "-c", "FOO=1 exec /app/server"],
        RULE,
        True,
        "",
        id="assignment-before-exec",
    ),
    pytest.param(
        None,
        ["sh", "-c", "exec -a server supervisord"],
        RULE,
        False,
        "supervisor",
        id="exec-a-name-into-supervisor",
    ),
]

ENV_CASES = [
    pytest.param(
        None, ["env", "FOO=1", "sh", "-c", "a & b"], RULE, False, "&", id="env-assignment-sh-c"
    ),
    pytest.param(
        ["/usr/bin/env", "-i", "PATH=/bin", "HOME=/"],
        ["sh", "-c", "a; b"],
        RULE,
        False,
        ";",
        id="env-i-assignments",
    ),
    pytest.param(
        None,
        ["env", "-u", "HOME", "--", "sh", "-c", "a & b"],
        RULE,
        False,
        "&",
        id="env-u-name-double-dash",
    ),
    pytest.param(None, ["env", "-uHOME", "sh", "-c", "a & b"], RULE, False, "&", id="env-uNAME"),
    pytest.param(
        None,
        ["env", "--unset=HOME", "bash", "-c", "a | b"],
        RULE,
        False,
        "|",
        id="env-long-unset",
    ),
    pytest.param(None, ["env", "-S", "sh -c 'a & b'"], RULE, False, "&", id="env-split-string"),
    pytest.param(
        None, ["env", "FOO=1", "supervisord", "-n"], RULE, False, "supervisor", id="env-supervisor"
    ),
    pytest.param(
        None,
        ["env", "FOO=1", "sh", "-c", "node server.js"],
        RULE,
        False,
        "shell form",
        id="env-shell-form",
    ),
    pytest.param(None, ["env", "FOO=1", "/app/server"], RULE, True, "", id="env-exec-form"),
    pytest.param(
        None,
        ["env", "FOO=1", "sh", "-c", "exec /app/server"],
        RULE,
        True,
        "",
        id="env-sh-c-exec",
    ),
    pytest.param(None, ["env"], RULE, True, "", id="env-alone-runs-no-second-process"),
    pytest.param(
        ["tini", "--"],
        ["env", "A=1", "sh", "-c", "a & b"],
        RULE,
        False,
        "&",
        id="tini-env-sh-chain",
    ),
]

BUSYBOX_CASES = [
    pytest.param(None, ["busybox", "sh", "-c", "a; b"], RULE, False, ";", id="busybox-sh-c"),
    pytest.param(
        None, ["/bin/busybox", "ash", "-ec", "a & b"], RULE, False, "&", id="busybox-ash-ec"
    ),
    pytest.param(
        None,
        ["busybox", "sh", "-c", "httpd -f"],
        RULE,
        False,
        "busybox sh",
        id="busybox-sh-shell-form-named",
    ),
    pytest.param(
        None, ["busybox", "sh", "-c", "exec httpd -f"], RULE, True, "", id="busybox-sh-c-exec"
    ),
    pytest.param(
        None, ["busybox", "httpd", "-f", "-p", "8080"], RULE, True, "", id="busybox-applet"
    ),
    pytest.param(
        None,
        ["busybox", "runsvdir", "/etc/service"],
        RULE,
        False,
        "supervisor",
        id="busybox-runsvdir",
    ),
    pytest.param(
        None,
        ["busybox", "env", "A=1", "sh", "-c", "a & b"],
        RULE,
        False,
        "&",
        id="busybox-env-sh",
    ),
]

WRAPPER_CASES = [
    pytest.param(
        ["/entrypoint.sh"],
        ["supervisord", "-n"],
        RULE,
        False,
        "supervisor",
        id="wrapper-script-runs-supervisor",
    ),
    pytest.param(
        ["/entrypoint.sh"],
        ["supervisord", "-n"],
        RULE,
        False,
        "/entrypoint.sh",
        id="wrapper-script-is-named",
    ),
    pytest.param(
        ["docker-entrypoint.sh"],
        ["sh", "-c", "nginx & php-fpm"],
        RULE,
        False,
        "&",
        id="wrapper-script-runs-chain",
    ),
    pytest.param(
        ["/usr/local/bin/docker-php-entrypoint"],
        ["supervisord"],
        RULE,
        False,
        "supervisor",
        id="entrypoint-named-wrapper-without-extension",
    ),
    pytest.param(
        ["/start"], ["runsvdir", "/etc/service"], RULE, False, "supervisor", id="start-wrapper"
    ),
    pytest.param(
        ["/entrypoint.sh", "supervisord"], None, RULE, False, "supervisor", id="all-in-entrypoint"
    ),
    pytest.param(
        ["sh", "/entrypoint.sh"], ["supervisord"], RULE, False, "supervisor", id="sh-script-file"
    ),
    pytest.param(
        ["/sbin/tini", "--", "/entrypoint.sh"],
        ["supervisord"],
        RULE,
        False,
        "supervisor",
        id="tini-wrapper-supervisor",
    ),
    pytest.param(
        None,
        ["/bin/sh", "-c", "exec /entrypoint.sh supervisord"],
        RULE,
        False,
        "supervisor",
        id="shell-exec-wrapper-supervisor",
    ),
    pytest.param(
        ["/entrypoint.sh"],
        ["/bin/sh", "-c", "node server.js"],
        RULE,
        False,
        "shell form",
        id="wrapper-script-runs-shell-form",
    ),
    pytest.param(["/entrypoint.sh"], ["postgres"], RULE, True, "", id="wrapper-runs-one-program"),
    pytest.param(
        ["docker-entrypoint.sh"],
        ["-c", "config_file=/etc/postgresql.conf"],
        RULE,
        True,
        "",
        id="wrapper-given-options-only",
    ),
    pytest.param(["/entrypoint.sh"], None, RULE, True, "", id="wrapper-without-arguments"),
    pytest.param(
        ["/entrypoint.sh"], ["tini", "--", "/app/server"], RULE, True, "", id="wrapper-runs-tini"
    ),
    pytest.param(
        ["/app/server"],
        ["supervisord"],
        RULE,
        True,
        "",
        id="arguments-of-an-ordinary-program-are-its-own",
    ),
]


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "rule", "passes", "says"),
    [*SHELL_OPTION_CASES, *ENV_CASES, *BUSYBOX_CASES, *WRAPPER_CASES],
)
def test_shells_env_busybox_and_wrappers_are_seen_through(
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    rule: SingleEntrypointRule,
    passes: bool,
    says: str,
) -> None:
    outcome = single_entrypoint.check(rule, facts(entrypoint=entrypoint, cmd=cmd), None)
    assert (not outcome.violations) is passes, outcome.violations
    if says:
        assert says in outcome.violations[0].message


def test_pod_args_behind_an_image_wrapper_script_are_checked() -> None:
    image = facts(entrypoint=["/docker-entrypoint.sh"], cmd=["nginx", "-g", "daemon off;"])
    outcome = single_entrypoint.check(RULE, image, ContainerContext(args=("supervisord", "-n")))
    assert outcome.violations
    assert "supervisor" in outcome.violations[0].message


@pytest.mark.parametrize(
    ("argv", "script"),
    [
        pytest.param(["sh", "-c", "x"], "x", id="plain"),
        pytest.param(["sh", "-o", "errexit", "-c", "x"], "x", id="o-name"),
        pytest.param(["bash", "-eo", "pipefail", "-c", "x"], "x", id="cluster-with-o"),
        pytest.param(["sh", "-c", "-e", "x", "zero"], "x", id="first-operand"),
        pytest.param(["sh", "-c"], "", id="missing-string"),
        pytest.param(["sh", "/entrypoint.sh", "-c", "x"], None, id="script-file"),
        pytest.param(["sh", "--", "-c", "x"], None, id="double-dash-ends-options"),
        pytest.param(["sh"], None, id="no-operands"),
        pytest.param(["/app/server", "-c", "x"], None, id="not-a-shell"),
    ],
)
def test_shell_script_parses_options_like_sh(argv: list[str], script: str | None) -> None:
    assert single_entrypoint.shell_script(argv) == script


def test_deeply_nested_wrappers_fail_closed() -> None:
    outcome = single_entrypoint.check(RULE, facts(entrypoint=["env"] * 5000, cmd=None), None)
    assert outcome.violations
    assert "nested" in outcome.violations[0].message
