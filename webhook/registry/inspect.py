"""One entry point for "tell me about this image", whichever source it lives in."""

from __future__ import annotations

from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.registry.daemon import PREFIX as DAEMON_PREFIX
from webhook.registry.daemon import inspect_daemon_image
from webhook.registry.facts import ImageFacts, Platform
from webhook.registry.reference import Reference

__all__ = ["DAEMON_PREFIX", "inspect_image"]


async def inspect_image(
    text: str, platform: Platform, client: RegistryClient, keyring: Keyring | None = None
) -> ImageFacts:
    """`docker-daemon:NAME` reads the local engine; anything else is a registry reference."""
    stripped = text.strip()
    if stripped.startswith(DAEMON_PREFIX):
        return await inspect_daemon_image(stripped[len(DAEMON_PREFIX) :], platform)
    return await client.inspect(Reference.parse(stripped), platform, keyring)
