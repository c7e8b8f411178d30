"""Loading ImagePolicies from YAML files and directories, with errors a person can act on.

Every error names the file, the document (index and name), the field path inside the document
and what is wrong. All problems of all files are collected and reported at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from webhook.errors import PolicyError
from webhook.policy.model import API_VERSION, KIND, ImagePolicy

YAML_SUFFIXES = (".yaml", ".yml")


def load_policies(path: Path) -> list[ImagePolicy]:
    """Policies from a file (one or more YAML documents) or a directory of such files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        if not files:
            raise PolicyError(f"{path}: no .yaml or .yml files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise PolicyError(f"{path}: no such file or directory")
    policies: list[ImagePolicy] = []
    problems: list[str] = []
    defined_in: dict[str, Path] = {}
    for file in files:
        try:
            found = parse_policies(file.read_text(encoding="utf-8"), str(file))
        except PolicyError as err:
            problems.append(err.message)
            continue
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{file}: cannot read: {err}")
            continue
        for policy in found:
            if policy.name in defined_in:
                problems.append(
                    f"{file}: policy {policy.name!r} is already defined in "
                    f"{defined_in[policy.name]}"
                )
            defined_in[policy.name] = file
        policies.extend(found)
    if problems:
        raise PolicyError("invalid policy:\n" + "\n".join(f"  {p}" for p in problems))
    if not policies:
        raise PolicyError(f"{path}: contains no ImagePolicy documents")
    return policies


def parse_policies(text: str, source: str = "<string>") -> list[ImagePolicy]:
    """Every ImagePolicy document in a YAML stream; empty documents are ignored."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        raise PolicyError(f"{source}: {_describe_yaml_error(err)}") from None
    policies: list[ImagePolicy] = []
    problems: list[str] = []
    for index, document in enumerate(documents, start=1):
        if document is None:
            continue
        where = f"{source} (document {index})"
        try:
            policies.append(parse_policy(document, where))
        except PolicyError as err:
            problems.append(err.message)
    if problems:
        raise PolicyError("\n  ".join(problems))
    return policies


def parse_policy(document: Any, where: str = "<object>") -> ImagePolicy:
    """One ImagePolicy from an already-parsed object (a YAML document or a Kubernetes object)."""
    if not isinstance(document, dict):
        raise PolicyError(f"{where}: expected a mapping, got {type(document).__name__}")
    name = (
        (document.get("metadata") or {}).get("name")
        if isinstance(document.get("metadata"), dict)
        else None
    )
    if name:
        where = f"{where} {name!r}"
    if document.get("kind") != KIND or document.get("apiVersion") != API_VERSION:
        raise PolicyError(
            f"{where}: expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"apiVersion {document.get('apiVersion')!r} and kind {document.get('kind')!r}"
        )
    try:
        return ImagePolicy.model_validate(document)
    except ValidationError as err:
        lines = [f"{where}: {_path(e['loc'])}: {_message(e)}" for e in err.errors()]
        raise PolicyError("\n  ".join(lines)) from None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _message(error: Any) -> str:
    msg = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; fields are camelCase)"
    if error["type"] in ("missing",):
        return msg.lower()
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and error["type"] != "missing":
        return f"{msg} (got {value!r})"
    return msg


def _describe_yaml_error(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}"
    return f"invalid YAML: {problem}"
