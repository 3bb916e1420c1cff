"""One validated settings object, read from ``POLYCERT_*`` environment variables.

With nothing set, PolyCert runs on one machine: SQLite under the data directory and an embedded
worker (no broker). ``POLYCERT_DATABASE_URL`` / ``POLYCERT_BROKER_URL`` switch to PostgreSQL and
Redis. Outside development, unsafe defaults (the development API token) are refused at load time,
as in tiangolo's full-stack template (``core/config.py``).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .chunking import FIRST_CHUNK

DEVELOPMENT_TOKEN = "polycert-dev-token"


def default_data_dir() -> Path:
    """``$POLYCERT_DATA_DIR`` or ``~/.local/share/polycert`` (XDG-style, per user)."""
    env = os.environ.get("POLYCERT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "polycert"


class CascadeOptions(BaseModel):
    """The batched cascade's thresholds and limits (``formulations.cascade.CascadeSettings``, issue 7).

    Set as JSON (``POLYCERT_CASCADE='{"attack_steps": 10, "branch_node_limit": 200}'``) or field by field
    (``POLYCERT_CASCADE__ATTACK_STEPS=10``). Defaults are the engine's. ``lp_time_limit`` and
    ``mip_time_limit`` are caps: a job's per-query time limit (``query_time_limit`` unless the job sets
    one) is spread over the query's targets and never exceeded (:meth:`engine_settings`).
    """

    model_config = ConfigDict(extra="forbid")
    symbolic: bool = True
    attack_steps: int = Field(20, ge=0)
    attack_restarts: int = Field(0, ge=0)
    strong_attack_steps: int = Field(50, ge=0)
    strong_attack_restarts: int = Field(5, ge=0)
    lp: bool = True
    lp_lines: int = Field(3, ge=1)
    lp_tighten: bool = True
    lp_time_limit: float | None = Field(10.0, gt=0)
    smooth_bab: bool = True
    smooth_bab_time_limit: float | None = Field(30.0, gt=0)
    klp: bool = False
    klp_k: int = Field(2, ge=2, le=3)
    klp_cluster: int = Field(4, ge=2)
    klp_max_groups: int = Field(30, ge=1)
    input_bab_nodes: int = Field(0, ge=0)
    branching: bool = True
    branch_node_limit: int = Field(400, ge=0)
    branch_lines: int = Field(12, ge=1)
    mip_solver: str | None = None
    mip_tolerance: float = Field(1e-4, gt=0)
    mip_max_rounds: int = Field(30, ge=0)
    mip_time_limit: float | None = Field(None, gt=0)
    seed: int = 0

    def engine_settings(self, *, query_time_limit: float | None, n_targets: int, solver: str | None = None,
                        answer: str = "bounds") -> Any:
        """The engine's ``CascadeSettings`` for one job: ``query_time_limit`` is each query's deadline (all its
        targets and stages), a target's MIP at most the query's time split evenly over its ``n_targets`` other
        classes, each LP's at most the whole query's."""
        from polycert.formulations.cascade import CascadeSettings  # the engine is heavy; settings load without it

        values = self.model_dump()
        values["answer"] = answer
        values["query_time_limit"] = query_time_limit
        if solver:
            values["mip_solver"] = solver
        if query_time_limit is not None:
            per_target = float(query_time_limit) / max(1, n_targets)
            values["mip_time_limit"] = min(per_target, values["mip_time_limit"] or math.inf)
            values["smooth_bab_time_limit"] = min(float(query_time_limit), values["smooth_bab_time_limit"] or math.inf)
            values["lp_time_limit"] = min(float(query_time_limit), values["lp_time_limit"] or math.inf)
        return CascadeSettings(**values)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POLYCERT_", extra="ignore", env_nested_delimiter="__")

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # None => sqlite:///<data_dir>/polycert.db
    broker_url: str | None = None  # None => embedded worker in the same process
    api_token: str = DEVELOPMENT_TOKEN
    chunk_size: int | None = Field(default=None, ge=1, le=10_000)  # queries per task; None: guided sizes
    chunk_seconds: float = Field(default=0.5, gt=0)  # guided sizes: engine seconds of the largest chunk
    query_time_limit: float = Field(default=60.0, gt=0)  # seconds per query, handed to the engine
    task_time_slack: float = Field(default=30.0, ge=0)  # extra seconds per chunk before Celery's limits
    visibility_timeout: int = Field(default=3600, ge=1)  # Redis redelivery of unacknowledged tasks
    # a chunk whose database went away retries with exponential back-off task_max_retries times, then every
    # task_retry_backoff_max seconds until the database answers (workers/tasks.py: it never gives up on it)
    task_max_retries: int = Field(default=5, ge=0)
    task_retry_backoff_max: float = Field(default=60.0, gt=0)
    chunk_max_attempts: int = Field(default=3, ge=1)  # lost deliveries before a chunk's suspect query is given up
    embedded_workers: int = Field(default=1, ge=1, le=64)
    queue_name: str = "polycert"
    # test only (tests/integration/test_faults.py): a fault the worker injects into the engine call of the
    # queries it names, "ACTION:ITEMS" (workers/faults.py); refused outside POLYCERT_ENVIRONMENT=test
    fault_inject: str | None = None
    cascade: CascadeOptions = Field(default_factory=CascadeOptions)  # POLYCERT_CASCADE (JSON) or POLYCERT_CASCADE__<FIELD>
    # uploads (POST /networks/upload), checked from the file's headers before any array is built
    # (service/uploads.py): the file, what its zip decompresses into, and the network it declares. A 784-1024x4
    # float64 network is ~40 MB and 3.9 M parameters; VNN-COMP's largest fully connected ones are within these
    upload_max_bytes: int = Field(default=64 * 2**20, ge=1)
    upload_max_decompressed_bytes: int = Field(default=256 * 2**20, ge=1)
    upload_max_parameters: int = Field(default=10_000_000, ge=1)
    upload_max_layers: int = Field(default=64, ge=1)
    upload_max_width: int = Field(default=16_384, ge=1)

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if value == "" else value  # compose passes ${POLYCERT_CHUNK_SIZE:-} as an empty string

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> "Settings":
        if self.fault_inject and self.environment != "test":
            raise ValueError("POLYCERT_FAULT_INJECT is a test hook: it is refused unless POLYCERT_ENVIRONMENT=test")
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
    def upload_limits(self):
        """The upload limits as :class:`service.uploads.UploadLimits`."""
        from .uploads import UploadLimits

        return UploadLimits(max_bytes=self.upload_max_bytes, max_decompressed_bytes=self.upload_max_decompressed_bytes,
                            max_parameters=self.upload_max_parameters, max_layers=self.upload_max_layers,
                            max_width=self.upload_max_width)

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: jobs run in an in-process pool."""
        return not self.broker_url

    def chunk_time_limits(self, query_seconds: float | None = None) -> tuple[float, float]:
        """Celery's (soft, hard) limits for a chunk whose queries' own limits add up to ``query_seconds``
        (default: a chunk of ``chunk_size``, or of a first guided chunk, at ``query_time_limit``), plus slack."""
        if query_seconds is None:
            query_seconds = (self.chunk_size or FIRST_CHUNK) * self.query_time_limit
        soft = query_seconds + self.task_time_slack
        return soft, soft + max(10.0, self.task_time_slack)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
