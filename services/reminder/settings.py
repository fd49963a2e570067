from pathlib import Path

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REMINDER_", extra="ignore")

    port: int = 8002
    pack: str = "cn"
    sms_sink: Path | None = None
    retry_after_seconds: int = 60
    # Who holds an agenda claim: stable across restarts of one replica (its host name in a
    # pod), so a restarted replica takes back what it held at once.
    replica_id: str | None = None
    agenda_lease_seconds: float = 60.0
    verification_channel: str = "the official hotline printed on your loan contract"

    def sms_sink_path(self) -> Path:
        return self.sms_sink or self.var_dir / "sms-gateway.jsonl"
