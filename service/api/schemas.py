"""Pydantic models of the HTTP API, split by use (create / public / list with count)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

from pydantic import Field

from service.batches import BatchRequest, DatasetSlice, JobRequest  # noqa: F401  (JobCreate is the job request)

JobCreate = JobRequest  # robustness batch, invertibility queries or a VNN-COMP batch, told apart by ``kind``


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Every timestamp in UTC with its zone: SQLite gives back naive datetimes (which PolyCert stores in
    UTC), PostgreSQL aware ones; both then serialise alike (``2026-12-02T18:30:00.123456Z``)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


UtcDatetime = Annotated[dt.datetime, AfterValidator(_utc)]


class NetworkBuiltin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    builtin: str


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(..., ge=0, le=100)  # share of the smallest-magnitude weights set to zero
    scope: str = "layer"  # layer: that share in every layer; global: ranked over all layers together
    name: str | None = None


class QuantizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bits: int = Field(8, ge=2, le=32)
    name: str | None = None


class NetworkPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    digest: str
    name: str
    architecture: str
    source_format: str
    input_size: int
    output_size: int
    created_at: UtcDatetime
    aliases: list[str] = []  # other names the same weights were uploaded under; a job may name any of them


class NetworkRegistered(NetworkPublic):
    created: bool


class NetworkList(BaseModel):
    count: int
    data: list[NetworkPublic]


class Progress(BaseModel):
    total: int
    done: int
    errors: int
    remaining: int
    fraction: float
    verdicts: dict[str, dict[str, int]]
    chunks: dict[str, int]


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    network_id: int
    kind: str
    status: str
    created_by: str
    parameters: dict[str, Any]
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: str | None = None
    progress: Progress | None = None


class JobList(BaseModel):
    count: int
    data: list[JobPublic]


class Tight(BaseModel):
    kind: str
    layer: int | None
    neuron: int | None
    index: int | None
    pixel: int | None


class AttackPublic(BaseModel):
    found: bool
    margin: float | None
    seconds: float


class CertificatePublic(BaseModel):
    id: int
    query_id: int
    job_id: int
    item: int
    source_index: int | None
    label: int
    target: int | None
    eps: float
    norm: str
    method: str
    verdict: str
    reason: str | None
    stage: str
    lower: float | None  # None stands for an infinite bound (JSON has no infinity)
    upper: float | None
    gap: float | None
    counterexample: list[float] | None
    counterexample_value: float | None
    solver: str
    times: dict[str, Any]
    size: dict[str, Any]
    targets: list[dict[str, Any]]
    error: str | None
    wall_time: float
    answer: str | None = None  # the kind's word: invertible / not invertible / unknown; holds / violated / unknown
    extra: dict[str, Any] | None = None  # witness pair (x, y) with distance and output difference, radius evaluations
    tight: list[Tight] | None = None
    attack: AttackPublic | None = None

    _finite = field_validator("lower", "upper", "gap", "counterexample_value", mode="before")(
        lambda cls, v: _finite(v)
    )


class ResultPage(BaseModel):
    count: int
    offset: int
    limit: int
    data: list[CertificatePublic]


class ComparisonRowPublic(BaseModel):
    item: int
    source_index: int | None
    label: int
    eps: float
    lp_verdict: str | None
    lp_lower: float | None
    mip_verdict: str | None
    mip_lower: float | None
    mip_upper: float | None
    mip_gap: float | None
    relaxation_gap: float | None
    agreement: str


class ComparisonPublic(BaseModel):
    job_id: int
    summary: dict[str, Any]
    rows: list[ComparisonRowPublic]


class PixelMaps(BaseModel):
    digit: int
    certificates: int
    input_size: int
    frequency: dict[str, list[float]]
    counts: dict[str, list[int]]


class EnvelopeActivityRow(BaseModel):
    kind: str
    layer: int | None
    neuron: int | None
    index: int | None
    count: int
    frequency: float


class EnvelopeActivity(BaseModel):
    digit: int
    certificates: int
    activity: list[EnvelopeActivityRow]


class DigitSignatures(BaseModel):
    digit: int
    pixels: PixelMaps
    envelope: EnvelopeActivity


class Message(BaseModel):
    message: str
