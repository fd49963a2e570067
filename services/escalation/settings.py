from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ESCALATION_", extra="ignore")

    port: int = 8001
    pack: str = "cn"
    # Who holds an agenda claim: stable across restarts of one replica (its host name in a
    # pod), so a restarted replica takes back what it held at once.
    replica_id: str | None = None
    agenda_lease_seconds: float = 60.0
    agenda_batch: int = 200  # cases claimed at once by the daily evaluation
