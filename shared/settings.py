"""Settings read from the environment: Kafka, auth and what every service has in common.

Each service subclasses ServiceSettings with its own prefix (ESCALATION_, REMINDER_, ...).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.clock import Clock, SimulatedClock, SystemClock


class KafkaSettings(BaseSettings):
    """How every client of a service reaches the cluster, and how the topics are made.

    The defaults suit the embedded broker on loopback. A production cluster (Strimzi, a
    managed Kafka) is reached with TLS and SCRAM-SHA-512: `KAFKA_SECURITY_PROTOCOL=SASL_SSL`,
    the mechanism, the user and password, and the cluster's CA file.
    """

    # A refused setting is reported without its value: it may be a password (a database URL
    # with its credentials, a SASL password, a signer key) and the report goes to the logs.
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore",
                                      hide_input_in_errors=True)

    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    # Unset: the broker's own default. With replication factor 3, set 2, so that a write
    # acknowledged by acks=all is on two brokers and one broker may be down.
    min_insync_replicas: int | None = Field(None, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # The CA that signed the brokers' certificates (Strimzi: the <cluster>-cluster-ca-cert
    # secret's ca.crt); unset, the system's CAs. A client certificate and key only for
    # brokers that authenticate clients by TLS.
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # Short group timings: rebalances on small clusters (and Tansu) finish in seconds.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    max_request_bytes: int = 2 * 1024 * 1024
    # Every call to the broker has a time limit, well inside the 10 s a service has to stop.
    call_timeout_seconds: float = Field(5.0, gt=0, le=8)
    # How often a running service checks that the broker is still the one it started with.
    incarnation_check_seconds: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _coherent(self) -> KafkaSettings:
        if self.min_insync_replicas is not None \
                and self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"KAFKA_MIN_INSYNC_REPLICAS ({self.min_insync_replicas}) cannot "
                             f"exceed KAFKA_REPLICATION_FACTOR ({self.replication_factor}): "
                             "no write could ever be acknowledged")
        if self.security_protocol.startswith("SASL_") \
                and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                             "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if not self.security_protocol.endswith("SSL") and any(
                (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)):
            raise ValueError("KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL is "
                             f"{self.security_protocol}: use SSL or SASL_SSL")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        for path in (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"Kafka TLS file {path} does not exist")
        return self

    def topic_configs(self) -> dict[str, str]:
        """What every topic is created with besides its partitions and replicas."""
        if self.min_insync_replicas is None:
            return {}
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return context

    def security_options(self) -> dict[str, Any]:
        """TLS and SASL, as every aiokafka client (producer, consumer, admin) takes them."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_password is not None  # the validator saw to it
            options.update(sasl_mechanism=self.sasl_mechanism,
                           sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password.get_secret_value())
        return options

    def client_options(self) -> dict[str, Any]:
        """What every aiokafka client of a service is built with."""
        return {"bootstrap_servers": self.bootstrap,
                "request_timeout_ms": int(self.call_timeout_seconds * 1000),
                "connections_max_idle_ms": 60_000, **self.security_options()}

    def consumer_options(self) -> dict[str, Any]:
        return {**self.client_options(), "session_timeout_ms": self.session_timeout_ms,
                "heartbeat_interval_ms": self.heartbeat_interval_ms,
                "fetch_max_bytes": 4 * self.max_request_bytes,
                "max_partition_fetch_bytes": self.max_request_bytes, "fetch_max_wait_ms": 100}


# What a provider may sign with: public-key algorithms only. An HMAC secret shared with a
# provider could sign for it, and `none` signs nothing.
OIDC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"})


class OidcSettings(BaseSettings):
    """The operator's OpenID Connect provider (Keycloak, Dex, Entra ID, ...), whose signed
    tokens are accepted besides the installation's own; unset issuer, none are (docs/oidc.md).
    """

    model_config = SettingsConfigDict(env_prefix="DUNWELL_OIDC_", extra="ignore",
                                      hide_input_in_errors=True)

    issuer: str | None = None
    audience: str | None = None
    # Unset: the `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    jwks_url: str | None = None
    algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["RS256", "ES256"])
    # A claim name, or a dotted path into nested claims (`realm_access.roles`); a list there
    # gives the first of its values that is a dunwell role.
    role_claim: str = "role"
    subject_claim: str = "sub"
    leeway_seconds: float = Field(30.0, ge=0, le=120)
    jwks_cache_seconds: float = Field(300.0, ge=0)
    # The least time between two fetches of the key set, however many tokens name a key it
    # does not hold: a rotation is picked up, a stream of made-up key ids costs the provider
    # nothing.
    jwks_refetch_seconds: float = Field(30.0, ge=0)
    fetch_timeout_seconds: float = Field(3.0, gt=0, le=10)
    ca_file: Path | None = None  # whom to trust for the provider's TLS (a private CA)
    # Only the provider's tokens; the installation's own secret signs nothing then.
    only: bool = False
    environment: Literal["development", "production"] = Field(
        "development", validation_alias="DUNWELL_ENVIRONMENT")

    @field_validator("algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _coherent(self) -> OidcSettings:
        if self.issuer is None:
            if self.only or self.audience or self.jwks_url:
                raise ValueError("DUNWELL_OIDC_ONLY, _AUDIENCE and _JWKS_URL need "
                                 "DUNWELL_OIDC_ISSUER, the provider")
            return self
        if not self.audience:
            raise ValueError("DUNWELL_OIDC_ISSUER needs DUNWELL_OIDC_AUDIENCE: without it a "
                             "token the provider issued to any other client would do")
        self.check_url("DUNWELL_OIDC_ISSUER", self.issuer)
        if self.jwks_url is not None:
            self.check_url("DUNWELL_OIDC_JWKS_URL", self.jwks_url)
        refused = [a for a in self.algorithms if a not in OIDC_ALGORITHMS]
        if refused or not self.algorithms:
            raise ValueError(f"DUNWELL_OIDC_ALGORITHMS may name only public-key algorithms "
                             f"({', '.join(sorted(OIDC_ALGORITHMS))}); refused: "
                             f"{', '.join(refused) or 'an empty list'}")
        if not self.role_claim.strip() or not self.subject_claim.strip():
            raise ValueError("DUNWELL_OIDC_ROLE_CLAIM and _SUBJECT_CLAIM cannot be empty")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"DUNWELL_OIDC_CA_FILE {self.ca_file} does not exist")
        return self

    def check_url(self, name: str, url: str) -> None:
        """https in production; http too elsewhere, for a provider on loopback."""
        parts = urlsplit(url)
        schemes = ("https",) if self.environment == "production" else ("https", "http")
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"{name} must be an {' or '.join(schemes)} URL"
                             + (" in production (DUNWELL_ENVIRONMENT=production)"
                                if self.environment == "production" else "") + f": {url!r}")

    def discovery_url(self) -> str:
        assert self.issuer is not None
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class AuthSettings(BaseSettings):
    """The JWT signing secret: given directly (a k8s Secret as env) or kept in a file."""

    model_config = SettingsConfigDict(env_prefix="DUNWELL_JWT_", extra="ignore",
                                      hide_input_in_errors=True)

    secret: str | None = None
    secret_file: Path | None = None
    oidc: OidcSettings = Field(default_factory=OidcSettings)


class ServiceSettings(BaseSettings):
    # Inherited by each service's settings: a refused value is never echoed (see KafkaSettings).
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

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
