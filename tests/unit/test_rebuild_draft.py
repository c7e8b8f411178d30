"""The rebuild's image draft and the fixes that edit it, on small in-memory images.

Every layer here is named: its blob digest, its diff_id and its history entry (`RUN <name>`)
all derive from the name, and `layers_of` reads a rendered image back as
(blob, diff_id, history) names per position. A layer, diff_id or history entry that slipped by
one position shows up as a mismatched triple.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.factories import facts
from webhook.errors import RebuildError, Unfixable
from webhook.policy.rules.allowed_base import BASE_DIGEST, BASE_NAME
from webhook.rebuild import fixes as fx
from webhook.rebuild.draft import BaseImage, ImageDraft, Rendered
from webhook.rebuild.layers import SquashResult, WrittenLayer
from webhook.rebuild.push import BlobSource
from webhook.registry.reference import Reference

REPO = Reference.parse("localhost:5001/app")
BASE_REPO = Reference.parse("localhost:5001/newbase")
CREATED = "2024-05-01T00:00:00Z"
NAMES: dict[str, str] = {}  # digest → "blob:<name>" / "diff:<name>"


def digest(kind: str, name: str) -> str:
    value = "sha256:" + hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()
    NAMES[value] = f"{kind}:{name}"
    return value


def entry(spec: str) -> dict[str, Any]:
    """`RUN x` is a layer's entry, `~ENV x` an empty_layer one."""
    if spec.startswith("~"):
        return {"created": CREATED, "created_by": spec[1:], "empty_layer": True}
    return {"created": CREATED, "created_by": spec}


def image(
    layers: list[str], history: list[str] | None, **config: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, config) of an image with `layers` (docker media types) and `history`."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": digest("config", ",".join(layers)), "size": 1},
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": digest("blob", name),
                "size": 100 + i,
            }
            for i, name in enumerate(layers)
        ],
        "annotations": {"keep": "me", "not-a-string": 1},
    }
    cfg: dict[str, Any] = {
        "architecture": "amd64",
        "created": CREATED,
        "config": {"User": "", "Cmd": ["/app"], "Labels": {"team": "a"}},
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest("diff", n) for n in layers]},
    }
    if history is not None:
        cfg["history"] = [entry(h) for h in history]
    cfg.update(config)
    return manifest, cfg


def draft_of(
    layers: list[str], history: list[str] | None, base: BaseImage | None = None, **config: Any
) -> ImageDraft:
    manifest, cfg = image(layers, history, **config)
    return ImageDraft.from_image("localhost:5001/app:1", REPO, manifest, cfg, base)


def groups(draft: ImageDraft) -> list[tuple[str, str, list[str]]]:
    """Per layer: blob name, diff_id name, its history (created_by)."""
    return [
        (
            NAMES[layer.digest],
            NAMES[layer.diff_id],
            [str(h["created_by"]) for h in layer.history],
        )
        for layer in draft.layers
    ]


def read(rendered: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(rendered.manifest), json.loads(rendered.config)


def layers_of(rendered: Rendered) -> list[tuple[str, str, str | None]]:
    """Per position: the manifest's blob, the config's diff_id and the n-th layer history entry."""
    manifest, config = read(rendered)
    own = [h["created_by"] for h in config["history"] if not h.get("empty_layer")]
    return [
        (
            NAMES.get(layer["digest"], "?"),
            NAMES.get(diff_id, "?"),
            own[i] if i < len(own) else None,
        )
        for i, (layer, diff_id) in enumerate(
            zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True)
        )
    ]


def history_of(rendered: Rendered) -> list[str]:
    return [str(h["created_by"]) for h in read(rendered)[1]["history"]]


def note(fix: str, **details: Any) -> str:
    """The history text of a fix: `imagegate: ` and JSON, never a Python repr."""
    return "imagegate: " + json.dumps({"fix": fix, **details})


USER_1000 = note("nonRootUser", user="1000")


# ---- reading an image into a draft ----------------------------------------------------------

