"""Batches: a request (network, inputs, radii, methods) becomes a job of queries split into chunks.

A query is one (input, label, eps, method); ``methods="both"`` makes an LP and a MIP query for the same
(item, eps), which the LP-versus-MIP comparison pairs up.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from typing import Annotated, Any, Literal, Protocol, Sequence, Union

import numpy as np
from pydantic import AfterValidator, BeforeValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from sqlalchemy.orm import Session

from polycert.formulations.domains import Domain, check_radii, network_domain, parse_domain, with_domain
from polycert.formulations.errors import InvalidInputError, PolyCertError
from polycert.formulations.input_sets import validate_balls
from polycert.formulations.network import Network
from polycert.db import repositories as repo
from polycert.db.models import JobRow, NetworkRow
from polycert.workers.networks import network_to_bytes, stored_network

from . import chunking
from .errors import ConflictError, NotFoundError, QueueUnavailableError
from .settings import Settings, get_settings

Method = Literal["lp", "mip", "both"]
#: Robustness jobs may also ask for the k-neuron LP (``klp``, issue 20), alone or beside the others; ``all`` is
#: lp + klp + mip. The canonical order (lp, klp, mip) is the order of a job's queries per (item, eps).
RobustnessMethod = Literal["lp", "klp", "mip", "both", "all"]
METHOD_ORDER = ("lp", "klp", "mip")
METHOD_WORDS = {"both": ("lp", "mip"), "all": METHOD_ORDER}


def method_list(methods: str | Sequence[str] | None) -> tuple[str, ...]:
    """The methods a job's ``methods`` names, in canonical order: "both" is (lp, mip), "all" (lp, klp, mip)."""
    if methods is None:
        return METHOD_WORDS["both"]
    words = [methods] if isinstance(methods, str) else list(methods)
    chosen = {m for w in words for m in METHOD_WORDS.get(w, (w,))}
    return tuple(m for m in METHOD_ORDER if m in chosen)
#: One side of an input domain in a request: a number (the same for every coordinate), one number per
#: coordinate, or null for an open side (JSON has no infinity; -Infinity / 1e999 also read as infinite).
DomainBound = float | list[float | None] | None
UPLOAD_FORMATS = {".npz": "npz", ".pt": "pt", ".pth": "pt", ".onnx": "onnx"}


def check_solver(name: str | None, role: Literal["mip", "lp"] = "mip") -> str | None:
    """``name`` if it is a back-end that solves ``role`` problems (None: the engine's default); otherwise
    ValueError naming the valid ones (``formulations.backends``' registry), so that an unknown solver is a
    422 at the door instead of a job that silently runs with another one."""
    if name is None:
        return None
    from polycert.formulations.backends import available_solvers, capabilities

    usable = available_solvers()
    # the engine's MIPs have continuous variables: an integer-only back-end (CP-SAT) cannot solve them
    valid = [s for s in usable if getattr(capabilities(s), role) and not (role == "mip" and capabilities(s).integer_only)]
    if name not in valid:
        problem = f"unknown solver {name!r}" if name not in usable else f"solver {name!r} cannot solve this job's {role.upper()}s"
        here = [s for s in valid if usable[s]]
        raise ValueError(f"{problem}; valid {role.upper()} solvers: {', '.join(valid)}"
                         + ("" if here == valid else f" (usable here: {', '.join(here) or 'none'})"))
    return name


MipSolver = Annotated[str | None, AfterValidator(lambda v: check_solver(v, "mip"))]
LpSolver = Annotated[str | None, AfterValidator(lambda v: check_solver(v, "lp"))]
#: The LP back-ends a robustness job can run on: the cascade re-solves one warm-started HiGHS model per chunk
#: (``formulations.envelope_lp``; its certificates name it highs-persistent).
ROBUSTNESS_LP_SOLVERS = ("highs",)


def check_robustness_lp_solver(name: str | None) -> str | None:
    """A robustness job's ``lp_solver``: one the cascade really uses, so that no certificate names a solver
    the job did not run on (other LP back-ends serve signature jobs)."""
    name = check_solver(name, "lp")
    if name is not None and name not in ROBUSTNESS_LP_SOLVERS:
        raise ValueError(f"robustness jobs solve their LPs with the persistent HiGHS model; lp_solver {name!r} "
                         f"serves signature jobs only (valid here: {', '.join(ROBUSTNESS_LP_SOLVERS)})")
    return name


RobustnessLpSolver = Annotated[str | None, AfterValidator(check_robustness_lp_solver)]


class DatasetSlice(BaseModel):
    """Images ``start:stop`` of a shipped data set (``service.datasets.load_preprocessed`` names)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["mnist7-area", "mnist7-bilinear", "mnist28"] = "mnist7-area"
    split: Literal["train", "test"] = "test"
    start: int = Field(0, ge=0)
    stop: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "DatasetSlice":
        if self.stop <= self.start:
            raise ValueError(f"dataset slice {self.start}:{self.stop} is empty")
        if self.stop - self.start > 10_000:
            raise ValueError("a dataset slice holds at most 10,000 images")
        return self


# a row id or offset the databases can hold (SQLite's and PostgreSQL's 64-bit integers): larger ones are a 422
MAX_ROW = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ROW)]


def _one_word(value: Any) -> Any:
    """A list of methods read as the one word it means: ["lp", "mip"] is "both", ["mip"] is "mip",
    ["lp", "klp", "mip"] is "all"; other combinations with klp stay a list (canonical order)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        known = set(METHOD_ORDER) | set(METHOD_WORDS)
        if set(value) <= known:
            chosen = method_list(value)
            for word, methods in METHOD_WORDS.items():
                if chosen == methods:
                    return word
            return chosen[0] if len(chosen) == 1 else list(chosen)
    return value


