"""RebuildService.reconcile: an ImageRebuild's spec and status in, status writes and a verdict out.

The Kubernetes side is a fake `ImagegateObjects` (get, patch_status) and a fake policy store.
`RebuildService` takes no engine: it calls `webhook.rebuild.engine.rebuild` by module name, so
the engine is replaced with `monkeypatch` on `webhook.operator.rebuilds.rebuild` (a constructor
argument would be the seam; there is none yet). The engine itself runs against a real
registry in tests/integration/test_rebuild.py; the handler against a real API server in
tests/e2e/test_operator.py.

Every status written is validated against the ImageRebuildStatus model the CRD schema is made
from, so a status the API server would prune or refuse fails here first.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

import webhook.operator.rebuilds as rebuilds
from tests.unit.fakes import digest
from tests.unit.fakes import policy as plain_policy
from webhook.errors import (
    ClusterConflict,
    ClusterError,
    DigestMismatch,
    ImagegateError,
    PlatformNotFound,
    RebuildError,
    RegistryRateLimited,
    RegistryUnavailable,
    Unfixable,
)
from webhook.operator.rebuilds import IDENTITY, GiveUp, Outcome, RebuildService, RetryLater
from webhook.policy.checker import CheckResult
from webhook.policy.model import ImagePolicy, Severity
from webhook.policy.outcome import Violation
from webhook.rebuild.engine import RebuildResult
from webhook.rebuild.model import ImageRebuildStatus, StillFailing
from webhook.registry.facts import Platform

SOURCE = "localhost:5001/team/root:1.0"
ALLOW_TEAM = {"targetRepositories": ["localhost:5001/team/*"]}


def policy(name: str = "default", **spec: Any) -> ImagePolicy:
    """A policy whose rebuilds may push to localhost:5001/team/* (TARGET is there)."""
    return plain_policy(name, **{"remediation": ALLOW_TEAM, **spec})


TARGET = "localhost:5001/team/root-fixed"
REPLACEMENT = f"{TARGET}@{digest('f')}"
SPEC: dict[str, Any] = {"source": SOURCE, "targetRepository": TARGET}
GENERATION = 2
VERSION = "41"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = "<now>"  # in a row: replaced by the time the test runs (rows are built at collection,
# which in a full run happens many minutes before: longer than a claim stays fresh)


STILL = StillFailing(
    rule="allowed-base",
    message="no approved base",
    reason="imagegate can rebase the image onto an approved base",
)


def result(outcome: str = "succeeded", reason: str = "", saved: int = 1234) -> RebuildResult:
    before = CheckResult(
        SOURCE,
        "fail",
        digest=digest("r"),
        violations=[Violation("non-root-user", "root", Severity.high, "default")],
    )
    after = (
        CheckResult(REPLACEMENT, "pass", digest=digest("f"))
        if outcome == "succeeded"
        else CheckResult(
            REPLACEMENT,
            "fail",
            digest=digest("f"),
            violations=[Violation("allowed-base", "no approved base", Severity.high, "default")],
        )
    )
    return RebuildResult(
        source=SOURCE,
        source_digest=digest("r"),
        replacement=REPLACEMENT,
        replacement_tag=f"{TARGET}:1.0-imagegate-ffffffffffff",
        before=before,
        after=after,
        bytes_saved=saved,
        fixes=["nonRootUser"],
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        dropped_platforms=["linux/s390x"],
        still_failing=[] if outcome == "succeeded" else [STILL],
    )


# ---- fakes for the Kubernetes side


@dataclass(frozen=True)
class Patch:
    status: dict[str, Any]
    resource_version: str | None


@dataclass
class Objects:
    """`ImagegateObjects` for one ImageRebuild: `get` answers `current` (or raises), a
    conditional `patch_status` raises `ClusterConflict` when `conflict` is set."""

    current: dict[str, Any]
    get_error: ClusterError | None = None
    conflict: bool = False
    patches: list[Patch] = field(default_factory=list)
    reads: int = 0

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        assert (plural, namespace, name) == ("imagerebuilds", "team-a", "fix-root")
        self.reads += 1
        if self.get_error is not None:
            raise self.get_error
        return self.current

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        assert (plural, namespace, name) == ("imagerebuilds", "team-a", "fix-root")
        self.patches.append(Patch(status, resource_version))
        if resource_version is not None and self.conflict:
            raise ClusterConflict("imagerebuilds team-a/fix-root changed meanwhile", 409)


@dataclass
class Policies:
    policies: list[ImagePolicy]
    ready: bool = True


@dataclass
class Engine:
    """Stands in for `rebuild(client, checker, source, target, policies, **options)`."""

    answer: RebuildResult | ImagegateError | None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(
        self, client: Any, checker: Any, source: str, target: str, policies: Any, **options: Any
    ) -> RebuildResult:
        self.calls.append({"source": source, "target": target, "policies": policies, **options})
        assert isinstance(options["workdir"], Path)
        assert options["workdir"].is_dir()
        assert self.answer is not None, "the engine must not run in this case"
        if isinstance(self.answer, ImagegateError):
            raise self.answer
        return self.answer


# ---- the table


@dataclass(frozen=True)
class Row:
    spec: dict[str, Any] = field(default_factory=lambda: dict(SPEC))
    status: dict[str, Any] = field(default_factory=dict)  # what kopf hands the handler
    current: dict[str, Any] | None = None  # status read back at claim time (default: status)
    get_error: ClusterError | None = None
    conflict: bool = False
    ready: bool = True
    policies: tuple[ImagePolicy, ...] = (policy(),)
    engine: RebuildResult | ImagegateError | None = None
    retry: int = 0
    # expected
    outcome: Outcome | None = None
    raises: type[Exception] | None = None
    message: str = ""  # start of the raised message
    delay: float | None = None  # of RetryLater
    writes: tuple[tuple[str, str, str | None], ...] = ()  # (phase, message start, version)


READY = {
    "Succeeded": "True",
    "PartiallyFixed": "False",
    "Running": "Unknown",
    "Pending": "Unknown",
    "Failed": "False",
    "Unfixable": "False",
}
CLAIM = ("Running", f"rebuilding {SOURCE}", VERSION)
STALE = "2000-01-01T00:00:00Z"


def running(by: str, since: str) -> dict[str, Any]:
    return {"phase": "Running", "runningBy": by, "runningSince": since, "observedGeneration": 2}


ROWS = [
    # -- nothing to do
    pytest.param(
        Row(status={"phase": "Succeeded", "observedGeneration": GENERATION}),
        id="succeeded-for-this-generation-is-left-alone",
    ),
    pytest.param(
        Row(status={"phase": "Unfixable", "observedGeneration": GENERATION}),
        id="unfixable-for-this-generation-is-left-alone",
    ),
    pytest.param(
        Row(status={"phase": "PartiallyFixed", "observedGeneration": GENERATION}),
        id="partially-fixed-for-this-generation-is-left-alone",
    ),
    pytest.param(
        Row(
            current={"phase": "Succeeded", "observedGeneration": GENERATION},
        ),
        id="finished-by-another-replica-meanwhile-is-left-alone",
    ),
    # -- runs
    pytest.param(
        Row(
            engine=result(),
            outcome=Outcome("Rebuilt", f"{SOURCE} → {REPLACEMENT}, 1,234 bytes saved"),
            writes=(CLAIM, ("Succeeded", f"replacement {REPLACEMENT} passes the policy", None)),
        ),
        id="new-rebuild-is-claimed-run-and-recorded",
    ),
    pytest.param(
        Row(
            status={"phase": "Succeeded", "observedGeneration": GENERATION - 1},
            current={"phase": "Succeeded", "observedGeneration": GENERATION - 1},
            engine=result(saved=0),
            outcome=Outcome("Rebuilt", f"{SOURCE} → {REPLACEMENT}"),
            writes=(CLAIM, ("Succeeded", "replacement", None)),
        ),
        id="changed-spec-runs-again-and-nothing-saved-is-not-mentioned",
    ),
    pytest.param(
        Row(
            status={"phase": "Failed", "observedGeneration": GENERATION},
            engine=result(),
            outcome=Outcome("Rebuilt", f"{SOURCE} → {REPLACEMENT}, 1,234 bytes saved"),
            writes=(CLAIM, ("Succeeded", "replacement", None)),
        ),
        id="failed-is-not-final-and-runs-again-on-resume",
    ),
    pytest.param(
        Row(
            engine=result("partial", reason="the rebuilt image still fails: allowed-base"),
            outcome=Outcome(
                "PartiallyFixed",
                f"{REPLACEMENT}: the rebuilt image still fails: allowed-base",
                warning=True,
            ),
            writes=(CLAIM, ("PartiallyFixed", "the rebuilt image still fails", None)),
        ),
        id="replacement-that-still-fails-is-partially-fixed-not-hidden",
    ),
    pytest.param(
        Row(
            engine=result("failed", reason="cannot check the replacement: 503"),
            outcome=Outcome(
                "StillFailing", f"{REPLACEMENT}: cannot check the replacement: 503", warning=True
            ),
            writes=(CLAIM, ("Failed", "cannot check the replacement", None)),
        ),
        id="replacement-that-cannot-be-checked-fails-and-runs-again-later",
    ),
    # -- claims between replicas
    pytest.param(
        Row(
            current=running("other-pod/7", NOW),
            raises=RetryLater,
            message="being rebuilt by other-pod/7",
            delay=15.0,
        ),
        id="fresh-claim-of-another-replica-waits",
    ),
    pytest.param(
        Row(
            current=running("other-pod/7", STALE),
            engine=result(),
            outcome=Outcome("Rebuilt", f"{SOURCE} → {REPLACEMENT}, 1,234 bytes saved"),
            writes=(CLAIM, ("Succeeded", "replacement", None)),
        ),
        id="stale-claim-of-a-dead-replica-is-taken-over",
    ),
    pytest.param(
        Row(
            current=running(IDENTITY, NOW),
            engine=result(),
            outcome=Outcome("Rebuilt", f"{SOURCE} → {REPLACEMENT}, 1,234 bytes saved"),
            writes=(CLAIM, ("Succeeded", "replacement", None)),
        ),
        id="own-claim-is-resumed-after-a-crash",
    ),
    pytest.param(
        Row(
            conflict=True,
            raises=RetryLater,
            message="changed while claiming it",
            delay=2.0,
            writes=(CLAIM,),
        ),
        id="losing-the-claim-race-retries-soon",
    ),
    pytest.param(
        Row(
            get_error=ClusterError("cannot read imagerebuilds team-a/fix-root: 503", 503),
            raises=RetryLater,
            message="cannot read imagerebuilds",
            delay=5.0,
        ),
        id="unreadable-object-retries",
    ),
    # -- the spec and the policies
    pytest.param(
        Row(
            spec={"source": SOURCE},
            raises=GiveUp,
            message="invalid spec:",
            writes=(("Failed", "invalid spec:", None),),
        ),
        id="spec-without-target-fails-for-good",
    ),
    pytest.param(
        Row(
            spec={**SPEC, "fixes": ["magic"]},
            raises=GiveUp,
            message="invalid spec:",
            writes=(("Failed", "invalid spec:", None),),
        ),
        id="spec-with-an-unknown-fix-fails-for-good",
    ),
    pytest.param(
        Row(ready=False, raises=RetryLater, message="the ImagePolicies are not loaded", delay=5.0),
        id="policies-not-loaded-yet-retries-without-writing",
    ),
    pytest.param(
        Row(
            spec={**SPEC, "policy": "strict"},
            raises=GiveUp,
            message="ImagePolicy 'strict' does not exist",
            writes=(("Failed", "ImagePolicy 'strict' does not exist", None),),
        ),
        id="unknown-policy-fails-for-good",
    ),
    pytest.param(
        Row(
            spec={**SPEC, "platforms": ["linux"]},
            raises=GiveUp,
            message="invalid platform 'linux'",
            writes=(CLAIM, ("Failed", "invalid platform 'linux'", None)),
        ),
        id="invalid-single-platform-fails-for-good",
    ),
    # -- what the engine raises
    pytest.param(
        Row(
            engine=Unfixable("the image runs supervisord: split it into containers"),
            raises=GiveUp,
            message="the image runs supervisord",
            writes=(CLAIM, ("Unfixable", "the image runs supervisord", None)),
        ),
        id="unfixable-image-is-final",
    ),
    pytest.param(
        Row(
            engine=RebuildError(f"tag {TARGET}:1.0-imagegate-ffff exists with other content"),
            raises=GiveUp,
            message=f"tag {TARGET}",
            writes=(CLAIM, ("Failed", f"tag {TARGET}", None)),
        ),
        id="tag-conflict-fails-for-good",
    ),
    pytest.param(
        Row(
            engine=PlatformNotFound("no linux/s390x manifest in the index"),
            raises=GiveUp,
            message="no linux/s390x manifest",
            writes=(CLAIM, ("Failed", "no linux/s390x manifest", None)),
        ),
        id="missing-platform-fails-for-good",
    ),
    *(
        pytest.param(
            Row(
                engine=error,
                retry=retry,
                raises=RetryLater,
                message=f"registry trouble, will retry: {error}",
                delay=delay,
                writes=(CLAIM, ("Pending", f"registry trouble, will retry: {error}", None)),
            ),
            id=name,
        )
        for name, error, retry, delay in [
            (
                "registry-down-retries-after-10s",
                RegistryUnavailable("localhost:5001: connection refused"),
                0,
                10.0,
            ),
            (
                "registry-throttling-backs-off-exponentially",
                RegistryRateLimited("429 after 3 retries"),
                3,
                80.0,
            ),
            (
                "backoff-is-capped-at-five-minutes",
                RegistryUnavailable("localhost:5001: timed out"),
                6,
                300.0,
            ),
            (
                "digest-mismatch-is-registry-trouble-too",
                DigestMismatch(f"blob is not {digest('e')}"),
                0,
                10.0,
            ),
        ]
    ),
]


async def reconcile(
    row: Row, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Outcome | None, Exception | None, Objects, Engine]:
    current = row.current if row.current is not None else row.status
    current = {k: now() if v == NOW else v for k, v in current.items()}
    objects = Objects(
        {"metadata": {"resourceVersion": VERSION}, "status": current},
        get_error=row.get_error,
        conflict=row.conflict,
    )
    engine = Engine(row.engine)
    monkeypatch.setattr(rebuilds, "rebuild", engine)
    service = RebuildService(
        cast(Any, None),  # the registry client: only handed to the engine
        cast(Any, None),  # the checker: likewise
        cast(Any, objects),
        Policies(list(row.policies), ready=row.ready),
        tmp_path,
    )
    try:
        outcome = await service.reconcile(
            "team-a", "fix-root", row.spec, row.status, GENERATION, row.retry
        )
    except (RetryLater, GiveUp) as err:
        return None, err, objects, engine
    return outcome, None, objects, engine


@pytest.mark.parametrize("row", ROWS)
async def test_reconcile(row: Row, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    outcome, error, objects, engine = await reconcile(row, monkeypatch, tmp_path)
    assert outcome == row.outcome
    if row.raises is None:
        assert error is None
    else:
        assert type(error) is row.raises
        assert str(error).startswith(row.message), str(error)
        if row.delay is not None:
            assert isinstance(error, RetryLater)
            assert error.delay == row.delay
    writes = [(p.status["phase"], p.status["message"], p.resource_version) for p in objects.patches]
    assert len(writes) == len(row.writes), writes
    for (phase, message, version), (want_phase, want_message, want_version) in zip(
        writes, row.writes, strict=True
    ):
        assert (phase, version) == (want_phase, want_version)
        assert message.startswith(want_message), message
    for patch in objects.patches:
        ImageRebuildStatus.model_validate(patch.status)  # what the CRD schema accepts
        assert patch.status["observedGeneration"] == GENERATION
        [condition] = patch.status["conditions"]
        assert condition["reason"] == patch.status["phase"]
        assert condition["status"] == READY[patch.status["phase"]]
    assert len(engine.calls) == (0 if row.engine is None else 1)


# ---- what the engine is asked for, and the status a success leaves


@pytest.mark.parametrize(
    ("spec", "policies", "wanted"),
    [
        pytest.param(
            SPEC,
            (policy("a"), policy("b")),
            {"policies": ["a", "b"], "user": "65532:65532", "platforms": None, "fixes": None},
            id="defaults-every-policy-and-uid-65532",
        ),
        pytest.param(
            {**SPEC, "targetRepository": "localhost:5001/team/root"},  # its own repository
            (),
            {"policies": ["default"]},
            id="no-policy-in-the-cluster-means-the-default-policy",
        ),
        pytest.param(
            {**SPEC, "policy": "b"},
            (policy("a"), policy("b")),
            {"policies": ["b"]},
            id="named-policy-only",
        ),
        pytest.param(
            {
                **SPEC,
                "user": "1000:1000",
                "fixes": ["nonRootUser", "sizeBudget"],
                "rebaseOnto": "gcr.io/distroless/static-debian12:nonroot",
                "platforms": ["linux/arm64/v8"],
            },
            (policy(),),
            {
                "user": "1000:1000",
                "fixes": ["nonRootUser", "sizeBudget"],
                "rebase_onto": "gcr.io/distroless/static-debian12:nonroot",
                "platforms": [Platform("linux", "arm64", "v8")],
            },
            id="spec-options-reach-the-engine",
        ),
        pytest.param(
            {**SPEC, "platforms": ["linux/amd64", "linux/arm64"]},
            (policy(),),
            {"platforms": [Platform("linux", "amd64"), Platform("linux", "arm64")]},
            id="several-platforms-are-all-passed-on",
        ),
    ],
)
async def test_engine_is_asked_for_what_the_spec_says(
    spec: dict[str, Any],
    policies: tuple[ImagePolicy, ...],
    wanted: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    row = Row(spec=spec, policies=policies, engine=result())
    _, error, _, engine = await reconcile(row, monkeypatch, tmp_path)
    assert error is None
    [call] = engine.calls
    assert (call["source"], call["target"]) == (SOURCE, spec["targetRepository"])
    seen = {**call, "policies": [p.name for p in call["policies"]]}
    assert {k: seen[k] for k in wanted} == wanted


async def test_success_status_publishes_the_replacement(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`status.sourceDigest` → `status.replacement` is what the webhook's Replacements read."""
    _, _, objects, _ = await reconcile(Row(engine=result()), monkeypatch, tmp_path)
    claim, final = (p.status for p in objects.patches)
    assert claim["runningBy"] == IDENTITY
    assert claim["runningSince"]
    status = {k: v for k, v in final.items() if k != "conditions"}
    assert status == {
        "phase": "Succeeded",
        "sourceDigest": digest("r"),
        "replacement": REPLACEMENT,
        "replacementTag": f"{TARGET}:1.0-imagegate-ffffffffffff",
        "before": {"verdict": "fail", "failedRules": ["non-root-user"]},
        "after": {"verdict": "pass", "failedRules": []},
        "bytesSaved": 1234,
        "fixes": ["nonRootUser"],
        "stillFailing": [],
        "droppedPlatforms": ["linux/s390x"],
        "message": f"replacement {REPLACEMENT} passes the policy",
        "observedGeneration": GENERATION,
        "runningBy": None,
        "runningSince": None,
    }


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(Unfixable("no"), id="unfixable"),
        pytest.param(RegistryUnavailable("down"), id="registry-trouble"),
        pytest.param(RebuildError("tag conflict"), id="rebuild-error"),
    ],
)
async def test_every_ending_releases_the_claim(
    engine: ImagegateError, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, error, objects, _ = await reconcile(Row(engine=engine), monkeypatch, tmp_path)
    assert error is not None
    last = objects.patches[-1].status
    assert (last["runningBy"], last["runningSince"]) == (None, None)


async def test_an_invalid_platform_among_several_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    row = Row(spec={**SPEC, "platforms": ["linux/amd64", "bogus"]}, engine=result())
    _, error, objects, engine = await reconcile(row, monkeypatch, tmp_path)
    assert isinstance(error, GiveUp)
    assert "invalid platform 'bogus'" in str(error)
    assert engine.calls == []
    assert objects.patches[-1].status["phase"] == "Failed"


async def test_a_partial_fix_lists_what_still_fails_and_is_final(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PartiallyFixed publishes the replacement but says why it still fails; the webhook reads
    only Succeeded rebuilds, so it is never swapped in, and it is not run again."""
    row = Row(engine=result("partial", reason="the rebuilt image still fails: allowed-base"))
    _, error, objects, _ = await reconcile(row, monkeypatch, tmp_path)
    assert error is None
    final = objects.patches[-1].status
    assert final["phase"] == "PartiallyFixed"
    assert final["replacement"] == REPLACEMENT
    assert final["after"] == {"verdict": "fail", "failedRules": ["allowed-base"]}
    assert final["stillFailing"] == [
        {
            "rule": "allowed-base",
            "message": "no approved base",
            "reason": "imagegate can rebase the image onto an approved base",
        }
    ]
    assert final["droppedPlatforms"] == ["linux/s390x"]
    assert final["conditions"][0]["status"] == "False"
    assert rebuilds._done(final, GENERATION)


# ---- where the operator may push: a policy says so, or it is the source's own repository


@pytest.mark.parametrize(
    ("target", "remediation", "allowed"),
    [
        pytest.param("localhost:5001/team/root", {}, True, id="the-source-repository"),
        pytest.param("localhost:5001/elsewhere/x", {}, False, id="not-allowed-by-default"),
        pytest.param(
            "evil.example/loot", {"targetRepositories": ["localhost:5001/*"]}, False, id="no-glob"
        ),
        pytest.param(
            "localhost:5001/rebuilt/root",
            {"targetRepositories": ["localhost:5001/rebuilt/*"]},
            True,
            id="glob",
        ),
        pytest.param(
            "registry.example/fixed",
            {"targetRepository": "registry.example/fixed"},
            True,
            id="the-policys-target-repository",
        ),
    ],
)
async def test_a_rebuild_pushes_only_where_a_policy_allows(
    target: str,
    remediation: dict[str, Any],
    allowed: bool,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The operator pushes with its own credentials: whoever may create an ImageRebuild must
    not make it copy an image to a registry of their choosing."""
    row = Row(
        spec={"source": SOURCE, "targetRepository": target},
        policies=(plain_policy(remediation=remediation),),
        engine=result(),
        outcome=Outcome("Rebuilt", f"{SOURCE} → {REPLACEMENT}"),
    )
    _, error, objects, engine = await reconcile(row, monkeypatch, tmp_path)
    assert (len(engine.calls) == 1) is allowed
    if not allowed:
        assert isinstance(error, GiveUp)
        assert f"targetRepository {target} is not allowed" in str(error)
        [(phase, message)] = [(p.status["phase"], p.status["message"]) for p in objects.patches]
        assert phase == "Failed"
        assert "is not allowed" in message


# ---- what the source is read with: the namespace's pull secrets, never the operator's own


async def test_the_source_is_read_with_the_namespaces_pull_secrets_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Whoever may create an ImageRebuild must not have the operator read, with its own
    credentials, an image they cannot read themselves."""
    from tests.unit.fakes import FakeCluster, dockerconfigjson
    from webhook.registry.auth import Keyring

    cluster = FakeCluster(
        namespaces={"team-a": {}},
        service_accounts={("team-a", "default"): ["sa-creds"]},
        secrets={
            ("team-a", "sa-creds"): dockerconfigjson("localhost:5001", "team-a-bot"),
            ("team-a", "extra"): dockerconfigjson("other.example", "extra-bot"),
        },
    )
    engine = Engine(result())
    monkeypatch.setattr(rebuilds, "rebuild", engine)
    objects = Objects({"metadata": {"resourceVersion": VERSION}, "status": {}})
    operator_own = Keyring.from_dockerconfigjson(
        json.loads(dockerconfigjson("localhost:5001", "operator")), source="the operator"
    )
    service = RebuildService(
        cast(Any, None), cast(Any, None), cast(Any, objects), Policies([policy()], ready=True),
        tmp_path, cluster=cluster, tenant_keyring=operator_own.only_for([]),
    )  # fmt: skip
    spec = {**SPEC, "imagePullSecrets": ["extra"]}
    await service.reconcile("team-a", "fix-root", spec, {}, GENERATION, 0)
    [call] = engine.calls
    reader: Keyring = call["source_keyring"]
    assert (await reader.get("localhost:5001")).username == "team-a-bot"  # type: ignore[union-attr]
    assert (await reader.get("other.example")).username == "extra-bot"  # type: ignore[union-attr]
    assert "operator" not in reader.describe()