HISTORIES = {
    # name: (history, per-layer history of layers b and a, history beyond the layers)
    "matching": (
        ["ADD b", "~CMD b", "RUN a", "~USER a"],
        [["ADD b", "CMD b"], ["RUN a", "USER a"]],
        [],
    ),
    "empty entries before the first layer": (
        ["~ARG x", "~ENV y", "ADD b", "RUN a"],
        [["ARG x", "ENV y", "ADD b"], ["RUN a"]],
        [],
    ),
    "no history": (None, [[], []], []),
    "empty history": ([], [[], []], []),
    "only empty entries": (["~ENV x", "~USER y"], [["ENV x", "USER y"], []], []),
    "fewer entries than layers": (["ADD b", "~ENV x"], [["ADD b", "ENV x"], []], []),
    "more entries than layers": (
        ["ADD b", "RUN a", "~ENV a", "RUN ghost", "~CMD ghost"],
        [["ADD b"], ["RUN a", "ENV a"]],
        ["RUN ghost", "CMD ghost"],
    ),
}


@pytest.mark.parametrize(("history", "per_layer", "extra"), HISTORIES.values(), ids=list(HISTORIES))
def test_history_entries_go_with_their_layer(
    history: list[str] | None, per_layer: list[list[str]], extra: list[str]
) -> None:
    draft = draft_of(["b", "a"], history)

    assert groups(draft) == [
        ("blob:b", "diff:b", per_layer[0]),
        ("blob:a", "diff:a", per_layer[1]),
    ]
    assert [h["created_by"] for h in draft.extra_history] == extra


@pytest.mark.parametrize("history", [h for h, _, _ in HISTORIES.values()], ids=list(HISTORIES))
def test_an_untouched_draft_renders_the_source_history_and_layers(
    history: list[str] | None,
) -> None:
    manifest, config = image(["b", "a"], history)
    draft = ImageDraft.from_image("app", REPO, manifest, config)

    rendered = draft.render({})
    out_manifest, out_config = read(rendered)

    assert out_config["history"] == config.get("history", [])
    assert out_config["rootfs"] == config["rootfs"]
    assert [x["digest"] for x in out_manifest["layers"]] == [
        x["digest"] for x in manifest["layers"]
    ]
    assert draft.size == 100 + 101
    assert [layer.source for layer in draft.layers] == [
        BlobSource(x["digest"], repository=REPO) for x in manifest["layers"]
    ]


def test_the_draft_does_not_touch_the_config_it_was_read_from() -> None:
    manifest, config = image(["b", "a"], ["ADD b", "RUN a"])
    before = json.dumps(config)
    draft = ImageDraft.from_image("app", REPO, manifest, config)
    fx.set_user(draft, "1000")
    draft.render({})
    assert json.dumps(config) == before


def test_layers_and_diff_ids_that_disagree_are_refused() -> None:
    manifest, config = image(["b", "a"], ["ADD b", "RUN a"])
    config["rootfs"]["diff_ids"].pop()
    with pytest.raises(
        RebuildError, match=r"lists 2 layers but the config's rootfs\.diff_ids has 1"
    ):
        ImageDraft.from_image("app", REPO, manifest, config)


# ---- config changes go on top ---------------------------------------------------------------

NOTES_ON_TOP = {
    # name: (layers, history, rendered history afterwards)
    "after the top layer": (["b", "a"], ["ADD b", "RUN a", "~CMD a"], ["ADD b", "RUN a", "CMD a"]),
    "after the last entry there is": (["b", "a"], ["ADD b", "~ENV b"], ["ADD b", "ENV b"]),
    "no history": (["b", "a"], None, []),
    "after the entries beyond the layers": (["b"], ["ADD b", "RUN ghost"], ["ADD b", "RUN ghost"]),
    "no layers at all": ([], ["~ENV x"], ["ENV x"]),
}


@pytest.mark.parametrize(
    ("layers", "history", "rendered"), NOTES_ON_TOP.values(), ids=list(NOTES_ON_TOP)
)
def test_a_config_change_is_noted_on_top(
    layers: list[str], history: list[str] | None, rendered: list[str]
) -> None:
    draft = draft_of(layers, history)
    source = (groups(draft), list(draft.extra_history))
    fx.set_user(draft, "1000")

    assert (groups(draft), draft.extra_history) == source  # the layers' history is the source's
    assert history_of(draft.render({})) == [*rendered, USER_1000]
    assert draft.notes == [
        {
            "created": CREATED,
            "created_by": USER_1000,
            "comment": draft.notes[-1]["comment"],
            "empty_layer": True,
        }
    ]


def test_notes_carry_the_source_time_or_the_epoch() -> None:
    draft = draft_of(["b"], ["ADD b"], created=None)
    fx.set_user(draft, "1000")
    assert draft.notes[-1]["created"] == "1970-01-01T00:00:00Z"