# "lp", "mip" or "both", or a list of them
Methods = Annotated[Method | Annotated[list[Method], Field(min_length=1, max_length=3)], BeforeValidator(_one_word)]
# robustness jobs: also "klp" and "all", or a list of lp / klp / mip
RobustnessMethods = Annotated[RobustnessMethod | Annotated[list[Literal["lp", "klp", "mip"]], Field(min_length=2, max_length=3)],
                              BeforeValidator(_one_word)]


class BatchRequest(BaseModel):
    """What to certify. Give the network by id or by name (a registered or built-in name), and either a
    dataset slice or explicit inputs with their labels."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN / 1e999: a 422, not a 500
    network_id: RowId | None = None
    network: str | None = None
    dataset: DatasetSlice | None = None
    inputs: list[list[float]] | None = None
    labels: list[int] | None = None
    eps: list[float] = Field(..., min_length=1, max_length=50)
    methods: RobustnessMethods = "both"
    # bounds: every query gets the bound and optimum of its method (LP bound of every target, exact bracket,
    # tight constraints) so that signatures and the LP-versus-MIP comparison have data; verdict: the sign only
    answer: Literal["bounds", "verdict"] = "bounds"
    kind: Literal["robustness"] = "robustness"
    norm: Literal["linf", "l1", "l2"] = "linf"
    target: int | None = Field(None, ge=0)
    solver: MipSolver = None  # MIP back-end (engine default: SCIP)
    lp_solver: RobustnessLpSolver = None
    time_limit: float | None = Field(None, gt=0, le=3600)
    # the box [lower, upper] the balls are clipped to; it must lie inside the network's input domain (None:
    # the network's). Checked, with eps, against the network when the job is planned (plan_queries).
    domain: tuple[DomainBound, DomainBound] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "BatchRequest":
        if (self.network_id is None) == (self.network is None):
            raise ValueError("give exactly one of network_id and network (a name)")
        if (self.dataset is None) == (self.inputs is None):
            raise ValueError("give exactly one of dataset and inputs")
        if self.inputs is not None:
            if not self.inputs:
                raise ValueError("inputs is empty")
            if self.labels is None or len(self.labels) != len(self.inputs):
                raise ValueError("explicit inputs need one label each (labels of the same length)")
        elif self.labels is not None:
            raise ValueError("labels go with explicit inputs; a dataset brings its own")
        # eps is checked against the domain in plan_queries: finite, >= 0 and within the domain's extent
        # (not here: a pydantic error echoes its input, and a NaN or infinite eps would make the 422 body invalid JSON)
        return self

    @property
    def method_list(self) -> tuple[str, ...]:
        return method_list(self.methods)


InvertibilityKind = Literal["injectivity", "preimage", "dependence", "invariance", "radius"]


class InvertibilityRequest(BaseModel):
    """Invertibility queries (Cui et al., L4DC 2023; ``formulations.invertibility``), one per centre.

    ``injectivity``: p* = max ||x - y|| over pairs of the ball with f(x) = f(y) (within delta);
    ``preimage``: y fixed to the centre; ``dependence``: p12 = max ||f2(x) - f2(y)|| with f1(x) = f1(y)
    (f2 is ``second_network``); ``invariance``: how far the decision stays put; ``radius``: the largest
    certified radius of injectivity (or of dependence, with a second network)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN / 1e999: a 422, not a 500
    kind: InvertibilityKind
    network_id: RowId | None = None
    network: str | None = None
    second_network_id: RowId | None = None
    second_network: str | None = None
    dataset: DatasetSlice | None = None
    inputs: list[list[float]] | None = None  # explicit centres
    radius: float | None = Field(None, gt=0)
    norm: Literal["linf", "l1", "l2"] = "linf"  # l2: SCIP or Gurobi (quadratic back-ends)
    delta: float | None = Field(None, ge=0)
    # the box the pairs lie in (inside the network's input domain; None: the network's domain)
    domain: tuple[float, float] | None = None
    tolerance: float = Field(1e-4, gt=0)
    solver: MipSolver = None
    time_limit: float | None = Field(None, gt=0, le=36_000)
    query_time_limit: float | None = Field(None, gt=0, le=3600)  # radius: seconds per evaluated radius
    start: float | None = Field(None, gt=0)  # radius search: first radius, growth factor, bisection gap, cap
    growth: float | None = Field(None, gt=1)
    gap: float | None = Field(None, gt=0)
    max_radius: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "InvertibilityRequest":
        if (self.network_id is None) == (self.network is None):
            raise ValueError("give exactly one of network_id and network (a name)")
        if (self.dataset is None) == (self.inputs is None):
            raise ValueError("give exactly one of dataset and inputs (the centres)")
        if self.inputs is not None and not self.inputs:
            raise ValueError("inputs is empty")
        has_second = self.second_network_id is not None or self.second_network is not None
        if self.second_network_id is not None and self.second_network is not None:
            raise ValueError("give at most one of second_network_id and second_network")
        if self.kind == "dependence" and not has_second:
            raise ValueError("a dependence query needs a second network (second_network_id or second_network)")
        if has_second and self.kind not in ("dependence", "radius"):
            raise ValueError(f"a {self.kind} query takes one network; second_network is for dependence and radius")
        if self.kind in ("injectivity", "preimage", "dependence") and self.radius is None:
            raise ValueError(f"a {self.kind} query needs a radius")
        if self.domain is not None and not self.domain[0] < self.domain[1]:
            raise ValueError(f"domain {list(self.domain)} is empty")
        if self.norm == "l2" and self.solver is not None:
            from polycert.formulations.backends import capabilities

            if not capabilities(self.solver).quadratic:
                raise ValueError(f"L2 invertibility queries maximise a quadratic distance, which solver {self.solver!r} "
                                 f"cannot state; use 'scip' or 'gurobi'")
        return self

    @property
    def method_list(self) -> tuple[str, ...]:
        return ("mip",)


