"""CustomResourceDefinitions for ImagePolicy and ImageRebuild, generated from the pydantic models.

`render_crds()` turns `Model.model_json_schema(by_alias=True)` into the *structural* OpenAPI v3
schema the API server requires (apiextensions.k8s.io/v1):

* `$defs`/`$ref` are inlined (a `$ref`'s sibling keys such as `description` win);
* `title`, `$schema`, `const`-only apiVersion/kind and `default: null` are dropped;
* `anyOf: [X, {type: null}]` becomes X with `nullable: true`;
* `x-kubernetes-int-or-string` keeps its `anyOf: [{type: integer}, {type: string}]` branches,
  with only value validations inside (no description, default or title);
* `additionalProperties: false` is dropped (the API server prunes unknown fields anyway),
  a schema-valued `additionalProperties` (a map) is kept, `true` alongside properties becomes
  `x-kubernetes-preserve-unknown-fields`;
* `metadata` at the root is just `type: object` (the API server owns its schema).

The chart ships the result in `charts/imagegate/files/crds/` (a test keeps both equal), which
`templates/crds.yaml` renders as ordinary release objects so that `helm upgrade` upgrades them
(Helm never upgrades what sits in a chart's `crds/` directory); regenerate with
`imagegate crds --out charts/imagegate/files/crds` (or `write_crds(directory)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel

from webhook.policy.model import ImagePolicy
from webhook.rebuild.model import ImageRebuild

__all__ = [
    "GROUP",
    "VERSION",
    "SchemaConversionError",
    "crd_file_name",
    "crds_yaml",
    "render_crds",
    "structural_schema",
    "write_crds",
]

GROUP: Final = "imagegate.dev"
VERSION: Final = "v1alpha1"
CATEGORIES: Final = ["imagegate"]
GENERATED_HEADER: Final = (
    "# Generated from the pydantic models by webhook/crds.py (`imagegate crds`). Do not edit:\n"
    "# change the model and regenerate; tests/chart/test_crds.py keeps this file in sync.\n"
)

# Keys a JSON-schema node may keep in a CRD schema (apiextensions.k8s.io/v1 JSONSchemaProps);
# everything else pydantic emits (title, $schema, examples, const, ...) is dropped or converted.
_KEEP: Final = frozenset(
    {
        "description",
        "type",
        "format",
        "default",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "enum",
        "maxProperties",
        "minProperties",
        "required",
        "nullable",
    }
)
_ROOT_OWNED: Final = ("apiVersion", "kind", "metadata")


class SchemaConversionError(ValueError):
    """The pydantic schema uses a construct a structural CRD schema cannot express."""


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural openAPIV3Schema for a Kubernetes resource model (root with metadata)."""
    source = model.model_json_schema(by_alias=True)
    defs: dict[str, Any] = source.get("$defs", {})
    converted = _convert(source, defs, path=model.__name__, seen=())
    properties: dict[str, Any] = converted.get("properties", {})
    properties["apiVersion"] = {
        "description": "APIVersion defines the versioned schema of this representation of an "
        "object.",
        "type": "string",
    }
    properties["kind"] = {
        "description": "Kind is a string value representing the REST resource this object "
        "represents.",
        "type": "string",
    }
    properties["metadata"] = {"type": "object"}
    for key, value in properties.items():
        if key not in _ROOT_OWNED:
            value.pop("nullable", None)  # the status object is absent, never null
            value.pop("default", None)
    required = [r for r in converted.get("required", []) if r not in _ROOT_OWNED]
    root: dict[str, Any] = {"description": converted.get("description"), "properties": {}}
    root["properties"] = {k: properties[k] for k in sorted(properties)}
    if required:
        root["required"] = required
    root["type"] = "object"
    return {k: v for k, v in root.items() if v is not None}


def _resolve(ref: str, defs: dict[str, Any], path: str) -> tuple[str, dict[str, Any]]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaConversionError(f"{path}: cannot resolve $ref {ref!r}")
    name = ref[len(prefix) :]
    target: dict[str, Any] = defs[name]
    return name, target


