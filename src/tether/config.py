"""One settings object, built by the entry point and passed down.

Every setting reads from the environment with the `TETHER_` prefix; the CLI overrides
some of them from flags. Nothing below the entry point reads `os.environ`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_TOKEN_LIFETIME = 3600
MAX_TASK_LIFETIME = 86400


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    data_dir: Path = Field(Path(".tether"), description="Where the embedded database, keys and bundles live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; postgresql+psycopg://… selects PostgreSQL. Default: SQLite in data_dir."
    )
    host: str = Field("127.0.0.1", description="Address `tether serve` binds.")
    port: int = Field(8700, ge=1, le=65535, description="Port `tether serve` binds.")
    public_url: str | None = Field(
        None, description="Base URL clients reach Tether at; also the OAuth issuer. Default http://host:port."
    )
    token_lifetime: int = Field(300, ge=10, le=MAX_TOKEN_LIFETIME, description="Task token lifetime, seconds.")
    task_lifetime: int = Field(3600, ge=60, le=MAX_TASK_LIFETIME, description="A task's own maximum lifetime, seconds.")
    policy_dir: Path | None = Field(None, description="Cedar policy bundle directory. Default: the shipped pack.")
    gateway_config: Path | None = Field(None, description="Gateway config (upstreams, catalogs, route maps), YAML.")
    master_key: SecretStr | None = Field(None, description="Vault master key (base64, 32 bytes). Default: key file.")
    prompt_mode: Literal["digest", "full", "redacted"] = Field(
        "digest", description="How prompts are kept: digest only, full text, or text with secrets redacted."
    )
    checkpoint_every: int = Field(1000, ge=1, description="Sign an audit checkpoint every N events.")
    checkpoint_seconds: float = Field(10.0, gt=0, description="…or every T seconds, whichever comes first.")
    checkpoint_webhook: str | None = Field(None, description="POST each signed audit checkpoint here (JSON).")
    console_origin: str | None = Field(None, description="Serve the console on its own origin.")
    log_level: str = Field("info", description="Operator log level.")
    revocation_poll_seconds: float = Field(0.25, gt=0, le=1.0, description="SQLite revocation poll interval.")
    trusted_issuers: Path | None = Field(
        None, description="JSON/YAML file of external token issuers (issuer, audience, person_claim, jwks)."
    )
    # approvals and break-glass
    approval_ttl: int = Field(900, ge=30, le=86400, description="Seconds an approval request stays decidable/usable.")
    approval_wait_seconds: float = Field(
        0.0, ge=0, le=300, description="How long a gateway may wait for a decision before answering (0: at once)."
    )
    breakglass_max_seconds: int = Field(3600, ge=60, le=3600, description="Longest break-glass grant, seconds (≤ 1 h).")
    webhook_urls: list[str] = Field(
        default_factory=list, description="Webhooks for approval/break-glass notices (JSON)."
    )
    webhook_slack_urls: list[str] = Field(
        default_factory=list, description="Slack-compatible incoming webhooks for the same notices."
    )
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA-256 key signing webhook bodies.")
    webhook_retries: int = Field(3, ge=1, le=10, description="Delivery attempts per webhook notification.")
    console_idle_seconds: int = Field(900, ge=60, le=3600, description="Console session idle timeout, seconds.")
    console_max_seconds: int = Field(28800, ge=300, le=28800, description="Console session absolute lifetime, seconds.")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'tether.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def issuer(self) -> str:
        return self.base_url

    def masked(self) -> dict[str, Any]:
        """The settings as shown by `tether config show`: secrets and passwords masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "********" if value.get_secret_value() else None
            elif name == "database_url" and value and "@" in value:
                scheme, rest = value.split("://", 1)
                creds, host = rest.rsplit("@", 1)
                user = creds.split(":", 1)[0]
                out[name] = f"{scheme}://{user}:********@{host}" if ":" in creds else value
            else:
                out[name] = str(value) if isinstance(value, Path) else value
        return out


__all__ = ["MAX_TASK_LIFETIME", "MAX_TOKEN_LIFETIME", "Settings"]
