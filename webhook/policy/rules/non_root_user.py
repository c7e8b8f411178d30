"""`non-root-user`: the effective user of the container must not be root.

The effective user is the container's `securityContext.runAsUser`, else the pod's, else the
image's `USER`. The kubelet refuses non-numeric users under `runAsNonRoot: true` because it
cannot tell their uid without reading the image's /etc/passwd, so named users are refused
when `requireNumericUser` is on.

When the layers were read (`webhook.layers`), a named USER is resolved through the image's own
`/etc/passwd` as runc does at start: a name that is uid 0 fails, `nobody` passes as 65534 (and
still fails `requireNumericUser`, with its uid in the fix), a name it does not list is an error.
"""

from __future__ import annotations

from webhook.layers.analysis import ResolvedUser, UnresolvedUser
from webhook.policy.model import NonRootUserRule
from webhook.policy.outcome import ContainerContext, RuleOutcome, Violation
from webhook.registry.facts import ImageFacts

RULE = "non-root-user"
MAX_UID = 2**32 - 2  # Linux uids are 32-bit; (uid_t)-1 is "no user"
MAX_UID_DIGITS = 10
FIX = (
    "add `USER 65532:65532` (any numeric uid other than 0) to the final stage of the Dockerfile, "
    "or set securityContext.runAsUser in the pod spec"
)


def split_user(user: str) -> tuple[str, str | None]:
    """`user[:group]` → (user, group); the empty string stays empty (which means root)."""
    name, sep, group = user.partition(":")
    return name, (group if sep else None)


def check(
    rule: NonRootUserRule,
    facts: ImageFacts,
    container: ContainerContext | None,
    resolved: ResolvedUser | UnresolvedUser | None = None,
) -> RuleOutcome:
    """`resolved`: the image USER looked up in the image's /etc/passwd (None: not read)."""
    image_user = facts.user.strip()
    found: dict[str, object] = {"user": image_user}
    ctx = container or ContainerContext()
    if ctx.run_as_user is not None or ctx.pod_run_as_user is not None:
        uid = ctx.run_as_user if ctx.run_as_user is not None else ctx.pod_run_as_user
        source = (
            "container securityContext.runAsUser"
            if ctx.run_as_user is not None
            else "pod securityContext.runAsUser"
        )
        found |= {"effectiveUser": str(uid), "userSource": source}
        if uid == 0:
            return _fail(
                rule, found, f"{source} is 0 (root): set it to a non-zero uid such as 65532"
            )
        return RuleOutcome(facts=found)

    found |= {"effectiveUser": image_user or "root", "userSource": "image"}
    name, _group = split_user(image_user)
    if not name:
        return _fail(rule, found, f"the image has no USER, so it runs as root: {FIX}")
    # A uid as runc and the kubelet read it (Go's strconv): ASCII digits after an optional
    # sign, so `+0` and `-0` are root. "²".isdigit() is True, and int("²") raises.
    digits = name[1:] if name[0] in "+-" else name
    if digits.isascii() and digits.isdigit():
        if len(digits) > MAX_UID_DIGITS or not 0 <= int(name) <= MAX_UID:
            return _fail(rule, found, f"USER {image_user} is not a valid uid: {FIX}")
        if int(name) == 0:
            return _fail(rule, found, f"the image runs as uid 0 (USER {image_user}): {FIX}")
        return RuleOutcome(facts=found)
    if isinstance(resolved, UnresolvedUser):
        return RuleOutcome(
            facts=found, error=f"USER {image_user} cannot be resolved: {resolved.reason}"
        )
    if isinstance(resolved, ResolvedUser):
        found |= {"resolvedUid": resolved.uid, "resolvedGid": resolved.gid}
        if resolved.uid == 0:
            return _fail(
                rule, found, f"USER {image_user} is uid 0 (root) in the image's /etc/passwd: {FIX}"
            )
    elif name == "root":
        return _fail(rule, found, f"the image runs as root (USER {image_user}): {FIX}")
    if rule.require_numeric_user:
        numeric = (
            f"`USER {resolved.uid}:{resolved.gid}` (what {name!r} is in the image's /etc/passwd)"
            if isinstance(resolved, ResolvedUser)
            else "for example `USER 65532:65532`"
        )
        return _fail(
            rule,
            found,
            f"the image runs as the named user {name!r}: with runAsNonRoot the kubelet refuses "
            f'it ("image has non-numeric user ({name}), cannot verify user is non-root"); '
            f"use its numeric uid instead, {numeric}",
        )
    return RuleOutcome(facts=found)


def _fail(rule: NonRootUserRule, found: dict[str, object], message: str) -> RuleOutcome:
    return RuleOutcome([Violation(RULE, message, rule.severity)], found)
