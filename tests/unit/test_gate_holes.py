"""Ways around the gate that the API server lets through (issue 12: items 4, 6, 7, 8).

Each test was written against the code that had the hole and failed there: a 500 (which,
with `failurePolicy: Ignore`, admits anything), a `docker-daemon:` reference read from the
webhook's own engine, and policies that select namespaces by label silently skipped when the
labels could not be read.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from tests.unit.factories import facts
from tests.unit.fakes import GOOD, REGISTRY, ROOT, FakeCluster, policy
from tests.unit.test_admission_service_table import SLOW, ctr, harness, parsed, pod, review
from tests.unit.test_scanner_table import Row as ScanRow
from tests.unit.test_scanner_table import obj as scan_obj
from tests.unit.test_scanner_table import pod_spec as scan_pod
from tests.unit.test_scanner_table import scanner
from webhook.admission.models import AdmissionResponse
from webhook.errors import ImagegateError
from webhook.policy.checker import DAEMON_REFUSED

TWO = f"{REGISTRY}/team/two:1"  # USER "²": str.isdigit() says digits, int() raises


def message(response: AdmissionResponse) -> str:
    assert response.status is not None
    return response.status.message


# ---- 4. no request ever gets a 5xx ------------------------------------------------------------


async def test_a_user_that_only_looks_numeric_is_a_violation_not_a_crash() -> None:
    h = harness(answers={TWO: facts(user="\u00b2")})
    decision = await h.service.validate(parsed(review(pod(ctr("app", TWO)))))
    assert not decision.response.allowed
    assert "non-root-user" in message(decision.response)


def bad_secret() -> bytes:
    auth = base64.b64encode(b"no-colon-here").decode()
    return json.dumps({"auths": {REGISTRY: {"auth": auth}}}).encode()


@pytest.mark.parametrize(("on_error", "allowed"), [("deny", False), ("allow", True)])
async def test_a_malformed_pull_secret_is_the_containers_on_error_decision(
    on_error: str, allowed: bool
) -> None:
    """The kubelet cannot pull with this secret either; the reason names it."""
    cluster = FakeCluster(namespaces={"team-a": {}}, secrets={("team-a", "bad"): bad_secret()})
    h = harness(policies=(policy(onError=on_error),), cluster=cluster)
    body = pod(ctr("app", GOOD), imagePullSecrets=[{"name": "bad"}])
    decision = await h.service.validate(parsed(review(body)))
    assert decision.response.allowed is allowed
    said = message(decision.response) if not allowed else " ".join(decision.response.warnings or [])
    assert "cannot use the pod's pull secrets" in said
    assert "pull secret team-a/bad" in said


class Exploding:
    """A registry whose client has a bug for one image."""

    def __init__(self, inner: Any, image: str) -> None:
        self._inner, self._image = inner, image

    async def inspect(self, ref: Any, platform: Any, keyring: Any = None) -> Any:
        if str(ref).endswith(self._image.split("/", 1)[1]):
            raise KeyError("a bug in the client")
        return await self._inner.inspect(ref, platform, keyring)

    def __getattr__(self, name: str) -> Any:  # every other registry call goes through
        return getattr(self._inner, name)


async def test_a_bug_while_checking_one_image_is_that_images_on_error_decision() -> None:
    errors: list[str] = []
    h = harness()
    h.service._count_error = errors.append
    h.service._checker._client = Exploding(h.registry, ROOT)  # type: ignore[assignment]
    decision = await h.service.validate(parsed(review(pod(ctr("app", GOOD), ctr("side", ROOT)))))
    assert not decision.response.allowed
    lines = message(decision.response).splitlines()[1:]
    assert len(lines) == 1  # the good image was checked normally
    assert "side" in lines[0]
    assert "internal error (KeyError" in lines[0]
    assert errors == ["internal"]


class Broken(FakeCluster):
    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        raise RuntimeError("a bug while reading the namespace")


@pytest.mark.parametrize(
    ("policies", "allowed"),
    [
        pytest.param((policy(onError="deny"),), False, id="deny"),
        pytest.param(
            (policy("a", onError="allow"), policy("b", onError="allow")), True, id="allow"
        ),
        pytest.param((policy("a", onError="allow"), policy("b")), False, id="any-deny-wins"),
    ],
)
async def test_a_bug_outside_any_container_is_decided_by_on_error(
    policies: tuple[Any, ...], allowed: bool
) -> None:
    h = harness(policies=policies, cluster=Broken())
    body = review(pod(ctr("app", GOOD)))
    decision = await h.service.validate(parsed(body))
    assert decision.response.allowed is allowed
    assert decision.response.uid == body["request"]["uid"]
    said = message(decision.response) if not allowed else (decision.response.warnings or [""])[0]
    assert "could not evaluate this object (RuntimeError: a bug while reading" in said
    mutated = await h.service.mutate(parsed(body))
    assert mutated.allowed  # validate decides; no half patch
    assert mutated.patch is None


# ---- 6. docker-daemon: references are for `imagegate check` only ------------------------------


async def test_a_docker_daemon_reference_is_refused_at_admission() -> None:
    h = harness()
    decision = await h.service.validate(parsed(review(pod(ctr("app", "docker-daemon:app:1")))))
    assert not decision.response.allowed
    assert DAEMON_REFUSED in message(decision.response)
    assert h.registry.calls == []


# ---- 7. unknown namespace labels never make a policy fail open --------------------------------

SELECTING = {"match": {"namespaceSelector": {"matchLabels": {"tier": "prod"}}}}


@pytest.mark.parametrize(
    ("policies", "image", "allowed", "says"),
    [
        pytest.param(
            (policy("prod", **SELECTING),), GOOD, False, "could not be read", id="selector-deny"
        ),
        pytest.param(
            (policy("prod", onError="allow", **SELECTING),),
            GOOD,
            True,
            "could not be read",
            id="selector-allow-warns",
        ),
        pytest.param(
            (policy("everywhere"),), ROOT, False, "non-root-user", id="no-selector-still-checked"
        ),
        pytest.param(
            (policy("prod", match={"namespaces": ["prod-*"], **SELECTING["match"]}),),
            ROOT,
            True,
            "",
            id="excluded-by-name-needs-no-labels",
        ),
    ],
)
async def test_policies_selecting_by_label_decide_by_on_error_when_labels_are_unknown(
    policies: tuple[Any, ...], image: str, allowed: bool, says: str
) -> None:
    cluster = FakeCluster(
        namespaces={"team-a": {"tier": "prod"}}, failing=frozenset({"namespace_labels"})
    )
    h = harness(policies=policies, cluster=cluster)
    decision = await h.service.validate(parsed(review(pod(ctr("app", image)))))
    assert decision.response.allowed is allowed
    said = message(decision.response) if not allowed else " ".join(decision.response.warnings or [])
    assert says in said


def test_reading_labels_failing_is_a_cluster_error() -> None:
    """The fake fails the way the real reader does (so the rows above test the real path)."""
    assert issubclass(type(_raised()), ImagegateError)


def _raised() -> BaseException:
    import asyncio

    try:
        asyncio.run(FakeCluster(failing=frozenset({"namespace_labels"})).namespace_labels("x"))
    except Exception as err:
        return err
    raise AssertionError("no error")


# ---- 8. an ownerReference is a claim, not proof ------------------------------------------------

RS_OWNED = {"owner": "uid-web-rs"}


@pytest.mark.parametrize(
    ("pod", "reported"),
    [
        pytest.param(
            scan_obj("Pod", "web-rs-abcde", scan_pod(GOOD), **RS_OWNED),
            False,
            id="made-by-its-replicaset",
        ),
        pytest.param(
            scan_obj("Pod", "web-rs-pinned", scan_pod(f"{GOOD}@sha256:{'a' * 64}"), **RS_OWNED),
            False,
            id="pinned-by-our-own-mutation",
        ),
        pytest.param(
            scan_obj("Pod", "hand-made", scan_pod(ROOT), **RS_OWNED),
            True,
            id="claims-a-compliant-replicaset",
        ),
        pytest.param(
            scan_obj("Pod", "claims-deployment", scan_pod(GOOD), owner="uid-web"),
            True,
            id="a-deployment-makes-no-pods",
        ),
        pytest.param(
            scan_obj("Pod", "elsewhere", scan_pod(GOOD), namespace="team-b", **RS_OWNED),
            True,
            id="owner-in-another-namespace",
        ),
        pytest.param(
            scan_obj(
                "Pod",
                "debugged",
                scan_pod(GOOD, ephemeralContainers=[{"name": "dbg", "image": ROOT}]),
                **RS_OWNED,
            ),
            True,
            id="ephemeral-container-added",
        ),
    ],
)
async def test_the_scan_skips_a_pod_only_when_its_owner_accounts_for_it(
    pod: dict[str, Any], reported: bool
) -> None:
    deployment = scan_obj("Deployment", "web", scan_pod(GOOD))
    replicaset = scan_obj("ReplicaSet", "web-rs", scan_pod(GOOD), owner="uid-web")
    scan, _, _ = scanner(ScanRow((deployment, replicaset, pod)))
    outcome = await scan.scan([policy(mode="audit")])
    names = {e.workload.name for e in outcome.entries}
    assert "web" in names
    assert "web-rs" not in names  # a ReplicaSet made by its Deployment is the Deployment's
    assert (pod["metadata"]["name"] in names) is reported


@pytest.mark.parametrize(
    ("template_image", "recorded"),
    [
        pytest.param(ROOT, False, id="its-replicaset-runs-the-same-image"),
        pytest.param(GOOD, True, id="claims-a-compliant-replicaset"),
    ],
)
async def test_admission_records_a_failing_pod_unless_its_owner_accounts_for_it(
    template_image: str, recorded: bool
) -> None:
    replicaset = scan_obj("ReplicaSet", "web-rs", scan_pod(template_image), owner="uid-web")
    cluster = FakeCluster(namespaces={"team-a": {}}, workloads={"replicasets": [replicaset]})
    h = harness(policies=(policy(mode="audit"),), cluster=cluster)
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-rs", "uid": "uid-web-rs"}
    body = pod(ctr("app", ROOT))
    body["metadata"]["ownerReferences"] = [{**owner, "controller": True}]
    decision = await h.service.validate(parsed(review(body)))
    assert decision.response.allowed  # audit mode admits
    assert bool(h.recorder.entries) is recorded


# ---- issue 13.5: one budget from arrival, caps, one check per image ---------------------------


class SlowLabels(FakeCluster):
    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        await asyncio.sleep(30)
        return {}


async def test_the_budget_starts_when_the_request_arrives_and_covers_lookups() -> None:
    h = harness(cluster=SlowLabels(), budget=0.3)
    started = time.monotonic()
    decision = await h.service.validate(parsed(review(pod(ctr("app", SLOW)))))
    assert time.monotonic() - started < 0.6  # not 30 s, and not 0.3 s plus a fresh budget
    assert not decision.response.allowed
    assert "not inspected within the 0.3 s admission budget" in message(decision.response)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(
            pod(*(ctr(f"c{i}", GOOD) for i in range(101))), "101 containers", id="containers"
        ),
        pytest.param(
            pod(ctr("app", GOOD), imagePullSecrets=[{"name": f"s{i}"} for i in range(33)]),
            "33 imagePullSecrets",
            id="pull-secrets",
        ),
        pytest.param(
            pod(*(ctr(f"c{i}", f"{REGISTRY}/team/app{i}:1") for i in range(51))),
            "51 distinct images",
            id="images",
        ),
    ],
)
async def test_objects_over_a_cap_are_denied_before_any_lookup(
    body: dict[str, Any], says: str
) -> None:
    cluster = FakeCluster(namespaces={"team-a": {}})
    h = harness(policies=(policy(onError="allow", mode="audit"),), cluster=cluster)
    decision = await h.service.validate(parsed(review(body)))
    assert not decision.response.allowed  # whatever the policy's mode and onError
    assert f"it has {says}, over the limit" in message(decision.response)
    assert h.registry.calls == []
    assert "pull_secrets" not in cluster.asked
    mutated = await h.service.mutate(parsed(review(body)))
    assert mutated.patch is None


async def test_one_check_per_image_and_context_within_a_request() -> None:
    h = harness()
    body = pod(ctr("a", ROOT), ctr("b", ROOT), ctr("c", ROOT, args=["--other"]))
    decision = await h.service.validate(parsed(review(body)))
    assert not decision.response.allowed
    assert len(message(decision.response).splitlines()) == 4  # header + one line per container
    assert h.registry.inspected == [ROOT, ROOT]  # a and b share one check; c runs other args


# ---- issue 13.3: what a tenant sends does not stay in memory at full size ---------------------


async def test_a_megabyte_command_is_neither_cached_nor_reported_at_full_size() -> None:
    h = harness()
    huge = ["sh", "-c", "a & b " + "x" * 1_000_000]
    body = pod(ctr("app", GOOD, command=huge))
    decision = await h.service.validate(parsed(review(body)))
    assert not decision.response.allowed  # a shell chain
    assert len(message(decision.response)) < 5_000
    [(key, (_, result))] = h.service._checker._results.items()
    assert sum(len(str(part)) for part in key) < 2_000  # the context is kept as a digest
    assert len(json.dumps(result.to_json())) < 20_000


async def test_a_megabyte_shell_command_is_refused_quickly() -> None:
    """Parsing it would hold the event loop (and every other admission) for seconds."""
    h = harness()
    body = pod(ctr("app", GOOD, command=["sh", "-c", "exec /app " + "x" * 1_000_000]))
    started = time.monotonic()
    decision = await h.service.validate(parsed(review(body)))
    assert time.monotonic() - started < 1.0
    assert "too long to analyse" in message(decision.response)
