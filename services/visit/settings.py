from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISIT_", extra="ignore")

    port: int = 8003
    pack: str = "cn"
    # Where the recordings of visits are kept (var/recordings by default), and how large one
    # may be.
    recordings_dir: Path | None = None
    max_recording_bytes: int = Field(4 * 1024**3, gt=0)
    # GET /v1/verify/{code} takes no token, so each client gets this many a second (with a
    # burst of twice as many) before 429.
    verify_per_second: float = Field(5.0, gt=0)
    # The agenda (complaints whose days to answer run out): who holds a claim (stable across
    # restarts of one replica), for how long, and how many are claimed at once.
    replica_id: str | None = None
    agenda_lease_seconds: float = Field(60.0, gt=0)
    agenda_batch: int = Field(50, ge=1)

    def recordings_path(self) -> Path:
        return self.recordings_dir or self.var_dir / "recordings"
