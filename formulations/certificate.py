"""Certificates: the answer to every query, with the evidence behind it.

The status vocabulary is fixed (design.md): *verified*, *falsified*, *unknown*, always with a lower and
an upper bound on the quantity the query asks about, and a reason when unknown. A *falsified*
certificate carries a counterexample that was re-evaluated on the real network in float64; a *verified*
one rests on a solver's dual bound (or a symbolic bound), never on an incumbent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, asdict
from typing import Any

import numpy as np

from .backends.base import Termination
from .model import ConstraintTag


@enum.unique
class Verdict(str, enum.Enum):
    VERIFIED = "verified"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"


@enum.unique
class UnknownReason(str, enum.Enum):
    TIME_LIMIT = "time limit"
    NODE_LIMIT = "node limit"
    NUMERICAL = "numerical trouble"
    SOLVER_ERROR = "solver error"
    RELAXATION = "relaxation inconclusive"  # an LP bound that neither proves nor refutes
    REFINEMENT_LIMIT = "refinement limit"
    UNCONFIRMED = "unconfirmed"  # only a back-end that needs a second opinion answered (backends.second_opinion)
    UNSUPPORTED_FORM = "unsupported property form"  # a VNN-LIB property bounds do not decide: only a point can


_REASONS = {
    Termination.TIME_LIMIT: UnknownReason.TIME_LIMIT,
    Termination.FEASIBLE: UnknownReason.TIME_LIMIT,  # stopped with an incumbent: by a limit
    Termination.NODE_LIMIT: UnknownReason.NODE_LIMIT,
    Termination.NUMERICAL: UnknownReason.NUMERICAL,
    Termination.ERROR: UnknownReason.SOLVER_ERROR,
    Termination.UNCONFIRMED: UnknownReason.UNCONFIRMED,  # only a back-end needing a second opinion answered
}


TERMINATION_REASONS = frozenset(_REASONS)  # the terminations that have a reason of their own


def reason_for(termination: Termination | None, *, relaxation: bool = False) -> UnknownReason:
    """Why a bound search left its question open: the one map from a solver's termination to the reason a
    user reads. ``relaxation``: the bound came from a relaxation only (LP), which may simply be too loose."""
    if relaxation or termination is None:
        return UnknownReason.RELAXATION
    return _REASONS.get(termination, UnknownReason.REFINEMENT_LIMIT)


@dataclass(frozen=True)
class TargetBound:
    """Bounds on the margin logit[label] - logit[target] over the input set."""

    target: int
    lower: float
    upper: float
    verdict: Verdict
    reason: UnknownReason | None = None
    tight: tuple[ConstraintTag, ...] = ()
    solver: str = ""
    solve_time: float = 0.0
    stage: str = ""  # the stage whose bound is ``lower`` (symbolic / lp / mip)


@dataclass(frozen=True)
class Certificate:
    """The answer to one query.

    For robustness, ``lower``/``upper`` bound the minimum margin over all targets and the input set;
    verified iff lower > 0, falsified iff a counterexample with margin <= 0 (re-checked) exists.
    """

    kind: str  # "robustness", "injectivity", "preimage", "dependence", ...
    verdict: Verdict
    lower: float
    upper: float
    method: str  # "lp", "mip", "symbolic", "attack", "cascade"
    stage: str = ""  # which stage decided it (symbolic / attack / lp / mip)
    reason: UnknownReason | None = None
    label: int | None = None
    eps: float | None = None
    norm: str = "linf"
    counterexample: np.ndarray | None = None
    counterexample_value: float | None = None  # margin (or distance) re-evaluated on the real network
    targets: tuple[TargetBound, ...] = ()
    tight: tuple[ConstraintTag, ...] = ()
    solver: str = ""
    times: dict[str, float] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return float(self.upper - self.lower)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (arrays as lists, enums as their values)."""

        def convert(value: Any) -> Any:
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, (np.floating, np.integer)):
                return value.item()
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [convert(v) for v in value]
            if isinstance(value, ConstraintTag):
                return value.as_dict()
            return value

        out = {f: convert(getattr(self, f)) for f in self.__dataclass_fields__}
        out["targets"] = [convert(asdict(t)) for t in self.targets]
        out["gap"] = self.gap
        return out