def _convert(
    node: dict[str, Any], defs: dict[str, Any], path: str, seen: tuple[str, ...]
) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        name, target = _resolve(node.pop("$ref"), defs, path)
        if name in seen:
            raise SchemaConversionError(f"{path}: recursive $ref {name!r} cannot be inlined")
        base = _convert(target, defs, path, (*seen, name))
        return _sorted({**base, **_annotations(node)})

    if "anyOf" in node or "oneOf" in node:
        branches: list[dict[str, Any]] = node.pop("anyOf", None) or node.pop("oneOf")
        if node.get("x-kubernetes-int-or-string"):
            return _int_or_string(node, branches, path)
        non_null = [b for b in branches if b.get("type") != "null"]
        if len(non_null) != 1:
            raise SchemaConversionError(
                f"{path}: anyOf/oneOf of {len(non_null)} non-null schemas has no structural form"
            )
        merged = {**_convert(non_null[0], defs, path, seen), **_annotations(node)}
        if len(non_null) != len(branches):
            merged["nullable"] = True
        return _sorted(merged)

    result: dict[str, Any] = {}
    if "const" in node:
        result["enum"] = [node["const"]]
    for key in _KEEP:
        if key in node:
            result[key] = node[key]
    if result.get("default", 0) is None:
        del result["default"]
    if "properties" in node:
        result["properties"] = {
            name: _convert(sub, defs, f"{path}.{name}", seen)
            for name, sub in node["properties"].items()
        }
    if "items" in node:
        result["items"] = _convert(node["items"], defs, f"{path}[]", seen)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        if "properties" in node:
            raise SchemaConversionError(f"{path}: properties and a schema for extra keys")
        result["additionalProperties"] = _convert(extra, defs, f"{path}{{}}", seen)
    elif extra is True:
        if "properties" in node:
            result["x-kubernetes-preserve-unknown-fields"] = True
        else:
            result["additionalProperties"] = True
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            result[key] = value
    if "type" not in result and not result.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaConversionError(f"{path}: no type (structural schemas need one everywhere)")
    if result.get("type") == "null":
        raise SchemaConversionError(f"{path}: a field that can only be null")
    return _sorted(result)


def _annotations(node: dict[str, Any]) -> dict[str, Any]:
    """The keys next to a `$ref` or `anyOf` that apply to the whole node (description, ...)."""
    return {k: v for k, v in node.items() if k in _KEEP and not (k == "default" and v is None)}


def _sorted(node: dict[str, Any]) -> dict[str, Any]:
    return {k: node[k] for k in sorted(node)}


def _int_or_string(
    node: dict[str, Any], branches: list[dict[str, Any]], path: str
) -> dict[str, Any]:
    kinds = [b.get("type") for b in branches]
    if kinds != ["integer", "string"]:
        raise SchemaConversionError(
            f"{path}: x-kubernetes-int-or-string needs anyOf [integer, string], got {kinds}"
        )
    # A structural schema allows exactly `anyOf: [{type: integer}, {type: string}]` here; any
    # other keyword in a branch (pattern, minimum) makes the API server refuse the CRD. The
    # value's format is checked by the model when the policy is loaded.
    result: dict[str, Any] = {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    }
    patterns = {b["pattern"] for b in branches if "pattern" in b}
    if len(patterns) == 1:  # on the node itself a pattern is allowed (it ignores integers)
        result["pattern"] = patterns.pop()
    for key in ("description", "default"):
        if node.get(key) is not None:
            result[key] = node[key]
    return _sorted(result)


def _crd(
    model: type[BaseModel],
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    scope: str,
    columns: list[dict[str, Any]],
    status: bool,
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": structural_schema(model)},
        "additionalPrinterColumns": columns,
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "imagegate"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": list(CATEGORIES),
            },
            "scope": scope,
            "versions": [version],
        },
    }


_AGE: Final = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def render_crds() -> list[dict[str, Any]]:
    """The ImagePolicy (cluster-scoped) and ImageRebuild (namespaced) CRDs, in that order."""
    return [
        _crd(
            ImagePolicy,
            kind="ImagePolicy",
            plural="imagepolicies",
            singular="imagepolicy",
            short_names=["ipol"],
            scope="Cluster",
            columns=[
                {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                {"name": "On-Error", "type": "string", "jsonPath": ".spec.onError"},
                dict(_AGE),
            ],
            status=False,
        ),
        _crd(
            ImageRebuild,
            kind="ImageRebuild",
            plural="imagerebuilds",
            singular="imagerebuild",
            short_names=["irb"],
            scope="Namespaced",
            columns=[
                {"name": "Source", "type": "string", "jsonPath": ".spec.source"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Replacement", "type": "string", "jsonPath": ".status.replacement"},
                dict(_AGE),
            ],
            status=True,
        ),
    ]


def crd_file_name(crd: dict[str, Any]) -> str:
    """`<plural>.<group>.yaml`, the file a CRD lives in under charts/imagegate/files/crds/."""
    return f"{crd['metadata']['name']}.yaml"


class _NoAliasDumper(yaml.SafeDumper):
    """Spell every repeated list out instead of YAML anchors (`&id001`) that kubectl shows."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(crd: dict[str, Any]) -> str:
    return yaml.dump(crd, Dumper=_NoAliasDumper, sort_keys=False, width=100, allow_unicode=True)


def crds_yaml() -> str:
    """Every CRD as one multi-document YAML stream (what `imagegate crds` prints)."""
    return GENERATED_HEADER + "---\n".join(_dump(crd) for crd in render_crds())


def write_crds(directory: Path) -> list[Path]:
    """Write one file per CRD into `directory` (`imagegate crds --out DIR`); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in render_crds():
        path = directory / crd_file_name(crd)
        path.write_text(GENERATED_HEADER + _dump(crd), encoding="utf-8")
        written.append(path)
    return written
