"""Which platforms of a multi-arch image can run where a Pod may be scheduled.

A Pod pinned to an image index may run any entry of it: the node's container runtime picks the
one for its own platform. So every entry that some node the Pod may land on would pick has to
pass (DESIGN §4). Two things narrow the set, both pure functions of objects, no I/O:

* the Pod's node selection (`pod_placement`): `nodeSelector` and the *required* node affinity
  on the node labels `kubernetes.io/os` and `kubernetes.io/arch` (and their deprecated
  `beta.kubernetes.io/…` twins). Everything else about scheduling is ignored, which can only
  make the set larger, never let an entry through unchecked;
* the policy's `platforms` (the platforms of the cluster's nodes), when it lists them.

`wanted_platforms` combines them with the index's runnable platforms, choosing entries exactly
as containerd does (`webhook.registry.facts.best_match`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.policy.workloads import POD_SPEC_PATHS
from webhook.registry.facts import Platform, best_match

__all__ = [
    "ANYWHERE",
    "ARCH_LABELS",
    "OS_LABELS",
    "Placement",
    "Term",
    "Values",
    "placement_of",
    "pod_placement",
    "wanted_platforms",
]

OS_LABELS = ("kubernetes.io/os", "beta.kubernetes.io/os")
ARCH_LABELS = ("kubernetes.io/arch", "beta.kubernetes.io/arch")

# Node architectures whose runtime falls back to another architecture's image when an index has
# none of its own (containerd's platforms.Only: amd64 runs 386, arm64 runs arm).
_FALLBACK_NODE_ARCHES = ("amd64", "arm64")


@dataclass(frozen=True)
class Values:
    """The label values a node may have: `only` (None: any) minus `never`. Kept canonical
    (`never` is empty whenever `only` is set), so equal constraints compare and hash equal."""

    only: frozenset[str] | None = None
    never: frozenset[str] = frozenset()

    def allows(self, value: str) -> bool:
        return (self.only is None or value in self.only) and value not in self.never

    def intersect(self, other: Values) -> Values:
        never = self.never | other.never
        if self.only is None:
            return Values(None, never) if other.only is None else Values(other.only - never)
        if other.only is None:
            return Values(self.only - never)
        return Values((self.only & other.only) - never)

    @property
    def key(self) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        return (None if self.only is None else tuple(sorted(self.only)), tuple(sorted(self.never)))

    @property
    def empty(self) -> bool:
        return self.only is not None and not self.only

    def describe(self, label: str) -> str:
        if self.only is not None:
            return f"{label} in ({', '.join(sorted(self.only))})"
        return f"{label} not in ({', '.join(sorted(self.never))})"


ANY_VALUE = Values()
NO_VALUE = Values(frozenset())


@dataclass(frozen=True)
class Term:
    """One way a node may match: its os and arch labels (a nodeSelectorTerm, narrowed to them)."""

    os: Values = ANY_VALUE
    arch: Values = ANY_VALUE

    def allows(self, os: str, arch: str) -> bool:
        return self.os.allows(os) and self.arch.allows(arch)

    def intersect(self, other: Term) -> Term:
        return Term(self.os.intersect(other.os), self.arch.intersect(other.arch))

    @property
    def empty(self) -> bool:
        return self.os.empty or self.arch.empty

    def __str__(self) -> str:
        parts = [
            v.describe(label)
            for v, label in ((self.os, OS_LABELS[0]), (self.arch, ARCH_LABELS[0]))
            if v != ANY_VALUE
        ]
        return " and ".join(parts) or "any node"


@dataclass(frozen=True)
class Placement:
    """Where a Pod may be scheduled, as far as os and arch tell: any of `terms` (ORed).

    Hashable and canonical (terms deduplicated and sorted), because check results are cached
    per placement. `ANYWHERE` is the Pod that says nothing about os or arch.
    """

    terms: tuple[Term, ...] = (Term(),)

    @classmethod
    def of(cls, terms: Iterable[Term]) -> Placement:
        kept = {t for t in terms if not t.empty}
        if Term() in kept:
            kept = {Term()}
        return cls(tuple(sorted(kept, key=lambda t: (repr(t.os.key), repr(t.arch.key)))))

    def allows(self, os: str, arch: str) -> bool:
        """True when a node with these `kubernetes.io/os` / `kubernetes.io/arch` labels may
        run the Pod."""
        return any(t.allows(os, arch) for t in self.terms)

    def __str__(self) -> str:
        if not self.terms:
            return "no node (the node selection excludes every os/arch)"
        return " or ".join(f"({t})" if len(self.terms) > 1 else str(t) for t in self.terms)


ANYWHERE = Placement()


def placement_of(kind: str, obj: Mapping[str, Any] | None) -> Placement:
    """The placement of the pod spec of an object of `kind` (Pod, Deployment, CronJob, …)."""
    spec: Any = obj
    for key in POD_SPEC_PATHS.get(kind, ()):
        spec = spec.get(key) if isinstance(spec, Mapping) else None
    return pod_placement(spec if kind in POD_SPEC_PATHS else None)


def pod_placement(spec: Mapping[str, Any] | None) -> Placement:
    """Where a pod spec may be scheduled, from `nodeSelector` and the required node affinity.

    `nodeSelector` and the affinity must both hold. Of the affinity's
    `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms` any one must hold
    (ORed); within a term every `matchExpressions` entry must hold (ANDed). Operators on the os
    and arch labels: `In`, `NotIn`, `Exists` (every node has them), `DoesNotExist` (no node
    matches). Anything else (other keys, `matchFields`, `Gt`/`Lt`, preferred affinity,
    malformed parts) does not narrow: the placement errs on the side of more platforms.
    """
    if not isinstance(spec, Mapping):
        return ANYWHERE
    base = _selector_term(spec.get("nodeSelector"))
    affinity = spec.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = (
        node.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node, Mapping)
        else None
    )
    raw_terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    if not isinstance(raw_terms, list) or not raw_terms:
        return Placement.of([base])
    return Placement.of(base.intersect(_affinity_term(t)) for t in raw_terms)


def _selector_term(selector: Any) -> Term:
    if not isinstance(selector, Mapping):
        return Term()
    term = Term()
    for key, value in selector.items():
        if isinstance(value, str):
            term = term.intersect(_narrow(key, Values(frozenset({value}))))
    return term


def _affinity_term(raw: Any) -> Term:
    term = Term()
    expressions = raw.get("matchExpressions") if isinstance(raw, Mapping) else None
    if not isinstance(expressions, list):
        return term
    for expression in expressions:
        if not isinstance(expression, Mapping):
            continue
        key, operator = expression.get("key"), expression.get("operator")
        raw_values = expression.get("values")
        values = frozenset(
            v for v in (raw_values if isinstance(raw_values, list) else []) if isinstance(v, str)
        )
        if operator == "In":
            term = term.intersect(_narrow(key, Values(values)))
        elif operator == "NotIn":
            term = term.intersect(_narrow(key, Values(None, values)))
        elif operator == "DoesNotExist":
            term = term.intersect(_narrow(key, NO_VALUE))
    return term


def _narrow(key: Any, values: Values) -> Term:
    if key in OS_LABELS:
        return Term(os=values)
    if key in ARCH_LABELS:
        return Term(arch=values)
    return Term()


def wanted_platforms(
    listed: Sequence[Platform],
    placement: Placement = ANYWHERE,
    nodes: Sequence[Platform] = (),
) -> list[Platform]:
    """The platforms of `listed` (an index's runnable platforms, in index order, as
    `RegistryClient.platforms` returns them) that some node may run for this Pod.

    With `nodes` (a policy's `platforms`: the cluster's node platforms), each node platform the
    placement allows pulls exactly one entry, chosen as containerd does. Without, a node of any
    architecture may exist: every entry whose own os/arch the placement allows, plus the entry
    an allowed amd64 or arm64 node would fall back to (386, arm) when the index has none of its
    own architecture. The result keeps index order.
    """
    chosen: set[int] = set()
    if nodes:
        for node in nodes:
            me = node.normalized()
            if placement.allows(me.os, me.architecture):
                found = best_match(node, listed)
                if found is not None:
                    chosen.add(found)
    else:
        own = {p.normalized().architecture for p in listed}
        for i, entry in enumerate(listed):
            me = entry.normalized()
            if placement.allows(me.os, me.architecture):
                chosen.add(i)
        for arch in _FALLBACK_NODE_ARCHES:
            if arch not in own and placement.allows("linux", arch):
                found = best_match(Platform("linux", arch), listed)
                if found is not None:
                    chosen.add(found)
    return [listed[i] for i in sorted(chosen)]
