"""Config fixes: numeric non-root user, shell form → exec form, or Unfixable with the reason."""

from __future__ import annotations

import pytest

from webhook.errors import Unfixable, UsageError
from webhook.rebuild.fixes import exec_argv, fix_entrypoint, normalize_fixes, parse_user
from webhook.rebuild.push import replacement_tag
from webhook.registry.facts import ImageFacts
from webhook.registry.reference import Reference


def facts(entrypoint: list[str] | None, cmd: list[str] | None) -> ImageFacts:
    return ImageFacts("r", "sha256:" + "a" * 64, "linux/amd64", "", entrypoint, cmd, [], [])


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "expected"),
    [
        (None, ["/bin/sh", "-c", "httpd -f -p 8080"], (None, ["httpd", "-f", "-p", "8080"])),
        (["/bin/sh", "-c", "exec /app --port 80"], ["ignored"], (["/app", "--port", "80"], None)),
        (None, ["sh", "-c", "exec 'my app' \"two words\""], (None, ["my app", "two words"])),
        (["/sbin/tini", "--"], ["sh", "-c", "exec /app"], (["/sbin/tini", "--"], ["/app"])),
        (["/app"], ["--flag"], (["/app"], ["--flag"])),
    ],
    ids=["shell-cmd", "exec-prefix-entrypoint", "quoted-args", "behind-init-shim", "already-ok"],
)
def test_shell_form_becomes_exec_form(
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    expected: tuple[list[str] | None, list[str] | None],
) -> None:
    assert fix_entrypoint(facts(entrypoint, cmd)) == expected


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "reason"),
    [
        (
            None,
            ["/bin/sh", "-c", "httpd -f -p 8080 -h /www & sleep infinity"],
            "chains or backgrounds",
        ),
        (None, ["/bin/sh", "-c", "migrate && exec app"], "chains or backgrounds"),
        (None, ["/bin/sh", "-c", "exec app --home $HOME"], "shell syntax"),
        (None, ["/bin/sh", "-c", "app > /log"], "shell syntax"),
        (None, ["/bin/sh", "-c", "FOO=1 app"], "sets variables inline"),
        (None, ["/bin/sh", "-c", "cd /srv"], "builtin"),
        (["/usr/bin/supervisord", "-n"], None, "supervisor"),
        (None, None, "no ENTRYPOINT or CMD"),
    ],
    ids=[
        "background",
        "and-chain",
        "expansion",
        "redirect",
        "assignment",
        "builtin",
        "supervisor",
        "nothing",
    ],
)
def test_unfixable_entrypoints_say_why(
    entrypoint: list[str] | None, cmd: list[str] | None, reason: str
) -> None:
    with pytest.raises(Unfixable, match=reason):
        fix_entrypoint(facts(entrypoint, cmd))


def test_exec_argv_strips_trailing_semicolon() -> None:
    assert exec_argv("exec app;") == ["app"]


@pytest.mark.parametrize("user", ["65532:65532", "1000", " 10001:0 "])
def test_numeric_non_root_users_are_accepted(user: str) -> None:
    assert parse_user(user) == user.strip()


@pytest.mark.parametrize("user", ["nobody", "0", "0:0", "1000:staff", ""])
def test_root_or_named_users_are_refused(user: str) -> None:
    with pytest.raises(UsageError):
        parse_user(user)


def test_fixes_are_validated_and_ordered() -> None:
    assert normalize_fixes(["sizeBudget", "nonRootUser"]) == ["nonRootUser", "sizeBudget"]
    with pytest.raises(UsageError, match="unknown fix"):
        normalize_fixes(["makeItFast"])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("reg.example/app:1.2", "1.2-imagegate-0123456789ab"),
        ("reg.example/app@sha256:" + "f" * 64, "untagged-imagegate-0123456789ab"),
        ("reg.example/app:" + "t" * 128, "t" * 105 + "-imagegate-0123456789ab"),
    ],
    ids=["tag", "digest-only", "long-tag-cut-to-128"],
)
def test_replacement_tag(source: str, expected: str) -> None:
    digest = "sha256:0123456789ab" + "c" * 52
    tag = replacement_tag(Reference.parse(source), digest)
    assert tag == expected
    assert len(tag) <= 128


# ---- which fixes a rebuild tries: what the source fails, limited by what was asked ----------

CHOICES = {
    # name: (failed rules, fixes asked for, squash, rebase onto?, tried, not tried)
    "what the policy needs": (["non-root-user", "single-entrypoint"], None, None, False,
                              ["nonRootUser", "dropSetuid", "singleEntrypoint"], []),
    "allowed-base without a base to rebase onto: the rest is still fixed": (
        ["non-root-user", "allowed-base"], None, None, False, ["nonRootUser", "dropSetuid"],
        ["allowedBase"]),
    "allowed-base with a base to rebase onto": (
        ["non-root-user", "allowed-base"], None, None, True,
        ["nonRootUser", "dropSetuid", "allowedBase"], []),
    "layer waste is squashed away": (["layer-efficiency"], None, None, False, ["sizeBudget"], []),
    "a rule without a fix is left to the report": (["allowed-registry"], None, None, False, [], []),
    "--fix limits the fixes": (["non-root-user", "size-budget"], ["nonRootUser"], None, False,
                               ["nonRootUser"], []),
    "--no-squash leaves the size alone": (["size-budget"], None, False, False, [], []),
    "--squash on a passing image": ([], None, True, False, ["sizeBudget"], []),
}  # fmt: skip


@pytest.mark.parametrize(
    ("failed", "asked", "squash", "rebase", "tried", "not_tried"),
    CHOICES.values(),
    ids=list(CHOICES),
)
def test_a_rebuild_tries_every_fix_it_can(
    failed: list[str],
    asked: list[str] | None,
    squash: bool | None,
    rebase: bool,
    tried: list[str],
    not_tried: list[str],
) -> None:
    from webhook.policy.checker import CheckResult
    from webhook.policy.model import Severity
    from webhook.policy.outcome import Violation
    from webhook.rebuild.engine import _choose_fixes

    before = CheckResult(
        "reg.example/app:1",
        "fail" if failed else "pass",
        violations=[Violation(rule, f"{rule} fails", Severity.high) for rule in failed],
    )
    chosen, reasons = _choose_fixes(before, asked, squash, rebase)
    assert chosen == tried
    assert list(reasons) == not_tried
    if not_tried:
        assert "--rebase-onto" in reasons["allowedBase"]


def test_setuid_bits_stay_when_the_policy_turns_drop_setuid_off() -> None:
    from webhook.policy.checker import CheckResult
    from webhook.policy.model import Severity
    from webhook.policy.outcome import Violation
    from webhook.rebuild.engine import _choose_fixes

    root = Violation("non-root-user", "runs as root", Severity.high)
    before = CheckResult("reg.example/app:1", "fail", violations=[root])
    assert _choose_fixes(before, None, None, False, drop_setuid=False)[0] == ["nonRootUser"]
