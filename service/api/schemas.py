"""Pydantic models of the HTTP API, split by use (create / public / list with count)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from polycert.batches import BatchRequest, DatasetSlice, JobRequest  # noqa: F401  (JobCreate is the job request)

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


class DomainPublic(BaseModel):
    """A box [lower, upper]: a number for every coordinate alike or one per coordinate; null is infinite."""
    lower: float | list[float | None] | None
    upper: float | list[float | None] | None


def _domain_or_unit(value: Any) -> Any:
    # rows stored before domains were recorded were answered on [0, 1] (migration 0003 sets it; belt and braces)
    return {"lower": 0.0, "upper": 1.0} if value is None else value


class NetworkPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    digest: str
    name: str
    architecture: str
    source_format: str
    input_size: int
    output_size: int
    input_domain: DomainPublic  # every query on the network is about balls clipped to it (or a narrower box)
    created_at: UtcDatetime
    aliases: list[str] = []  # other names the same weights were uploaded under; a job may name any of them

    _domain = field_validator("input_domain", mode="before")(lambda cls, v: _domain_or_unit(v))


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


class InputSetPublic(BaseModel):
    """The exact set a certificate is about: the ``norm`` ball of radius ``eps`` around the centre whose
    float64 bytes hash to ``center_sha256``, intersected with ``domain``. ``lower`` / ``upper``: the smallest
    box holding it (rounded outward), with ``boxes=true``."""
    norm: str
    eps: float
    center_sha256: str
    domain: DomainPublic
    lower: list[float] | None = None
    upper: list[float] | None = None


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
    input_set: InputSetPublic | None = None  # None: stored before certificates recorded their set

    _finite = field_validator("lower", "upper", "gap", "counterexample_value", mode="before")(
        lambda cls, v: _finite(v)
    )


class ResultPage(BaseModel):
    count: int
    offset: int
    limit: int
    data: list[CertificatePublic]


class ComparisonRowPublic(BaseModel):
    """One (input, eps) pair: the LP bound and verdict beside the exact MIP bracket and verdict."""

    item: int
    source_index: int | None
    label: int
    eps: float
    lp_verdict: str | None
    lp_lower: float | None = Field(description="the LP relaxation's lower bound on the minimum margin")
    mip_verdict: str | None
    mip_lower: float | None = Field(description="the exact minimum margin lies in [mip_lower, mip_upper]")
    mip_upper: float | None
    mip_gap: float | None
    relaxation_gap: float | None = Field(description="mip_lower - lp_lower; null where either is missing or infinite")
    agreement: str = Field(description="agree / lp_inconclusive / mip_inconclusive / conflict / pending")
    differ: bool = Field(description="both answered, with different verdicts")
    misclassified: bool = Field(description="the input itself is misclassified (its centre falsifies the query)")
    negative_gap: bool = Field(description="mip_lower below lp_lower (or klp_lower) by more than the tolerance: a soundness problem")
    klp_verdict: str | None = Field(None, description="the k-neuron LP's verdict, when the job asked for klp")
    klp_lower: float | None = Field(None, description="the k-neuron LP's lower bound on the minimum margin")
    klp_gain: float | None = Field(None, description="klp_lower - lp_lower: what the k-neuron constraints add")
    klp_gap: float | None = Field(None, description="mip_lower - klp_lower: what the k-neuron relaxation still loses")


class ComparisonTally(BaseModel):
    """Counts over a set of pairs. pending + misclassified + verified + falsified + unknown + conflicts = pairs
    (verified / falsified: by either method, both being sound; falsified leaves misclassified inputs out)."""

    pairs: int
    answered: int
    pending: int
    misclassified: int
    verified: int
    falsified: int
    unknown: int
    conflicts: int = Field(description="LP verified and MIP falsified or the reverse: a soundness problem")
    lp_verified: int
    mip_verified: int
    both_verified: int
    mip_only_verified: int = Field(description="the exact MIP proves what the LP relaxation cannot")
    lp_only_verified: int
    mip_falsified: int
    mip_unknown: int
    negative_gaps: int = Field(description="pairs whose MIP lower bound lies below the LP bound beyond the tolerance")
    gaps: int = Field(description="pairs whose relaxation gap is a number (the statistics below are over them)")
    gap_median: float | None
    gap_p90: float | None
    gap_max: float | None
    klp_pairs: int = Field(0, description="pairs with a k-neuron LP answer (jobs that asked for klp)")
    klp_verified: int = 0
    klp_over_lp: int = Field(0, description="the k-neuron LP proves what the single-neuron LP cannot")
    mip_over_klp: int = Field(0, description="the exact MIP proves what the k-neuron LP cannot")
    klp_gap_median: float | None = None
    klp_gap_p90: float | None = None
    klp_gap_max: float | None = None


class ComparisonEpsTally(ComparisonTally):
    eps: float


class ComparisonDigitTally(ComparisonTally):
    digit: int


class ComparisonSummary(BaseModel):
    tolerance: float = Field(description="relative + absolute tolerance of the exact bracket (negative gaps)")
    total: ComparisonTally
    by_eps: list[ComparisonEpsTally]
    by_digit: list[ComparisonDigitTally]


class ComparisonPublic(BaseModel):
    """The summary covers the whole job; ``rows`` are the page of the pairs the filter keeps (``count``)."""

    job_id: int
    summary: ComparisonSummary
    count: int
    offset: int
    limit: int
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


class SignatureNetwork(BaseModel):
    id: int
    name: str
    input_size: int
    output_size: int


class NeuronShare(BaseModel):
    """Share of the certificates in scope with this tight constraint (kind envelope_lower / envelope_upper:
    index = line, -1 the image bound; segment: index = segment; region: index = region; relu_active ...)."""

    layer: int | None
    neuron: int | None
    kind: str
    index: int | None
    count: int
    share: float


class DigitSignatures(BaseModel):
    """``GET /signatures``: one network's certificates of one digit. ``pixel_lower[i]`` / ``pixel_upper[i]``:
    share of the ``n`` certificates whose optimum puts pixel i at its lower / upper bound (length
    ``input_size``, row-major ``image_side`` x ``image_side`` where the input is a square image);
    ``neurons``: per-neuron shares; the individual certificates: ``GET /signatures/certificates`` with the
    same parameters (paged). ``pixels`` and ``envelope`` are the same counts in the older shape."""

    digit: int
    n: int = 0
    source: str = "all"
    job_id: int | None = None
    method: str | None = None
    eps: float | None = None
    network: SignatureNetwork | None = None
    input_size: int = 0
    image_side: int | None = None
    pixel_lower: list[float] = []
    pixel_upper: list[float] = []
    pixel_counts: dict[str, list[int]] = {}
    neurons: list[NeuronShare] = []
    region_names: list[list[str]] = []  # per hidden layer: the names of the region indices
    pixels: PixelMaps
    envelope: EnvelopeActivity


class Message(BaseModel):
    message: str


class ErrorMessage(BaseModel):
    """An error the service explains in one sentence (401, 404, 409, 413, 503)."""

    detail: str


class FieldError(BaseModel):
    """One of FastAPI's request-validation errors: where (``loc``), what (``msg``), which rule (``type``)."""

    model_config = ConfigDict(extra="allow")  # FastAPI adds ``input`` and ``ctx``
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """422: the request's fields broke the schema (a list of field errors, FastAPI's form), or the request is
    well-formed but names something that cannot be answered (one sentence: an eps beyond the input domain,
    a digit the network does not have, an unreadable network file)."""

    detail: list[FieldError] | str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "a write without a valid token"},
    404: {"model": ErrorMessage, "description": "no such network, job or data"},
    409: {"model": ErrorMessage, "description": "the job is not in a state that allows it"},
    413: {"model": ErrorMessage, "description": "an upload over a limit"},
    422: {"model": ValidationProblem, "description": "the request cannot be answered as asked"},
    503: {"model": ErrorMessage, "description": "the queue is unreachable"},
}


