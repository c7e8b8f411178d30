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
