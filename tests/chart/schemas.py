"""Offline validation helpers: Kubernetes OpenAPI schemas and CRD (structural) schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# Kinds whose schema comes from a CRD the chart ships (validated against that CRD).
FORBIDDEN_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")


def load_crds(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → openAPIV3Schema for every CRD file in `directory`."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if crd:
                schemas |= crd_schemas(crd)
    return schemas


def crd_schemas(crd: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    spec = crd["spec"]
    return {
        (f"{spec['group']}/{v['name']}", spec["names"]["kind"]): v["schema"]["openAPIV3Schema"]
        for v in spec["versions"]
    }


def to_jsonschema(node: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """A CRD schema as JSON schema. strict: unknown fields are errors (the API server would
    silently prune them, which hides typos in values)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: to_jsonschema(v, strict=strict) for k, v in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_jsonschema(value, strict=strict)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_jsonschema(v, strict=strict) for v in value]
        elif key == "nullable" or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if (
        strict
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def validate_custom_resource(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    root = dict(schema)
    # The API server always accepts (and owns the schema of) these root fields.
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema.get("properties", {}),
    }
    validator = jsonschema.Draft7Validator(to_jsonschema(root))
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def structural_problems(node: dict[str, Any], path: str = "") -> Iterator[str]:
    """Violations of Kubernetes' structural schema rules (the ones a generator gets wrong)."""
    allowed_untyped = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "type" not in node and not allowed_untyped:
        yield f"{path or '<root>'}: no type"
    for key in ("$ref", "$defs", "title", "const", "definitions"):
        if key in node:
            yield f"{path}: {key} is not allowed"
    if node.get("additionalProperties") is False:
        yield f"{path}: additionalProperties: false is not allowed"
    if "additionalProperties" in node and "properties" in node:
        yield f"{path}: properties and additionalProperties are mutually exclusive"
    if node.get("default", 0) is None:
        yield f"{path}: default null"
    for junctor in ("anyOf", "allOf", "oneOf"):
        for branch in node.get(junctor, []):
            int_or_string = node.get("x-kubernetes-int-or-string") and junctor == "anyOf"
            for key in FORBIDDEN_IN_JUNCTORS:
                if key in branch and not (key == "type" and int_or_string):
                    yield f"{path}.{junctor}: {key} inside a junctor"
    if node.get("x-kubernetes-int-or-string") and "anyOf" in node:
        kinds = [b.get("type") for b in node["anyOf"]]
        if kinds != ["integer", "string"]:
            yield f"{path}: int-or-string anyOf must be [integer, string], got {kinds}"
    for name, sub in node.get("properties", {}).items():
        yield from structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from structural_problems(node["additionalProperties"], f"{path}{{}}")