def test_notes_are_json_one_per_fix() -> None:
    """Tools read provenance back: `imagegate: ` then a JSON object, `null` where Python would
    print None (`CMD None` was a repr)."""
    base = BaseImage("localhost:5001/base:1", None, "diff_ids", 1)
    draft = draft_of(["b", "a"], ["ADD b", "RUN a"], base)
    fx.set_user(draft, "65532:65532")
    fx.exec_form_entrypoint(draft, facts(entrypoint=["sh", "-c", "exec /app"], cmd=["x"]))
    fx.record_base(draft)

    texts = history_of(draft.render({}))[2:]
    assert [json.loads(t.removeprefix("imagegate: ")) for t in texts] == [
        {"fix": "nonRootUser", "user": "65532:65532"},
        {"fix": "singleEntrypoint", "entrypoint": ["/app"], "cmd": None},
        {"fix": "allowedBase", "base": "localhost:5001/base:1", "evidence": "diff_ids"},
    ]
    assert texts[0] == 'imagegate: {"fix": "nonRootUser", "user": "65532:65532"}'
    assert all(t.startswith("imagegate: {") for t in texts)


# ---- the config fixes -----------------------------------------------------------------------


def test_set_user() -> None:
    draft = draft_of(["b", "a"], ["ADD b", "RUN a"])
    fx.set_user(draft, "65532:65532")

    assert draft.inner["User"] == "65532:65532"
    assert draft.applied == [fx.NON_ROOT_USER]
    assert layers_of(draft.render({})) == [
        ("blob:b", "diff:b", "ADD b"),
        ("blob:a", "diff:a", "RUN a"),
    ]
    assert history_of(draft.render({}))[-1] == note("nonRootUser", user="65532:65532")


def test_set_user_on_a_config_without_a_runtime_config() -> None:
    manifest, config = image(["b"], ["ADD b"])
    del config["config"]
    draft = ImageDraft.from_image("app", REPO, manifest, config)
    fx.set_user(draft, "1000")
    assert read(draft.render({}))[1]["config"] == {"User": "1000"}


ENTRYPOINTS = {
    # name: (entrypoint, cmd, new entrypoint, new cmd, applied)
    "shell CMD": (None, ["/bin/sh", "-c", "httpd -f"], None, ["httpd", "-f"], True),
    "shell ENTRYPOINT": (["sh", "-c", "exec /app -v"], ["x"], ["/app", "-v"], None, True),
    "already exec form": (["/app"], ["--flag"], ["/app"], ["--flag"], False),
}


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "new_entrypoint", "new_cmd", "applied"),
    ENTRYPOINTS.values(),
    ids=list(ENTRYPOINTS),
)
def test_exec_form_entrypoint(
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    new_entrypoint: list[str] | None,
    new_cmd: list[str] | None,
    applied: bool,
) -> None:
    draft = draft_of(["b"], ["ADD b"], config={"Entrypoint": entrypoint, "Cmd": cmd})
    fx.exec_form_entrypoint(draft, facts(entrypoint=entrypoint, cmd=cmd))

    assert (draft.inner["Entrypoint"], draft.inner["Cmd"]) == (new_entrypoint, new_cmd)
    assert draft.applied == ([fx.SINGLE_ENTRYPOINT] if applied else [])
    expected = ["ADD b"]
    if applied:
        expected.append(note("singleEntrypoint", entrypoint=new_entrypoint, cmd=new_cmd))
    assert history_of(draft.render({})) == expected


def test_exec_form_entrypoint_that_cannot_be_made_leaves_the_draft_alone() -> None:
    draft = draft_of(["b"], ["ADD b"])
    with pytest.raises(Unfixable, match="chains or backgrounds"):
        fx.exec_form_entrypoint(draft, facts(entrypoint=None, cmd=["sh", "-c", "a & b"]))
    assert draft.applied == []
    assert history_of(draft.render({})) == ["ADD b"]


# ---- the base -------------------------------------------------------------------------------

BASE = BaseImage("localhost:5001/base:1", "sha256:" + "b" * 64, "label", 1)

