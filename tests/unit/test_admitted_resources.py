"""ADMITTED_RESOURCES, what the service claims to check, agrees with what it can read.

The chart's webhook rules are compared with the same constant (tests/chart), so a kind added to
POD_SPEC_PATHS without its resource here, or a resource here the service cannot read, fails
before the two drift apart.
"""

from __future__ import annotations

from webhook.policy.workloads import ADMITTED_RESOURCES, CONTAINER_LISTS, POD_SPEC_PATHS


def test_every_kind_the_service_reads_is_admitted_on_create_and_update() -> None:
    main = {r.kind: r.operations for r in ADMITTED_RESOURCES if "/" not in r.resource}
    assert main == dict.fromkeys(POD_SPEC_PATHS, ("CREATE", "UPDATE"))


def test_every_admitted_resource_is_of_a_kind_the_service_reads() -> None:
    assert {r.kind for r in ADMITTED_RESOURCES} == set(POD_SPEC_PATHS)


def test_ephemeral_containers_are_admitted_through_their_subresource_on_update() -> None:
    (ephemeral,) = [r for r in ADMITTED_RESOURCES if r.resource.endswith("/ephemeralcontainers")]
    assert (ephemeral.group, ephemeral.version, ephemeral.resource) == (
        "",
        "v1",
        "pods/ephemeralcontainers",
    )
    assert (ephemeral.kind, ephemeral.operations) == ("Pod", ("UPDATE",))
    assert "ephemeralContainers" in CONTAINER_LISTS


def test_admitted_resources_are_listed_once() -> None:
    keys = [(r.group, r.resource) for r in ADMITTED_RESOURCES]
    assert len(keys) == len(set(keys))