class VnncompInstance(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN / 1e999: a 422, not a 500
    network_id: RowId
    vnnlib: str = Field(..., min_length=1)  # the property's text
    timeout: float = Field(..., gt=0, le=36_000)
    name: str = ""  # e.g. the CSV's "onnx,vnnlib" for the table


class VnncompRequest(BaseModel):
    """A VNN-COMP batch: one query per instance (network registered from its ONNX, VNN-LIB text stored)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN / 1e999: a 422, not a 500
    kind: Literal["vnncomp"]
    instances: list[VnncompInstance] = Field(..., min_length=1, max_length=10_000)
    solver: MipSolver = None


class SignatureRequest(BaseModel):
    """Signature queries (issue 16): for each input and radius, maximise ``logit[c]`` over the eps-ball
    (clipped to the network's input domain) with the LP relaxation and / or the exact MIP, and store the
    tight constraints at the optimum. ``c`` is ``target_class``, or each input's label when it is None.
    Network, inputs and ``eps`` as in :class:`BatchRequest`; ``time_limit`` is seconds per query;
    ``solver`` is the MIP back-end, ``lp_solver`` the LP one; ``tolerance`` closes the MIP's bracket."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["signature"]
    network_id: RowId | None = None
    network: str | None = None
    dataset: DatasetSlice | None = None
    inputs: list[list[float]] | None = None
    labels: list[int] | None = None
    eps: list[float] = Field(..., min_length=1, max_length=50)
    methods: Methods = "both"
    target_class: int | None = Field(None, ge=0)
    tolerance: float = Field(1e-4, gt=0, le=1.0)
    solver: MipSolver = None
    lp_solver: LpSolver = None
    time_limit: float | None = Field(None, gt=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> "SignatureRequest":
        if (self.network_id is None) == (self.network is None):
            raise ValueError("give exactly one of network_id and network (a name)")
        if (self.dataset is None) == (self.inputs is None):
            raise ValueError("give exactly one of dataset and inputs")
        if self.inputs is not None and (not self.inputs or self.labels is None or len(self.labels) != len(self.inputs)):
            raise ValueError("explicit inputs must be non-empty and need one label each (labels of the same length)")
        if self.inputs is None and self.labels is not None:
            raise ValueError("labels go with explicit inputs; a dataset brings its own")
        bad = [e for e in self.eps if not (0.0 <= e <= 1.0) or e != e]
        if bad:
            raise ValueError(f"eps must lie in [0, 1]; got {bad}")
        return self

    @property
    def method_list(self) -> tuple[str, ...]:
        return method_list(self.methods)


def _job_kind(value: Any) -> str:
    kind = value.get("kind", "robustness") if isinstance(value, dict) else getattr(value, "kind", "robustness")
    if kind in ("vnncomp", "signature"):
        return kind
    return "robustness" if kind == "robustness" else "invertibility"


JobRequest = Annotated[
    Union[Annotated[BatchRequest, Tag("robustness")], Annotated[InvertibilityRequest, Tag("invertibility")],
          Annotated[VnncompRequest, Tag("vnncomp")], Annotated[SignatureRequest, Tag("signature")]],
    Discriminator(_job_kind),
]


class Dispatcher(Protocol):
    def enqueue(self, chunk_ids: list[int], time_limits: Sequence[tuple[float, float]] | None = None) -> None: ...


# -- networks -----------------------------------------------------------------------------------------
def stored_domain(row: NetworkRow) -> Domain:
    """A registered network's input domain. Rows stored before domains were recorded have [0, 1] (migration
    0003): every query on them was clipped to it."""
    return Domain.unit() if row.input_domain is None else parse_domain(row.input_domain)


def register_network(session: Session, network: Network, source_format: str, *, domain: Any = None,
                     check_domain: bool = True) -> tuple[NetworkRow, bool]:
    """Register a network by content with its input domain: ``domain`` if given (any spelling
    :func:`~formulations.domains.parse_domain` reads), else the one its metadata names (the file's), else
    unbounded. Known weights with another domain are a :class:`ConflictError` (the stored one would answer
    a different question than the one asked), unless ``check_domain=False`` (callers that bring their own
    box, as VNN-COMP instances do)."""
    domain = network_domain(network) if domain is None else parse_domain(domain).check_size(network.input_size)
    network = with_domain(network, domain)  # the stored bytes carry it too (the codec keeps all metadata)
    row, created = repo.add_network(
        session, digest=network.digest(), name=network.name, architecture=network.architecture,
        source_format=source_format, input_size=network.input_size, output_size=network.output_size,
        weights=network_to_bytes(network), input_domain=domain.to_json(),
    )
    if not created and check_domain and stored_domain(row) != domain:
        raise ConflictError(
            f"these weights are registered already as network {row.id} ({row.name!r}) with input domain "
            f"{stored_domain(row).describe()}, not {domain.describe()}; use that network (a job may narrow its "
            f"domain with 'domain') or upload with domain={_domain_text(stored_domain(row))}")
    return row, created


def _domain_text(domain: Domain) -> str:
    """The ``LO,HI`` form field that names a scalar domain again."""
    data = domain.to_json()
    if isinstance(data["lower"], list) or isinstance(data["upper"], list):
        return "<its per-coordinate box>"
    lo = "-inf" if data["lower"] is None else f"{data['lower']:g}"
    hi = "inf" if data["upper"] is None else f"{data['upper']:g}"
    return f"{lo},{hi}"


def register_builtin(session: Session, name: str) -> tuple[NetworkRow, bool]:
    from polycert import zoo  # the shipped networks (trained or loaded on first use)

    known = [info.name for info in zoo.builtin_networks()]
    if name not in known:
        raise NotFoundError(f"no built-in network {name!r}; known: {', '.join(known)}")
    return register_network(session, zoo.load_builtin(name), "builtin")


def register_upload(session: Session, filename: str, data: bytes, *, limits=None, **options: Any) -> tuple[NetworkRow, bool]:
    """Register an uploaded .npz / .pt / .onnx file (loaded without unpickling: weights_only).

    ``limits`` (:class:`service.uploads.UploadLimits`, default the settings') are checked from the file's
    headers before it is loaded (:func:`service.uploads.check_upload`). Messages name the user's file, never
    the server's temporary copy."""
    from polycert.uploads import check_upload

    suffix = os.path.splitext(filename)[1].lower()
    if suffix not in UPLOAD_FORMATS:
        raise InvalidInputError(f"cannot load {filename!r}: the file must end in one of {', '.join(UPLOAD_FORMATS)}")
    from polycert.formulations.loaders import load_network

    limits = limits or get_settings().upload_limits
    with tempfile.TemporaryDirectory() as tmp:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(filename)) or "upload" + suffix
        path = os.path.join(tmp, safe)  # the loader's messages then name the user's file
        with open(path, "wb") as fh:
            fh.write(data)
        name = options.pop("name", None) or os.path.splitext(os.path.basename(filename))[0]
        domain = options.pop("domain", None)  # None: what the file says (an npz's metadata), else unbounded
        try:
            check_upload(UPLOAD_FORMATS[suffix], data, path, limits)
        except InvalidInputError as exc:  # UploadTooLargeError (413), UploadShapeError and the rest (422)
            raise type(exc)(f"{os.path.basename(filename)}: {exc}") from None
        try:
            network = load_network(path, name=name, **options)
        except PolyCertError as exc:
            raise _without_path(exc, path, tmp, filename) from None
        except Exception as exc:  # a corrupt or foreign file: the uploader's problem, said plainly
            raise _without_path(InvalidInputError(f"cannot read {filename!r} as a {suffix} network: {exc}"),
                                path, tmp, filename) from None
    if isinstance(network.metadata, dict) and "source" in network.metadata:
        network.metadata["source"] = os.path.basename(filename)  # not the temporary copy's path
    row, created = register_network(session, network, UPLOAD_FORMATS[suffix], domain=domain)
    if not created:
        register_alias(session, row, name)
    return row, created


def register_alias(session: Session, row: NetworkRow, name: str) -> None:
    """Known weights under a new name: the name becomes an alias of the stored network, so that a job naming
    it finds that network. A name that already names another network is a conflict (a job naming it would
    otherwise get one of the two silently)."""
    if not name or name == row.name:
        return
    owner = repo.get_network_by_name(session, name) or repo.get_network_by_alias(session, name)
    if owner is not None and owner.id != row.id:
        raise ConflictError(f"these weights are network {row.id} ({row.name!r}); the name {name!r} already names"
                            f" network {owner.id}: upload them under another name, or use {row.name!r}")
    if owner is None:
        repo.add_network_alias(session, row.id, name)


def _without_path(exc: PolyCertError, path: str, tmp: str, filename: str) -> PolyCertError:
    """``exc`` with the server's temporary path replaced by the uploaded file's name (same type where it can)."""
    message = str(exc).replace(path, os.path.basename(filename)).replace(tmp + os.sep, "").replace(tmp, "")
    if message == str(exc):
        return exc
    try:
        return type(exc)(message)
    except Exception:  # an error type with its own constructor
        return InvalidInputError(message)


def resolve_network(session: Session, *, network_id: int | None, name: str | None) -> NetworkRow:
    if network_id is not None:
        row = repo.get_network(session, network_id)
        if row is None:
            raise NotFoundError(f"no network with id {network_id}")
        return row
    assert name is not None
    row = repo.get_network_by_name(session, name) or repo.get_network_by_alias(session, name)
    return row if row is not None else register_builtin(session, name)[0]


def load_stored(row: NetworkRow) -> Network:
    return stored_network(row)


# -- jobs ---------------------------------------------------------------------------------------------
def load_slice(ds: DatasetSlice) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """(x (n, d), labels (n,), dataset indices) of a dataset slice."""
    from polycert.datasets import load_rows

    x, y, count = load_rows(ds.name, ds.split, ds.start, ds.stop)  # only the slice's rows become float64
    if ds.start >= count:
        raise InvalidInputError(f"dataset {ds.name} ({ds.split}) has {count} images; slice starts at {ds.start}")
    stop = min(ds.stop, count)
    return x, y, list(range(ds.start, stop))


def batch_inputs(request: "BatchRequest | SignatureRequest") -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """(x (n, d), labels (n,), dataset indices) of a request."""
    if request.dataset is not None:
        return load_slice(request.dataset)
    x = np.asarray(request.inputs, dtype=np.float64)
    if x.ndim != 2:
        raise InvalidInputError("inputs must all have the same length")
    return x, np.asarray(request.labels, dtype=np.int64), [None] * len(x)


def job_domain(request_domain: Any, network: NetworkRow) -> Domain:
    """The box a job's balls are clipped to: the network's domain, or the narrower one the job names."""
    own = stored_domain(network)
    if request_domain is None:
        return own
    asked = parse_domain(request_domain).check_size(network.input_size)
    if not own.contains(asked, network.input_size):
        raise InvalidInputError(f"the job's domain {asked.describe()} is not inside the input domain "
                                f"{own.describe()} of network {network.name!r}; a job may only narrow it")
    return asked


def check_balls(x: np.ndarray, eps: Sequence[float], norm: str, domain: Domain) -> None:
    """Radii finite, >= 0, within the domain's extent, and every ball meeting the domain (the engine would
    refuse an empty ball ∩ domain query by query; here it is one message at submission)."""
    check_radii(eps, domain, norm, x.shape[1])
    lo, hi = domain.bounds(x.shape[1])
    for e in sorted(set(float(v) for v in eps)):
        validate_balls(x, np.full(len(x), e), norm, (lo, hi))


def check_inputs(x: np.ndarray, labels: np.ndarray, network: NetworkRow, *, target: tuple[str, int | None]) -> None:
    """What every kind of batch needs of its inputs: the network's width, finite values, labels and the
    ``(field, class)`` it names among the network's outputs."""
    if x.shape[1] != network.input_size:
        raise InvalidInputError(f"inputs have {x.shape[1]} values; network {network.name!r} expects {network.input_size}")
    if not np.isfinite(x).all():
        raise InvalidInputError("inputs hold NaN or infinite values")
    bad = sorted({int(k) for k in labels if not 0 <= k < network.output_size})
    if bad:
        raise InvalidInputError(f"labels {bad} are outside 0..{network.output_size - 1}")
    field, cls = target
    if cls is not None and cls >= network.output_size:
        raise InvalidInputError(f"{field} {cls} is outside 0..{network.output_size - 1}")


def _read_only(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float64, copy=True)  # not the dataset's cached array: the plan owns its inputs
    x.setflags(write=False)
    return x


def plan_queries(request: BatchRequest, x: np.ndarray, labels: np.ndarray, sources: Sequence[int | None],
                 network: NetworkRow, *, domain: Domain | None = None) -> list[dict[str, Any]]:
    """One query per (item, eps, method), in that order. ``domain``: the job's (default :func:`job_domain`).

    ``input`` is a read-only row of ``x`` (a view: a batch's plan holds its inputs once, as one array, and each
    query's input becomes a list only when its rows are written, :func:`repo.add_queries`)."""
    check_inputs(x, labels, network, target=("target", request.target))
    check_balls(x, request.eps, request.norm, domain if domain is not None else job_domain(request.domain, network))
    x = _read_only(x)
    return [
        dict(item=i, source_index=sources[i], input=x[i], label=int(labels[i]), target=request.target,
             eps=float(eps), norm=request.norm, method=method)
        for i in range(len(x))
        for eps in request.eps
        for method in request.method_list
    ]


def plan_signature_queries(request: SignatureRequest, x: np.ndarray, labels: np.ndarray, sources: Sequence[int | None],
                           network: NetworkRow) -> list[dict[str, Any]]:
    """One query per (method, item, eps), method-major, so that each method's chunks are sized by its
    own cost; ``target`` holds ``target_class`` (None: the input's label is maximised)."""
    check_inputs(x, labels, network, target=("target_class", request.target_class))
    check_balls(x, request.eps, "linf", stored_domain(network))  # eps within the domain's extent, balls meet it
    x = _read_only(x)  # each query's input a view of its row, as in plan_queries
    return [
        dict(item=i, source_index=sources[i], input=x[i], label=int(labels[i]), target=request.target_class,
             eps=float(eps), norm="linf", method=method)
        for method in request.method_list
        for i in range(len(x))
        for eps in request.eps
    ]


def signature_chunk_sizes(session: Session, network_id: int, queries: Sequence[dict[str, Any]],
                          chunk_seconds: float) -> list[int]:
    """Guided chunk sizes per method block: each block's largest chunk holds ``chunk_seconds`` at that
    method's recent cost on this network's signature jobs, or at the prior (``workers.signatures.PRIOR_SECONDS``)."""
    from polycert.workers.signatures import PRIOR_SECONDS, SIGNATURE

    sizes: list[int] = []
    for method in dict.fromkeys(q["method"] for q in queries):
        count = sum(q["method"] == method for q in queries)
        history = repo.mean_query_seconds(session, network_id, [method], kind=SIGNATURE)
        largest = chunking.largest_chunk(history if history is not None else PRIOR_SECONDS[method], chunk_seconds)
        sizes += chunking.guided_sizes(count, largest)
    return sizes


def plan_centres(request: InvertibilityRequest, x: np.ndarray, sources: Sequence[int | None], network: NetworkRow,
                 second: NetworkRow | None) -> list[dict[str, Any]]:
    """One query per centre: ``eps`` holds the radius (0 where the kind searches it), ``label`` the class
    the network predicts at the centre."""
    if x.shape[1] != network.input_size:
        raise InvalidInputError(f"centres have {x.shape[1]} values; network {network.name!r} expects {network.input_size}")
    if second is not None and second.input_size != network.input_size:
        raise InvalidInputError(f"network {network.name!r} takes {network.input_size} inputs but the second network"
                                f" {second.name!r} takes {second.input_size}")
    if not np.isfinite(x).all():
        raise InvalidInputError("centres hold NaN or infinite values")
    predicted = load_stored(network).predict(x)
    return [dict(item=i, source_index=sources[i], input=x[i].tolist(), label=int(predicted[i]), target=None,
                 eps=float(request.radius or 0.0), norm=request.norm, method="mip") for i in range(len(x))]


def pair_domain(request: InvertibilityRequest, network: NetworkRow, second: NetworkRow | None) -> Domain:
    """The box an invertibility job's pairs lie in: the network's input domain, or the narrower one the job
    names; with a second network, inside its domain too. A decision-invariance query without a radius
    ranges over the whole domain, so that one must be bounded."""
    domain = job_domain(request.domain, network)
    if second is not None:
        theirs = stored_domain(second)
        if not theirs.contains(domain, network.input_size):
            raise InvalidInputError(f"the domain {domain.describe()} is not inside the input domain "
                                    f"{theirs.describe()} of the second network {second.name!r}; name a domain "
                                    f"inside both")
    if request.kind == "invariance" and request.radius is None and not domain.is_bounded():
        raise InvalidInputError(f"decision invariance over the unbounded domain of network {network.name!r} "
                                f"needs a radius (or a bounded domain)")
    return domain


def check_delta(request: InvertibilityRequest, rows: Sequence[NetworkRow]) -> None:
    """A pair query (all kinds but invariance) on a network with smooth activations needs ``delta``: the
    engine would refuse every centre (``formulations.invertibility``), so refuse the job at the door."""
    if request.kind == "invariance" or request.delta is not None:
        return
    smooth = sorted({layer.activation.name for row in rows for layer in load_stored(row).layers
                     if not (layer.activation.piecewise_linear or layer.activation.name == "identity")})
    if smooth:
        raise InvalidInputError(
            f"a {request.kind} query on a network with smooth activations ({', '.join(smooth)}) needs delta > 0,"
            " the output tolerance ||f(x) - f(y)||_inf <= delta: exact equality f(x) = f(y) cannot be decided"
            " by refinement")


def centres(request: InvertibilityRequest) -> tuple[np.ndarray, list[int | None]]:
    if request.dataset is not None:
        x, _, sources = load_slice(request.dataset)
        return x, sources
    x = np.asarray(request.inputs, dtype=np.float64)
    if x.ndim != 2:
        raise InvalidInputError("inputs must all have the same length")
    return x, [None] * len(x)


def plan_instances(session: Session, request: VnncompRequest) -> list[dict[str, Any]]:
    """One query per VNN-COMP instance; the property's centre box is read (and checked) here."""
    from polycert.formulations.vnnlib import read_vnnlib, robustness_view

    queries = []
    for i, inst in enumerate(request.instances):
        row = resolve_network(session, network_id=inst.network_id, name=None)
        prop = read_vnnlib(inst.vnnlib, n_inputs=row.input_size, n_outputs=row.output_size)
        view = robustness_view(prop)
        half = float(np.max(prop.upper - prop.lower) / 2) if prop.n_inputs else 0.0
        center = np.nan_to_num(np.asarray(prop.center, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        queries.append(dict(item=i, source_index=None, input=center.tolist(),
                            label=-1 if view is None else int(view[0]), target=None,
                            eps=half if np.isfinite(half) else 0.0, norm="linf",
                            method="vnncomp", parameters=dict(network_id=row.id, vnnlib=inst.vnnlib,
                                                              timeout=inst.timeout, name=inst.name)))
    return queries


def create_batch(session: Session, request, *, created_by: str, chunk_size: int | None = None,
                 chunk_seconds: float = 0.5) -> tuple[JobRow, list[int]]:
    """Store a job, its chunks and queries (not yet enqueued); the caller commits. Returns (job, chunk ids).

    Robustness queries go ``chunk_size`` to a task, or, with ``chunk_size=None``, in guided chunk sizes
    whose largest holds ``chunk_seconds`` of engine time at the network's history (:mod:`service.chunking`);
    invertibility and VNN-COMP queries one to a task (they are expensive)."""
    job, chunk_ids, _ = plan_batch(session, request, created_by=created_by, chunk_size=chunk_size,
                                   chunk_seconds=chunk_seconds)
    return job, chunk_ids


def plan_batch(session: Session, request, *, created_by: str, chunk_size: int | Sequence[int] | None,
               chunk_seconds: float, store_queries: bool = True) -> tuple[JobRow, list[int], list[list[dict[str, Any]]]]:
    """:func:`create_batch`, also returning each chunk's planned queries (their time limits size the
    chunk's task). ``chunk_size`` may also be the list of a robustness job's chunk sizes. With
    ``store_queries=False`` only the job and its chunks are stored; the caller stores the queries
    (:func:`repo.add_queries`)."""
    if isinstance(request, VnncompRequest):
        queries = plan_instances(session, request)
        parameters = request.model_dump(exclude={"instances"}, mode="json")
        parameters["instances"] = [dict(name=i.name, network_id=i.network_id, timeout=i.timeout) for i in request.instances]
        network_id, kind, sizes = queries[0]["parameters"]["network_id"], "vnncomp", [1] * len(queries)
    elif isinstance(request, InvertibilityRequest):
        network = resolve_network(session, network_id=request.network_id, name=request.network)
        second = None
        if request.second_network_id is not None or request.second_network is not None:
            second = resolve_network(session, network_id=request.second_network_id, name=request.second_network)
        check_delta(request, [network] if second is None else [network, second])
        domain = pair_domain(request, network, second)
        x, sources = centres(request)
        queries = plan_centres(request, x, sources, network, second)
        parameters = request.model_dump(exclude={"inputs"}, mode="json")
        parameters["second_network_id"] = None if second is None else second.id
        parameters["domain"] = domain.to_json()  # the set the pairs are drawn from, stated in the job
        network_id, kind, sizes = network.id, request.kind, [1] * len(queries)
    elif isinstance(request, SignatureRequest):
        network = resolve_network(session, network_id=request.network_id, name=request.network)
        x, labels, sources = batch_inputs(request)
        queries = plan_signature_queries(request, x, labels, sources, network)
        parameters = request.model_dump(exclude={"inputs", "labels"}, mode="json")
        network_id, kind = network.id, "signature"
        if isinstance(chunk_size, (list, tuple)):
            sizes = list(chunk_size)
        elif chunk_size is not None:
            sizes = chunking.fixed_sizes(len(queries), chunk_size)
        else:
            sizes = signature_chunk_sizes(session, network.id, queries, chunk_seconds)
    else:
        network = resolve_network(session, network_id=request.network_id, name=request.network)
        x, labels, sources = batch_inputs(request)
        domain = job_domain(request.domain, network)
        queries = plan_queries(request, x, labels, sources, network, domain=domain)
        parameters = request.model_dump(exclude={"inputs", "labels"}, mode="json")
        parameters["domain"] = domain.to_json()  # the job's question, whatever the network's domain becomes
        network_id, kind = network.id, request.kind
        if isinstance(chunk_size, (list, tuple)):  # an explicit plan (bench/queue.py replays one job's chunks)
            sizes = list(chunk_size)
        elif chunk_size is not None:
            sizes = chunking.fixed_sizes(len(queries), chunk_size)
        else:
            methods = sorted({q["method"] for q in queries})
            history = repo.mean_query_seconds(session, network.id, methods)
            sizes = chunking.guided_sizes(len(queries), chunking.largest_chunk(history, chunk_seconds))
    if sum(sizes) != len(queries):
        raise ValueError(f"chunk sizes {list(sizes)[:8]}... do not split {len(queries)} queries")
    starts = np.cumsum([0] + list(sizes))
    planned = [queries[a:b] for a, b in zip(starts[:-1], starts[1:])]
    job, chunk_ids = repo.create_job(session, network_id=network_id, kind=kind, parameters=parameters,
                                     created_by=created_by, chunks=planned)
    if store_queries:
        repo.add_queries(session, job.id, chunk_ids, planned)
    return job, chunk_ids, planned


def derive_network(session: Session, network_id: int, transform: str, **options: Any) -> tuple[NetworkRow, bool]:
    """Register a pruned (``fraction``, ``scope``) or quantised (``bits``) copy of a registered network
    (``formulations.transforms``; issue 5 item 6)."""
    from polycert.formulations import transforms

    row = resolve_network(session, network_id=network_id, name=None)
    network = load_stored(row)
    domain = stored_domain(row)  # a copy answers questions about the same inputs
    if transform == "prune":
        derived = transforms.prune(network, options["fraction"], scope=options.get("scope", "layer"),
                                   name=options.get("name"))
    elif transform == "quantize":
        derived = transforms.quantize(network, options["bits"], name=options.get("name"))
    else:
        raise InvalidInputError(f"unknown transform {transform!r}; known: prune, quantize")
    return register_network(session, derived, transform[:20], domain=domain)


INSERT_ROWS = 1000  # queries written per statement after the first chunk (submit_batch)


def _insert_groups(sizes: Sequence[int], rows: int | None = None) -> list[slice]:
    """Consecutive groups of chunks after the first, each of about ``rows`` queries (at least one chunk)."""
    rows = INSERT_ROWS if rows is None else rows
    groups, start, count = [], 1, 0
    for i in range(1, len(sizes)):
        count += sizes[i]
        if count >= rows or i == len(sizes) - 1:
            groups.append(slice(start, i + 1))
            start, count = i + 1, 0
    return groups


def chunk_time_limits(settings: Settings, job: JobRow, timeouts: Sequence[float | None]) -> tuple[float, float]:
    """A chunk task's (soft, hard) seconds from its queries' own timeouts (None: the job's ``time_limit``, else
    the service's per-query limit): what submission and a requeue give it alike."""
    default_limit = (job.parameters or {}).get("time_limit") or settings.query_time_limit
    return settings.chunk_time_limits(sum(float(t or default_limit) for t in timeouts))


def submit_batch(session: Session, dispatcher: Dispatcher, request, *, created_by: str,
                 chunk_size: int | Sequence[int] | None = None, settings: Settings | None = None) -> JobRow:
    """Create the job, commit it, then enqueue its chunks (so a worker never sees an uncommitted chunk).

    The first chunk goes first: the job, its chunks and the first chunk's queries are committed and that
    chunk enqueued before the other chunks' queries are written, so a worker starts on it while the server
    inserts the rest (on 600 queries the first chunk starts about 15 ms sooner, a percent of the job's
    wall time). A failure after that fails the job (:func:`repo.fail_job`) rather than leaving it waiting.

    The other chunks' queries are written (and their chunks enqueued) in groups of about
    :data:`INSERT_ROWS` rows, one statement each: the server's memory for a submission is then the plan (one
    array of inputs and a small dict per query) plus one group's rows and JSON document, not the whole batch's
    (bench/load.py: the API's peak RSS grew by ~36 MiB from a 1,000- to a 10,000-query batch with one statement).

    ``chunk_size`` overrides the settings' (whose default, None, means guided sizes). Each chunk's task
    gets time limits from its own queries' limits (:meth:`Settings.chunk_time_limits`)."""
    settings = settings or get_settings()
    job, chunks, planned = plan_batch(session, request, created_by=created_by,
                                      chunk_size=chunk_size if chunk_size is not None else settings.chunk_size,
                                      chunk_seconds=settings.chunk_seconds, store_queries=False)
    limits = [chunk_time_limits(settings, job, [(q.get("parameters") or {}).get("timeout") for q in queries])
              for queries in planned]
    job_id = job.id
    for first, part in ((True, slice(0, 1)), *((False, p) for p in _insert_groups([len(q) for q in planned]))):
        try:
            repo.add_queries(session, job_id, chunks[part], planned[part])
            session.commit()  # the first time with the job and its chunks
        except Exception:
            session.rollback()  # the first time nothing is stored
            if not first:  # the first chunk is committed and may be running: the job cannot complete
                repo.fail_job(session, job_id, "the service could not store the job's queries", chunks[part.start:])
                session.commit()
            raise
        try:
            dispatcher.enqueue(chunks[part], limits[part])
        except Exception as exc:
            # this group's chunks and every later group's (never sent, their queries not yet stored)
            repo.fail_job(session, job_id, f"the job's chunks could not be enqueued: {exc}", chunks[part.start:])
            session.commit()
            raise QueueUnavailableError(f"job {job_id} was stored but could not be enqueued: {exc}") from None
    return job


def requeue(session: Session, dispatcher: Dispatcher, job_id: int, settings: Settings | None = None) -> int:
    """Send a job's unfinished chunks to the queue again: every queued one, and every running one started
    longer ago than its hard time limit (its worker is gone). For a broker that lost its messages (a Redis
    restarted without its append-only file, a flushed database): the job would otherwise wait for ever.
    Safe to repeat: a chunk delivered twice stores each answer once (a done chunk's queries are skipped).
    Returns how many chunks were sent; ConflictError when the job has ended."""
    settings = settings or get_settings()
    job = get_job_or_raise(session, job_id)
    if job.status not in ("queued", "running"):
        raise ConflictError(f"job {job_id} is {job.status}; only a queued or running job's chunks can be requeued")
    now = dt.datetime.now(dt.timezone.utc)
    chosen, limits = [], []
    for chunk_id, state, started, timeouts in repo.unfinished_chunks(session, job_id):
        soft, hard = chunk_time_limits(settings, job, timeouts)
        if state == "running" and started is not None:
            started = started if started.tzinfo else started.replace(tzinfo=dt.timezone.utc)
            if (now - started).total_seconds() <= hard:
                continue  # still within its time: its worker may well be on it
        chosen.append(chunk_id)
        limits.append((soft, hard))
    session.commit()
    if chosen:
        try:
            dispatcher.enqueue(chosen, limits)
        except Exception as exc:
            raise QueueUnavailableError(f"job {job_id}'s chunks could not be sent to the queue: {exc}") from None
    return len(chosen)


def get_job_or_raise(session: Session, job_id: int) -> JobRow:
    job = repo.get_job(session, job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id}")
    return job


def cancel(session: Session, job_id: int) -> bool:
    get_job_or_raise(session, job_id)
    cancelled = repo.cancel_job(session, job_id)
    session.commit()
    return cancelled
