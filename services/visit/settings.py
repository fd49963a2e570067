from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISIT_", extra="ignore")

    port: int = 8003
    pack: str = "cn"