RECORDS = {
    # name: (base, labels before, labels after, annotations added)
    "name and digest": (
        BASE,
        {"team": "a"},
        {"team": "a", BASE_NAME: BASE.name, BASE_DIGEST: BASE.digest},
        {BASE_NAME: BASE.name, BASE_DIGEST: BASE.digest},
    ),
    "no digest: a stale digest label goes": (
        BaseImage("localhost:5001/base:1", None, "diff_ids", 1),
        {BASE_DIGEST: "sha256:old", "team": "a"},
        {"team": "a", BASE_NAME: "localhost:5001/base:1"},
        {BASE_NAME: "localhost:5001/base:1"},
    ),
    "no labels yet": (
        BASE,
        None,
        {BASE_NAME: BASE.name, BASE_DIGEST: BASE.digest},
        {BASE_NAME: BASE.name, BASE_DIGEST: BASE.digest},
    ),
}


@pytest.mark.parametrize(
    ("base", "labels", "after", "annotations"), RECORDS.values(), ids=list(RECORDS)
)
def test_record_base(
    base: BaseImage,
    labels: dict[str, str] | None,
    after: dict[str, str],
    annotations: dict[str, str],
) -> None:
    draft = draft_of(["b", "a"], ["ADD b", "RUN a"], base, config={"Labels": labels})
    fx.record_base(draft)

    manifest, config = read(draft.render({"dev.imagegate.fixes": "allowedBase"}))
    assert config["config"]["Labels"] == after
    assert manifest["annotations"] == {
        "keep": "me",
        **annotations,
        "dev.imagegate.fixes": "allowedBase",
    }
    assert draft.applied == [fx.ALLOWED_BASE]
    details = {"base": base.name, "evidence": base.evidence}
    if base.digest:
        details["digest"] = base.digest
    assert history_of(draft.render({}))[-1] == note("allowedBase", **details)


def test_record_base_without_a_base_is_unfixable() -> None:
    draft = draft_of(["b", "a"], ["ADD b", "RUN a"])
    with pytest.raises(Unfixable, match="cannot tell which base localhost:5001/app:1"):
        fx.record_base(draft)


@pytest.mark.parametrize(
    ("base", "why"),
    [
        (None, "its base image cannot be identified"),
        (
            BaseImage("localhost:5001/base:1", None, "label", None),
            "the layers of its base localhost:5001/base:1 are not a prefix of its own",
        ),
    ],
    ids=["unknown base", "unverified base"],
)
def test_rebase_needs_a_verified_base(base: BaseImage | None, why: str) -> None:
    draft = draft_of(["b", "a"], ["ADD b", "RUN a"], base)
    onto = new_base(["n0", "n1"], ["ADD n0", "RUN n1"])
    with pytest.raises(Unfixable, match=why):
        fx.rebase_point(draft, onto.name)
    with pytest.raises(Unfixable, match=why):
        fx.rebase(draft, onto, "sha256:" + "e" * 64)
    assert [g[0] for g in groups(draft)] == ["blob:b", "blob:a"]


def new_base(layers: list[str], history: list[str] | None) -> ImageDraft:
    manifest, config = image(layers, history)
    return ImageDraft.from_image("localhost:5001/newbase:2", BASE_REPO, manifest, config)


NEW = "sha256:" + "e" * 64
REBASED = note(
    "allowedBase", rebasedFrom="localhost:5001/base:1", base="localhost:5001/newbase:2", digest=NEW
)

REBASES = {
    # name: (source layers, source history, base layers, onto history, per-layer history after)
    "matching histories": (
        ["b", "a1", "a2"],
        ["ADD b", "~CMD b", "RUN a1", "~ENV a1", "RUN a2"],
        1,
        ["ADD n0", "~ENV n0", "RUN n1"],
        [
            ["ADD n0", "ENV n0"],
            ["RUN n1"],
            ["RUN a1", "ENV a1"],
            ["RUN a2"],
        ],
    ),
    "a two-layer base": (
        ["b1", "b2", "a"],
        ["ADD b1", "RUN b2", "~USER b2", "RUN a"],
        2,
        ["ADD n0", "RUN n1"],
        [["ADD n0"], ["RUN n1"], ["RUN a"]],
    ),
    "new base without history": (
        ["b", "a"],
        ["ADD b", "RUN a"],
        1,
        None,
        [[], [], ["RUN a"]],
    ),
    "new base with entries beyond its layers": (
        ["b", "a"],
        ["ADD b", "RUN a"],
        1,
        ["ADD n0", "RUN n1", "RUN ghost", "~ENV ghost"],
        [
            ["ADD n0"],
            ["RUN n1", "RUN ghost", "ENV ghost"],
            ["RUN a"],
        ],
    ),
    "the image is all base": (
        ["b"],
        ["ADD b", "~USER b"],
        1,
        ["ADD n0", "RUN n1"],
        [["ADD n0"], ["RUN n1"]],
    ),
}


