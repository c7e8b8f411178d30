"""Builders for ImageFacts shaped like real public images."""

from __future__ import annotations

from webhook.registry.facts import ImageFacts

DEFAULT_ENTRYPOINT = ["/app/server"]


def facts(
    user: str = "65532:65532",
    entrypoint: list[str] | None = DEFAULT_ENTRYPOINT,
    cmd: list[str] | None = None,
    *,
    diff_ids: list[str] | None = None,
    sizes: list[int] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    source: str = "registry",
) -> ImageFacts:
    diff_ids = diff_ids if diff_ids is not None else [f"sha256:{'1' * 64}"]
    return ImageFacts(
        reference="localhost:5001/app:1",
        digest=f"sha256:{'d' * 64}",
        platform="linux/amd64",
        user=user,
        entrypoint=entrypoint,
        cmd=cmd,
        diff_ids=diff_ids,
        layer_sizes=sizes if sizes is not None else [1000] * len(diff_ids),
        labels=labels or {},
        annotations=annotations or {},
        source=source,  # type: ignore[arg-type]
    )
