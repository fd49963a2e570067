from pathlib import Path

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REMINDER_", extra="ignore")

    port: int = 8002
    pack: str = "cn"
    sms_sink: Path | None = None
    dispatch_interval_seconds: float = 0.1
    retry_after_seconds: int = 60
    verification_channel: str = "the official hotline printed on your loan contract"

    def sms_sink_path(self) -> Path:
        return self.sms_sink or self.var_dir / "sms-gateway.jsonl"
