"""One place that builds what a process shares: settings, credentials, registry, checker.

The CLI, the webhook and the operator each used to wire Keyring → RegistryClient → Checker by
hand; a change to that wiring (a new limit, a transport for tests) now lands here once, as in
Gafaelfawr's `factory.py`. A `ProcessContext` lives as long as the process (or one CLI
command) and is closed with `aclose()` (`async with contextlib.aclosing(...)` in a command).
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.layers.inspect import LayerInspector
from webhook.policy.checker import Checker
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.settings import Settings


@dataclass(frozen=True)
class ProcessContext:
    """The process-wide parts; build with `from_settings`, close with `aclose`."""

    settings: Settings
    keyring: Keyring
    registry: RegistryClient
    checker: Checker
    layers: LayerInspector

    @property
    def tenant_keyring(self) -> Keyring:
        """What tenants' images are read with besides their pull secrets."""
        return self.keyring.only_for(self.settings.registry.tenant_credential_hosts)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        keyring: Keyring | None = None,
        registry: RegistryClient | None = None,
        result_ttl: float | None = None,
        local_images: bool = False,
    ) -> ProcessContext:
        """Credentials come from the docker config in settings unless given. Tests may hand
        in a `registry` (one with an injected HTTP transport, say), which the context then
        owns. `result_ttl` overrides how long check results are reused (the tag TTL by
        default; 0 for a rebuild, which must see fresh answers). `local_images` lets
        `docker-daemon:` references be read (only `imagegate check` wants that).
        """
        if registry is not None:
            keyring = registry.keyring
        keyring = keyring or Keyring.from_docker_config(settings.registry.docker_config)
        registry = registry or RegistryClient(settings.registry, keyring)
        ttl = settings.registry.tag_ttl_seconds if result_ttl is None else result_ttl
        deep = settings.layers
        layers = LayerInspector.at(
            registry, deep.directory, max_layer_bytes=deep.max_layer_bytes,
            max_disk_bytes=deep.max_disk_bytes, concurrency=deep.download_concurrency,
            warm=deep.warm,
        )  # fmt: skip
        checker = Checker(
            registry, settings.check_concurrency, ttl, local_images=local_images,
            layers=layers, deep=deep.deep,
        )  # fmt: skip
        return cls(settings, keyring, registry, checker, layers)

    async def aclose(self) -> None:
        await self.layers.aclose()
        await self.registry.aclose()
