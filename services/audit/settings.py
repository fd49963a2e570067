import os
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from shared.policy_pack import PACKS
from shared.settings import ServiceSettings

from services.audit.keys import retired_vkeys
from services.audit.signer import generate_signer
from services.audit.store import is_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIT_", extra="ignore")

    port: int = 8004
    origin: str = "dunwell.local/audit"
    # The Ed25519 signer in Go sumdb "skey" text: from a k8s Secret, or a file under var/.
    signer_key: str | None = None
    signer_key_file: Path | None = None
    # Verifier keys of this log that no longer sign (after a key rotation), oldest first:
    # vkey texts separated by commas or newlines, and/or a file of them, one a line. They stay
    # published so that the checkpoints they signed keep verifying.
    retired_vkeys: str | None = None
    retired_vkeys_file: Path | None = None
    checkpoint_interval_seconds: float = 0.5
    # The installation's pack: the rules a loan is judged by when it names no jurisdiction.
    pack: str = "cn"
    # The log's store on PostgreSQL (production: a URL from a k8s Secret); unset, SQLite
    # under var/.
    database_url: str | None = None

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is not None and not is_database_url(url):
            raise ValueError("AUDIT_DATABASE_URL must be a postgresql:// URL")
        return url

    def log_store(self) -> Path | str:
        """Where the log is kept: the PostgreSQL URL if one is set, else the SQLite file."""
        return self.database_url or self.store_path("audit")

    @field_validator("pack")
    @classmethod
    def _known_pack(cls, name: str) -> str:
        if name not in PACKS:
            raise ValueError(f"unknown policy pack {name!r}; known: {', '.join(PACKS)}")
        return name

    def signer_path(self) -> Path:
        return self.signer_key_file or self.var_dir / "audit-signer.key"

    def signer_text(self) -> str:
        """The signer key; the embedded default makes one the first time (mode 0600)."""
        if self.signer_key:
            return self.signer_key
        path = self.signer_path()
        if not path.exists():
            skey, _ = generate_signer(self.origin)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(skey + "\n")
        return path.read_text().strip()

    def retired_keys(self) -> list[str]:
        """The retired verifier keys: AUDIT_RETIRED_VKEYS, then AUDIT_RETIRED_VKEYS_FILE's."""
        text = self.retired_vkeys or ""
        if self.retired_vkeys_file is not None:
            text += "\n" + self.retired_vkeys_file.read_text()
        return retired_vkeys(text, self.origin)