# -- the dashboard's read-side views (issue 18) -------------------------------------------------------
class LayerWeights(BaseModel):
    """One affine layer ``z = W a + b`` and its activation; ``weight`` is n_out rows of n_in values."""
    index: int
    n_in: int
    n_out: int
    activation: str
    weight: list[list[float]]
    bias: list[float]
    names: list[str] | None = None  # the neurons' names where the study gave them (verianet's first layer)


class NetworkWeights(BaseModel):
    """``GET /networks/{id}/weights``: every layer's weights as stored. ``image_side``: the input is a
    square image of that side (row-major), else null; ``preprocessing``: the shipped data set the network's
    metadata names (``GET /datasets``), if any."""
    network_id: int
    name: str
    sizes: list[int] = Field(description="layer widths, input first")
    image_side: int | None
    preprocessing: str | None
    layers: list[LayerWeights]


class DatasetInfo(BaseModel):
    name: str
    split: str
    count: int
    input_size: int
    image_side: int | None
    description: str


class DatasetList(BaseModel):
    count: int
    data: list[DatasetInfo]


class DatasetSample(BaseModel):
    """One image of a shipped set: ``input`` is what a network sees (grey level / 255, row-major)."""
    name: str
    split: str
    index: int
    count: int = Field(description="images in the set (index runs 0..count-1)")
    label: int
    image_side: int | None
    input: list[float]


class ForwardInput(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    input: list[float] = Field(..., min_length=1)


class LayerTrace(BaseModel):
    index: int
    pre: list[float] = Field(description="pre-activations z = W a + b")
    post: list[float] = Field(description="activations f(z); the last layer's are the logits")


class ForwardPass(BaseModel):
    """The network's own float64 forward pass at ``input`` (a shipped sample's when ``dataset`` is set)."""
    network_id: int
    dataset: str | None = None
    split: str | None = None
    index: int | None = None
    label: int | None = None
    input: list[float]
    layers: list[LayerTrace]
    logits: list[float]
    predicted: int


class CurvePoint(BaseModel):
    """One eps of one digit: ``n`` (input, eps) pairs answered; shares of them verified by the LP relaxation,
    by the exact MIP, and not falsified by the attack or the centre at this eps or a smaller one (an upper
    bound on the robust share; ``attack_falsified`` counts the others).
    A method the job did not run has share null."""
    eps: float
    n: int
    lp_verified: int
    mip_verified: int
    attack_falsified: int
    lp: float | None
    mip: float | None
    attack: float | None
    klp_verified: int = 0
    klp: float | None = Field(None, description="share verified by the k-neuron LP (null: the job did not ask for it)")


class DigitCurve(BaseModel):
    digit: int
    points: list[CurvePoint]


class RobustnessCurves(BaseModel):
    """``GET /jobs/{id}/curves``: robustness (share verified) against eps, over all inputs and per digit."""
    job_id: int
    methods: list[str]
    eps: list[float]
    total: list[CurvePoint]
    digits: list[DigitCurve]