@pytest.mark.parametrize(
    ("layers", "history", "base_layers", "onto_history", "per_layer"),
    REBASES.values(),
    ids=list(REBASES),
)
def test_rebase_swaps_the_base_layers_with_their_history(
    layers: list[str],
    history: list[str],
    base_layers: int,
    onto_history: list[str] | None,
    per_layer: list[list[str]],
) -> None:
    base = BaseImage("localhost:5001/base:1", None, "diff_ids", base_layers)
    draft = draft_of(layers, history, base)
    fx.rebase(draft, new_base(["n0", "n1"], onto_history), NEW)

    app = layers[base_layers:]
    assert groups(draft) == [
        (f"blob:{n}", f"diff:{n}", hist)
        for n, hist in zip(["n0", "n1", *app], per_layer, strict=True)
    ]
    assert draft.base == BaseImage("localhost:5001/newbase:2", NEW, "rebase", 2)
    assert draft.applied == [fx.ALLOWED_BASE]
    assert [h["created_by"] for h in draft.notes] == [REBASED]
    assert [layer.source.repository for layer in draft.layers] == [BASE_REPO] * 2 + [REPO] * len(
        app
    )
    rendered = draft.render({})
    assert [(blob, diff) for blob, diff, _ in layers_of(rendered)] == [
        (f"blob:{n}", f"diff:{n}") for n in ["n0", "n1", *app]
    ]


def test_rebase_keeps_earlier_notes_and_then_records_the_new_base() -> None:
    base = BaseImage("localhost:5001/base:1", None, "diff_ids", 1)
    draft = draft_of(["b", "a"], ["ADD b", "RUN a"], base)
    fx.set_user(draft, "1000")
    fx.rebase(draft, new_base(["n0"], ["ADD n0"]), NEW)
    fx.record_base(draft)

    assert draft.applied == [fx.NON_ROOT_USER, fx.ALLOWED_BASE]
    assert layers_of(draft.render({})) == [
        ("blob:n0", "diff:n0", "ADD n0"),
        ("blob:a", "diff:a", "RUN a"),
    ]
    assert history_of(draft.render({})) == [
        "ADD n0",
        "RUN a",
        USER_1000,
        REBASED,
    ]  # recorded once: the rebase already noted it
    assert draft.labels()[BASE_NAME] == "localhost:5001/newbase:2"
    assert draft.labels()[BASE_DIGEST] == NEW


def test_a_rebase_that_replaces_every_layer_keeps_the_earlier_notes() -> None:
    """An image that is all base: the notes used to ride on the base's history and went with it."""
    draft = draft_of(
        ["b"], ["ADD b", "~USER b"], BaseImage("localhost:5001/base:1", None, "label", 1)
    )
    fx.set_user(draft, "1000")
    fx.rebase(draft, new_base(["n0"], ["ADD n0"]), NEW)

    assert history_of(draft.render({})) == ["ADD n0", USER_1000, REBASED]


# ---- squash ---------------------------------------------------------------------------------


def squashed(tmp_path: Path, dropped: int = 1) -> SquashResult:
    layer = WrittenLayer(
        tmp_path / "sq.tar.gz", digest("blob", "squashed"), digest("diff", "squashed"), 7
    )
    return SquashResult(layer, entries=3, dropped=[f"var/cache/{i}" for i in range(dropped)])


SQUASHES = {
    # name: (layers, history, base layers, per-layer history after (last: the squashed one))
    "above a one-layer base": (
        ["b", "a1", "a2"],
        ["ADD b", "~CMD b", "RUN a1", "~ENV a1", "RUN a2", "~USER a2"],
        1,
        [["ADD b", "CMD b"], ["SQUASH 2"]],
    ),
    "above a two-layer base": (
        ["b1", "b2", "a"],
        ["~ARG x", "ADD b1", "RUN b2", "~ENV b2", "RUN a"],
        2,
        [["ARG x", "ADD b1"], ["RUN b2", "ENV b2"], ["SQUASH 1"]],
    ),
    "no known base: everything": (
        ["b", "a"],
        ["~ARG x", "ADD b", "RUN a"],
        None,
        [["SQUASH 2"]],
    ),
    "entries beyond the layers go with the squashed ones": (
        ["b", "a"],
        ["ADD b", "RUN a", "RUN ghost"],
        1,
        [["ADD b"], ["SQUASH 1"]],
    ),
    "history shorter than the layers": (
        ["b", "a1", "a2"],
        ["ADD b"],
        1,
        [["ADD b"], ["SQUASH 2"]],
    ),
}


