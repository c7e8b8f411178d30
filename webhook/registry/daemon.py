"""`docker-daemon:NAME` images, read from the local Docker engine through the docker SDK.

Useful before a push (`imagegate check docker-daemon:app:dev`). The engine has no manifest for
such an image, so the digest reported is the image id (config digest) and sizes are what the
engine records (see `_layer_sizes`). The SDK is blocking, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import docker
import docker.errors
import requests

from webhook.errors import DaemonError, ImageNotFound, InvalidReference
from webhook.registry.facts import ImageFacts, Platform

log = logging.getLogger(__name__)

PREFIX = "docker-daemon:"


async def inspect_daemon_image(name: str, platform: Platform | None = None) -> ImageFacts:
    """Facts about image `name` (a tag, name@digest or id) in the local Docker engine.

    The engine keeps one platform per image name, so `platform` cannot select anything; a
    mismatch is only logged and the image is reported as what it is (as for a single-platform
    registry manifest).
    """
    if not name.strip():
        raise InvalidReference(f"{PREFIX} needs an image name, for example {PREFIX}app:dev")
    return await asyncio.to_thread(_inspect_sync, name.strip(), platform)


def _engine_address() -> str:
    try:
        base = docker.utils.kwargs_from_env().get("base_url")
    except docker.errors.DockerException:
        base = None
    return str(base or "unix:///var/run/docker.sock")


def _inspect_sync(name: str, platform: Platform | None) -> ImageFacts:
    reference = f"{PREFIX}{name}"
    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        raise DaemonError(
            f"cannot reach the Docker engine at {_engine_address()}: {exc}", reference=reference
        ) from exc
    try:
        try:
            image = client.images.get(name)
            attrs: dict[str, Any] = image.attrs
            history: list[dict[str, Any]] = image.history()
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(
                f"no image {name} in the Docker engine at {_engine_address()}",
                reference=reference,
            ) from exc
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise DaemonError(
                f"cannot reach the Docker engine at {_engine_address()}: {exc}",
                reference=reference,
            ) from exc
    finally:
        client.close()
    return facts_from_attrs(name, attrs, history, platform)


def facts_from_attrs(
    name: str,
    attrs: dict[str, Any],
    history: list[dict[str, Any]],
    platform: Platform | None = None,
) -> ImageFacts:
    """Build ImageFacts from `docker image inspect` attributes and `docker history` rows."""
    reference = f"{PREFIX}{name}"
    config = attrs.get("Config") or {}
    rootfs = attrs.get("RootFS") or {}
    diff_ids = [str(d) for d in rootfs.get("Layers") or []]
    os_ = str(attrs.get("Os") or "")
    arch = str(attrs.get("Architecture") or "")
    variant = str(attrs.get("Variant") or "") or None
    image_platform = Platform(os_, arch, variant) if os_ and arch else None
    if (
        platform is not None
        and image_platform is not None
        and not platform.matches(os_, arch, variant)
    ):
        log.warning("%s is %s, not the requested %s", reference, image_platform, platform)
    image_id = str(attrs.get("Id") or "")
    labels = config.get("Labels") or {}
    return ImageFacts(
        reference=reference,
        digest=image_id,
        platform=str(image_platform) if image_platform else "",
        user=str(config.get("User") or ""),
        entrypoint=_str_list(config.get("Entrypoint")),
        cmd=_str_list(config.get("Cmd")),
        diff_ids=diff_ids,
        layer_sizes=_layer_sizes(attrs, history, len(diff_ids)),
        labels={str(k): str(v) for k, v in labels.items()},
        annotations={},
        source="docker-daemon",
        config_digest=image_id,
    )


def _layer_sizes(attrs: dict[str, Any], history: list[dict[str, Any]], layers: int) -> list[int]:
    """Per-layer sizes, uncompressed: the engine records no compressed size.

    `docker history` lists steps newest first with the size each added; steps that made no
    layer (ENV, USER, CMD …) have size 0, but so does a real layer that only adds a directory
    (`RUN mkdir /tmp`). So we try two ways of picking the layer-making steps: size > 0, then
    "not a metadata-only instruction". The first that lines up one-to-one with RootFS.Layers
    wins; otherwise we report one entry holding the image's total `Size`. Either way the sum is
    what the engine stores uncompressed, an upper bound of what a node would pull.
    """
    steps = list(reversed(history))
    sizes = [int(h.get("Size") or 0) for h in steps]
    by_size = [size for size in sizes if size > 0]
    by_instruction = [
        size
        for size, step in zip(sizes, steps, strict=True)
        if size > 0 or not _metadata_only(str(step.get("CreatedBy") or ""))
    ]
    for candidate in (by_size, by_instruction):
        if layers and len(candidate) == layers:
            return candidate
    return [int(attrs.get("Size") or 0)]


_METADATA = frozenset(
    [
        "ARG",
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
    ]
)


def _metadata_only(created_by: str) -> bool:
    """True for Dockerfile steps that change only the config (classic `#(nop)` or BuildKit)."""
    text = created_by.strip()
    if "#(nop)" in text:
        after = text.split("#(nop)", 1)[1].split()
        return not after or after[0].upper() not in ("COPY", "ADD")
    first = text.split(maxsplit=1)[0].upper() if text else ""
    return first in _METADATA


def _str_list(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return None
