"""The warm admission path's shortcuts (issue 17) keep every guarantee of what they replaced.

Each shortcut is checked against the slow path it stands in for: the eager namespace-label
read still times out, the once-per-second sweep never hands out an expired entry, the cheaper
verdict-cache key still tells every key part apart, the `ANYWHERE` shortcut agrees with
`placement_of`, and the faster JSON log formatter writes the library's lines byte for byte.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
from typing import Any

import cachetools
import pytest
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from webhook import logs
from webhook.admission.service import _placement, _within
from webhook.caches import SWEEP_SECONDS, BoundedCache
from webhook.policy.checker import _digest, _result_key
from webhook.policy.outcome import ContainerContext
from webhook.policy.platforms import ANYWHERE, Placement, Term, Values, placement_of

# ---- the namespace-label read: eager, still bounded by the deadline --------------------------


async def test_an_answer_that_needs_no_waiting_comes_back_even_past_the_deadline() -> None:
    async def cached() -> dict[str, str]:
        return {"team": "a"}

    past = asyncio.get_running_loop().time() - 1  # a timer would have fired at once
    assert await _within(past, cached()) == {"team": "a"}


async def test_a_lookup_that_waits_is_cut_at_the_deadline_and_cancelled() -> None:
    cleaned: list[str] = []

    async def stalled() -> dict[str, str]:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append("cancelled")
        return {}

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await _within(started + 0.05, stalled())
    assert loop.time() - started < 1
    assert cleaned == ["cancelled"]


async def test_a_lookup_that_waits_within_the_deadline_returns_its_value_or_error() -> None:
    async def slow(value: int) -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        if value < 0:
            raise ValueError("negative")
        return value

    deadline = asyncio.get_running_loop().time() + 5
    assert await _within(deadline, slow(7)) == 7
    with pytest.raises(ValueError, match="negative"):
        await _within(deadline, slow(-1))


async def test_cancelling_the_caller_cancels_the_lookup() -> None:
    cleaned: list[str] = []

    async def stalled() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append("cancelled")

    task = asyncio.ensure_future(_within(asyncio.get_running_loop().time() + 60, stalled()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cancelled"]


# ---- BoundedCache: reads sweep at most once per second, never return what expired -------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_expired_entry_is_never_returned_between_sweeps() -> None:
    clock = Clock()
    cache: BoundedCache[str, str] = BoundedCache(1 << 20, ttl=10, timer=clock)
    cache["k"] = "v"
    assert cache.get("k") == "v"  # a read: swept at 1000
    clock.now += 10.0
    assert cache.get("k") is None
    cache["j"] = "w"  # expires at 1020
    assert cache.get("j") == "w"
    clock.now += 9.999
    assert cache.get("j") == "w"  # swept at 1019.999
    clock.now += 0.002  # expired, and less than SWEEP_SECONDS after the last sweep
    assert cache.get("j") is None
    assert "j" not in cache
    with pytest.raises(KeyError):
        cache["j"]


def test_reads_drop_expired_entries_once_per_sweep_interval() -> None:
    clock = Clock()
    cache: BoundedCache[str, str] = BoundedCache(1 << 20, ttl=1, timer=clock)
    cache["a"] = "x"
    cache.get("other")  # sweeps now; "a" is alive
    clock.now += 1.5  # "a" expired; a read sweeps again (the last one was 1.5 s ago)
    cache.get("other")
    assert cachetools_len(cache) == 0
    cache["b"] = "y"
    cache.get("other")  # sweeps at 1001.5
    clock.now += SWEEP_SECONDS / 2 + 1  # "b" expired, and the next read is past the interval
    cache.get("other")
    assert cachetools_len(cache) == 0


def cachetools_len(cache: BoundedCache[str, str]) -> int:
    """Entries held, without the expiry `len()` runs first."""
    return cachetools.Cache.__len__(cache)


# ---- the verdict cache key -------------------------------------------------------------------


def _key(**parts: Any) -> str:
    base: dict[str, Any] = {
        "image": "registry.example/app:1",
        "ids": (1, 2),
        "platform": None,
        "placement": ANYWHERE,
        "context": _digest(ContainerContext()),
        "who": ("team-a", "default", ()),
    }
    base.update(parts)
    return _result_key(
        (base["image"], base["ids"], base["platform"], base["placement"], base["context"],
         base["who"])
    )  # fmt: skip


def test_every_field_of_the_container_context_changes_the_key() -> None:
    plain = _key()
    seen = {plain}
    values = {
        "command": ("/app",),
        "args": ("--x",),
        "run_as_user": 0,
        "pod_run_as_user": 0,
        "run_as_non_root": False,
    }
    assert set(values) == set(ContainerContext._fields)  # a new field needs a value here
    for name in ContainerContext._fields:
        changed = ContainerContext(**{name: values[name]})
        key = _key(context=_digest(changed))
        assert key not in seen, name
        seen.add(key)
    assert _key(context=_digest(None)) not in seen
    # command ("a", "b") and args None is not command ("a",) and args ("b",)
    joined = _digest(ContainerContext(command=("a", "b")))
    split = _digest(ContainerContext(command=("a",), args=("b",)))
    assert _key(context=joined) != _key(context=split)


def test_placements_are_told_apart_and_an_equal_one_shares_the_key() -> None:
    equal_to_anywhere = Placement.of([Term()])
    assert equal_to_anywhere is not ANYWHERE
    assert equal_to_anywhere == ANYWHERE
    assert _key(placement=equal_to_anywhere) == _key()
    arm = Placement.of([Term(arch=Values(frozenset({"arm64"})))])
    amd = Placement.of([Term(arch=Values(frozenset({"amd64"})))])
    assert len({_key(), _key(placement=arm), _key(placement=amd)}) == 3


def test_the_key_is_a_fixed_size_hash_whatever_the_pod_says() -> None:
    huge = ContainerContext(command=("x" * 1_000_000,))
    key = _key(image="registry.example/" + "a" * 100_000 + ":1", context=_digest(huge))
    assert len(key) == 64
    lone = _key(image="registry.example/\ud800:1")  # a lone surrogate is valid JSON
    assert len(lone) == 64
    assert lone != _key()


def test_who_asks_and_the_policies_change_the_key() -> None:
    assert _key(who=("team-b", "default", ())) != _key()
    assert _key(ids=(1,)) != _key()
    assert _key(ids=(1, 2, 3)) != _key()


# ---- ANYWHERE without walking the node selection ---------------------------------------------

SPECS: list[dict[str, Any] | None] = [
    None,
    {},
    {"containers": []},
    {"nodeSelector": {"kubernetes.io/arch": "arm64"}},
    {"nodeSelector": {}},
    {"nodeSelector": None},
    {"affinity": {}},
    {"affinity": {"podAntiAffinity": {}}},
    {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}
                        ]}
                    ]
                }
            }
        }
    },
]  # fmt: skip


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob", "ConfigMap"])
@pytest.mark.parametrize("spec", SPECS)
def test_the_anywhere_shortcut_agrees_with_placement_of(
    kind: str, spec: dict[str, Any] | None
) -> None:
    obj: dict[str, Any] = {"spec": spec}
    if kind == "Deployment":
        obj = {"spec": {"template": {"spec": spec}}}
    elif kind == "CronJob":
        obj = {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}
    assert _placement(kind, obj) == placement_of(kind, obj)
    assert _placement(kind, {"spec": "not a dict"}) == placement_of(kind, {"spec": "x"})


def test_a_pod_without_node_selection_gets_the_anywhere_object_itself() -> None:
    assert _placement("Pod", {"spec": {"containers": []}}) is ANYWHERE


# ---- the JSON log formatter ------------------------------------------------------------------


def _formatters() -> tuple[logging.Formatter, logging.Formatter]:
    args = ("%(asctime)s %(levelname)s %(name)s %(message)s",)
    options: dict[str, Any] = {
        "rename_fields": dict(logs._RENAMED),
        "reserved_attrs": [*RESERVED_ATTRS, *logs._NOT_LOGGED],
    }
    return JsonFormatter(*args, **options), logs._FastJsonFormatter(*args, **options)


def _records() -> list[logging.LogRecord]:
    logger = logging.getLogger("imagegate.test")
    extra = {
        "subject": "Pod team-a/web-*",
        "allowed": False,
        "problems": [{"container": "web", "rule": "non-root-user", "message": "é ünïcode"}],
        "uid": "u-1",
        "k8s_ref": {"kind": "ImagePolicy", "name": "default"},
        "settings": object(),  # kopf's: not serialisable, never logged
        "_private": 1,
        "error": ValueError("a value that is not JSON"),
        "lone": "\ud800",
    }
    records = [logger.makeRecord(logger.name, logging.INFO, "f", 1, "audit %s", ("x",), None,
                                 extra=extra)]  # fmt: skip
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        records.append(
            logger.makeRecord(logger.name, logging.ERROR, "f", 1, "failed", (), sys.exc_info())
        )
    records.append(
        logger.makeRecord(logger.name, logging.INFO, "f", 1, "s", (), None, sinfo="a stack")
    )
    records.append(logger.makeRecord(logger.name, logging.INFO, "f", 1, {"as": "dict"}, (), None))
    later = logger.makeRecord(logger.name, logging.WARNING, "f", 1, "later", (), None)
    later.created, later.msecs = later.created + 3601.5, 500.0  # another second, hour
    records.append(later)
    return records


def test_the_fast_json_formatter_writes_the_librarys_lines_byte_for_byte() -> None:
    library, fast = _formatters()
    for record in _records():
        expected = library.format(copy.copy(record))
        assert fast.format(copy.copy(record)) == expected
        assert fast.format(copy.copy(record)) == expected  # the reused second stays right


def test_configure_uses_it() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure(json_format=True)
        assert isinstance(root.handlers[0].formatter, logs._FastJsonFormatter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