@pytest.mark.parametrize(
    ("layers", "history", "base_layers", "per_layer"), SQUASHES.values(), ids=list(SQUASHES)
)
def test_squash_replaces_the_layers_above_the_base(
    tmp_path: Path,
    layers: list[str],
    history: list[str],
    base_layers: int | None,
    per_layer: list[list[str]],
) -> None:
    base = None if base_layers is None else BaseImage("b", None, "diff_ids", base_layers)
    draft = draft_of(layers, history, base)
    result = squashed(tmp_path)
    count = len(layers) - (base_layers or 0)
    fx.squash(draft, result)

    kept = layers[: base_layers or 0]
    entry = note("sizeBudget", squashedLayers=count, droppedPaths=1, droppedBytes=0)
    assert groups(draft) == [
        (f"blob:{n}", f"diff:{n}", [entry if h.startswith("SQUASH") else h for h in hist])
        for n, hist in zip([*kept, "squashed"], per_layer, strict=True)
    ]
    assert draft.extra_history == []
    assert (draft.squashed_layers, draft.dropped_paths) == (count, 1)
    assert draft.applied == [fx.SIZE_BUDGET]
    top = draft.layers[-1]
    assert top.descriptor == {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": result.layer.digest,
        "size": 7,
    }
    assert top.source == BlobSource(result.layer.digest, file=result.layer.path)
    assert "empty_layer" not in top.history[0]
    assert [layer.source.repository for layer in draft.layers[:-1]] == [REPO] * len(kept)
    assert draft.size == sum(100 + i for i in range(len(kept))) + 7


def test_squash_after_config_fixes_keeps_the_config_and_their_notes(tmp_path: Path) -> None:
    """The notes are provenance, not the squashed layers' history: they stay, on top."""
    draft = draft_of(["b", "a"], ["ADD b", "RUN a", "~CMD a"], BaseImage("b", None, "label", 1))
    fx.set_user(draft, "1000")
    fx.exec_form_entrypoint(draft, facts(entrypoint=None, cmd=["sh", "-c", "exec /app"]))
    fx.squash(draft, squashed(tmp_path, dropped=0))

    assert draft.inner["User"] == "1000"
    assert draft.applied == [fx.NON_ROOT_USER, fx.SINGLE_ENTRYPOINT, fx.SIZE_BUDGET]
    assert history_of(draft.render({})) == [
        "ADD b",
        note("sizeBudget", squashedLayers=1, droppedPaths=0, droppedBytes=0),
        USER_1000,
        note("singleEntrypoint", entrypoint=None, cmd=["/app"]),
    ]


def test_squash_with_nothing_above_the_base_changes_nothing(tmp_path: Path) -> None:
    draft = draft_of(["b"], ["ADD b"], BaseImage("b", None, "diff_ids", 1))
    fx.squash(draft, squashed(tmp_path))
    assert groups(draft) == [("blob:b", "diff:b", ["ADD b"])]
    assert draft.applied == []


# ---- rendering ------------------------------------------------------------------------------


def test_render_keeps_the_config_key_order_and_converts_media_types() -> None:
    manifest, config = image(["b", "a"], ["ADD b", "RUN a"])
    config = {"history": config.pop("history"), **config, "rootfs": {"diff_ids": []}}
    config["rootfs"]["diff_ids"] = [digest("diff", "b"), digest("diff", "a")]
    draft = ImageDraft.from_image("app", REPO, manifest, config)
    fx.set_user(draft, "1000")

    rendered = draft.render({"dev.imagegate.source.digest": "sha256:src", "keep": "over"})
    out_manifest, out_config = read(rendered)

    assert list(out_config) == list(config)  # history first, as in the source
    assert list(out_config["rootfs"]) == ["diff_ids", "type"]
    assert out_manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert out_manifest["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": rendered.config_digest,
        "size": len(rendered.config),
    }
    assert rendered.config_digest == "sha256:" + hashlib.sha256(rendered.config).hexdigest()
    assert {x["mediaType"] for x in out_manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }
    assert out_manifest["annotations"] == {
        "keep": "over",
        "dev.imagegate.source.digest": "sha256:src",
    }
    assert draft.render({}).config == draft.render({}).config  # deterministic
