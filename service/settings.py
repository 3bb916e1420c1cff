"""One validated settings object, read from ``POLYCERT_*`` environment variables.

With nothing set, PolyCert runs on one machine: SQLite under the data directory and an embedded
worker (no broker). ``POLYCERT_DATABASE_URL`` / ``POLYCERT_BROKER_URL`` switch to PostgreSQL and
Redis. Outside development, unsafe defaults (the development API token) are refused at load time,
as in tiangolo's full-stack template (``core/config.py``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_TOKEN = "polycert-dev-token"


def default_data_dir() -> Path:
    """``$POLYCERT_DATA_DIR`` or ``~/.local/share/polycert`` (XDG-style, per user)."""
    env = os.environ.get("POLYCERT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "polycert"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POLYCERT_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # None => sqlite:///<data_dir>/polycert.db
    broker_url: str | None = None  # None => embedded worker in the same process
    api_token: str = DEVELOPMENT_TOKEN
    chunk_size: int = Field(default=20, ge=1, le=10_000)
    query_time_limit: float = Field(default=60.0, gt=0)  # seconds per query, handed to the engine
    task_time_slack: float = Field(default=30.0, ge=0)  # extra seconds per chunk before Celery's limits
    visibility_timeout: int = Field(default=3600, ge=1)  # Redis redelivery of unacknowledged tasks
    task_max_retries: int = Field(default=5, ge=0)
    chunk_max_attempts: int = Field(default=3, ge=1)  # a chunk that loses its worker this often is given up
    embedded_workers: int = Field(default=1, ge=1, le=64)
    queue_name: str = "polycert"

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> "Settings":
        if self.environment == "production":
            if self.api_token == DEVELOPMENT_TOKEN or len(self.api_token) < 16:
                raise ValueError(
                    "POLYCERT_API_TOKEN must be set to a secret of at least 16 characters when"
                    " POLYCERT_ENVIRONMENT=production (the development token is refused)"
                )
            if self.database_url is None:
                raise ValueError("POLYCERT_DATABASE_URL must be set when POLYCERT_ENVIRONMENT=production")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'polycert.db'}"

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: jobs run in an in-process pool."""
        return not self.broker_url

    def chunk_time_limits(self) -> tuple[float, float]:
        """Celery's (soft, hard) limits for one chunk: every query may use its own limit, plus slack."""
        soft = self.chunk_size * self.query_time_limit + self.task_time_slack
        return soft, soft + max(10.0, self.task_time_slack)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
