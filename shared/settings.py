"""Settings read from the environment: Kafka, auth and what every service has in common.

Each service subclasses ServiceSettings with its own prefix (ESCALATION_, REMINDER_, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.clock import Clock, SimulatedClock, SystemClock


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    # Short group timings: rebalances on small clusters (and Tansu) finish in seconds.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    max_request_bytes: int = 2 * 1024 * 1024
    # Every call to the broker has a time limit, well inside the 10 s a service has to stop.
    call_timeout_seconds: float = Field(5.0, gt=0, le=8)
    # How often a running service checks that the broker is still the one it started with.
    incarnation_check_seconds: float = Field(2.0, gt=0)

    def client_options(self) -> dict[str, object]:
        """What every aiokafka client of a service is built with."""
        return {"bootstrap_servers": self.bootstrap,
                "request_timeout_ms": int(self.call_timeout_seconds * 1000),
                "connections_max_idle_ms": 60_000}

    def consumer_options(self) -> dict[str, object]:
        return {**self.client_options(), "session_timeout_ms": self.session_timeout_ms,
                "heartbeat_interval_ms": self.heartbeat_interval_ms,
                "fetch_max_bytes": 4 * self.max_request_bytes,
                "max_partition_fetch_bytes": self.max_request_bytes, "fetch_max_wait_ms": 100}


class AuthSettings(BaseSettings):
    """The JWT signing secret: given directly (a k8s Secret as env) or kept in a file."""

    model_config = SettingsConfigDict(env_prefix="DUNWELL_JWT_", extra="ignore")

    secret: str | None = None
    secret_file: Path | None = None


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    var_dir: Path = Field(Path("var"), validation_alias="DUNWELL_VAR_DIR")
    store: Path | None = None
    relay_idle_seconds: float = 1.0
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    # The clock of the whole installation (CONTRACT.md, "Time"): the wall clock, or time
    # simulated for demos and tests and shared through var/clock.json.
    clock: Literal["wall", "simulated"] = Field("wall", validation_alias="DUNWELL_CLOCK")
    environment: Literal["development", "production"] = Field(
        "development", validation_alias="DUNWELL_ENVIRONMENT")

    @model_validator(mode="after")
    def _no_simulated_time_in_production(self) -> ServiceSettings:
        if self.environment == "production" and self.clock != "wall":
            raise ValueError("DUNWELL_CLOCK=simulated is refused in production "
                             "(DUNWELL_ENVIRONMENT=production): only the wall clock is real")
        return self

    def make_clock(self) -> Clock:
        if self.clock == "simulated":
            return SimulatedClock(self.clock_path())
        return SystemClock()

    def clock_path(self) -> Path:
        return self.var_dir / "clock.json"

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
