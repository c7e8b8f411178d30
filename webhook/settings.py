"""All configuration in one place: environment (`IMAGEGATE_*`) and CLI flags end up here.

No other module reads `os.environ`; they receive a `Settings` (or the part they need).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """How imagegate talks to registries."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEGATE_REGISTRY_", extra="forbid", populate_by_name=True
    )

    insecure_registries: list[str] = Field(
        default_factory=list,
        description="Registries spoken to over plain HTTP besides loopback ones (host[:port]).",
    )
    docker_config: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "IMAGEGATE_REGISTRY_DOCKER_CONFIG", "DOCKER_CONFIG", "docker_config"
        ),
        description="Docker config.json (or the directory holding it); default ~/.docker.",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout.")
    retries: int = Field(default=3, ge=0, description="Retries on 429/5xx and connection errors.")
    backoff_seconds: float = Field(default=0.2, ge=0, description="First retry delay; doubles.")
    max_retry_after_seconds: float = Field(
        default=5.0, ge=0, description="Longest Retry-After we are willing to honour."
    )
    max_manifest_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_config_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    cache_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Digest cache size.")
    tag_ttl_seconds: float = Field(
        default=30.0, ge=0, description="How long tag→digest is trusted."
    )
    negative_ttl_seconds: float = Field(
        default=5.0, ge=0, description="How long failures are cached."
    )


class Settings(BaseSettings):
    """Top-level settings for every imagegate command."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEGATE_", env_nested_delimiter="__", extra="forbid"
    )

    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    platform: str | None = Field(
        default=None, description="Platform to check (os/arch[/variant]); default: this machine."
    )
    check_concurrency: int = Field(default=16, gt=0, description="Images checked at once.")
