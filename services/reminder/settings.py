from ipaddress import ip_address
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# Where `dunwell run` starts the embedded default's providers (dunwell/sinks.py).
PROVIDER_SINK = "http://127.0.0.1:8005"
SMTP_SINK_PORT = 8025


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REMINDER_", extra="ignore")

    port: int = 8002
    pack: str = "cn"
    retry_after_seconds: int = 60
    # Who holds an agenda claim: stable across restarts of one replica (its host name in a
    # pod), so a restarted replica takes back what it held at once.
    replica_id: str | None = None
    agenda_lease_seconds: float = 60.0
    # Due entries claimed at once: a claim's plans step in one transaction, its reminders are
    # sent together, `send_concurrency` at a time (each waits on its provider in a thread).
    agenda_batch: int = Field(200, ge=1, le=2000)
    send_concurrency: int = Field(32, ge=1, le=256)
    verification_channel: str = "the official hotline printed on your loan contract"
    # Where a visit's notice sends the borrower to check a collector's letter, by its code
    # (the visit service's `GET /v1/verify/{code}`).
    verify_url: str = "http://127.0.0.1:8003/v1/verify"

    # The channels. SMS and push: a provider's JSON API; e-mail: an SMTP relay.
    sms_gateway_url: str = PROVIDER_SINK
    push_gateway_url: str = PROVIDER_SINK
    gateway_token: SecretStr | None = None  # a bearer token for the providers, if they want one
    gateway_connect_timeout_seconds: float = Field(1.0, gt=0)
    gateway_read_timeout_seconds: float = Field(3.0, gt=0)
    gateway_attempts: int = Field(4, ge=1, le=10)
    # All tries of one send end within this; a worker thread is never held longer.
    gateway_deadline_seconds: float = Field(6.0, gt=0, le=9)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = SMTP_SINK_PORT
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = None  # whom to trust for STARTTLS; the system's CAs if unset
    smtp_timeout_seconds: float = Field(5.0, gt=0, le=9)
    mail_from: str = "dunwell <reminders@dunwell.localhost>"

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> "Settings":
        """A password goes over the wire only inside STARTTLS, unless the relay is local."""
        if self.smtp_username and not self.smtp_starttls and not _loopback(self.smtp_host):
            raise ValueError("REMINDER_SMTP_USERNAME needs REMINDER_SMTP_STARTTLS=true for a "
                             "relay that is not on this host")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
