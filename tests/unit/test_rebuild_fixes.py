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
