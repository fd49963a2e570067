"""Settings read from the environment: Kafka, auth and what every service has in common.

Each service subclasses ServiceSettings with its own prefix (ESCALATION_, REMINDER_, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    # Short group timings: rebalances on small clusters (and Tansu) finish in seconds.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    max_request_bytes: int = 2 * 1024 * 1024


class AuthSettings(BaseSettings):
    """The JWT signing secret: given directly (a k8s Secret as env) or kept in a file."""

    model_config = SettingsConfigDict(env_prefix="DUNWELL_JWT_", extra="ignore")

    secret: str | None = None
    secret_file: Path | None = None


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    var_dir: Path = Field(Path("var"), validation_alias=AliasChoices("DUNWELL_VAR_DIR"))
    store: Path | None = None
    relay_idle_seconds: float = 0.05
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    def store_path(self, service: str) -> Path:
        return self.store or self.var_dir / f"{service}.db"

    def persistence_env(self, service: str) -> dict[str, str]:
        """SQLite under var/ unless the eventsourcing library's own settings say otherwise."""
        if os.environ.get("PERSISTENCE_MODULE"):
            return {}
        path = self.store_path(service)
        path.parent.mkdir(parents=True, exist_ok=True)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}

    def secret_file(self) -> Path:
        return self.auth.secret_file or self.var_dir / "jwt.secret"
