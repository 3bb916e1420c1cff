"""A small solver-neutral linear / mixed-integer model (in the spirit of OR-Tools MathOpt).

The encoders build a :class:`Model`; the back-ends in :mod:`formulations.backends` translate it. The
model never imports a solver. Rows are ranged linear constraints ``lo <= a.x <= hi``, each carrying a
:class:`ConstraintTag` (what the row *means*: which layer, neuron, envelope line or segment), so that a
back-end's list of tight rows becomes a signature without any string parsing.

Storage is columnar (COO triplets grown in blocks, frozen into CSR on demand), because the networks of
VNN-COMP have hundreds of thousands of non-zeros and one Python object per coefficient would dominate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .errors import InvalidInputError

Array = np.ndarray
INF = float("inf")


@enum.unique
class Sense(enum.Enum):
    MINIMIZE = "min"
    MAXIMIZE = "max"


@dataclass(frozen=True)
class ConstraintTag:
    """What a row means.

    ``kind`` is a closed vocabulary used by the encoders, e.g. ``"affine"`` (z = W a + b),
    ``"envelope_lower"`` / ``"envelope_upper"`` (an envelope line; ``index`` = line number),
    ``"segment"`` (a piecewise segment band; ``index`` = segment), ``"relu_upper"`` / ``"relu_lower"``
    (big-M rows), ``"input"`` (ball constraints), ``"objective"`` (auxiliary rows of the objective).
    ``layer`` and ``neuron`` are 0-based; ``copy`` tells the two network copies of an invertibility
    query apart.
    """

    kind: str
    layer: int | None = None
    neuron: int | None = None
    index: int | None = None
    copy: int | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class VariableTag:
    """What a variable means: ``kind`` in ``input``, ``pre`` (pre-activation), ``post``, ``binary``,
    ``weight`` (SOS2 / convex-combination weights), ``aux``; with layer / neuron / index / copy."""

    kind: str
    layer: int | None = None
    neuron: int | None = None
    index: int | None = None
    copy: int | None = None


@dataclass(frozen=True)
class QuadraticConstraint:
    """One ranged quadratic row ``lo <= sum_k lin_coefs[k] x[lin_vars[k]] + sum_k q[k] x[qi[k]] x[qj[k]] <= hi``.

    Data only (no solver): convex or not, the back-ends with ``Capabilities.quadratic`` state it as it is;
    the others refuse the model (:class:`~formulations.errors.QuadraticNotSupportedError`), never linearise it.
    """

    lin_vars: Array
    lin_coefs: Array
    qi: Array
    qj: Array
    q: Array
    lo: float = -INF
    hi: float = INF
    tag: ConstraintTag | None = None

    def activity(self, x: Array) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(self.lin_coefs @ x[self.lin_vars] + np.sum(self.q * x[self.qi] * x[self.qj]))


def _triples(quadratic) -> tuple[Array, Array, Array]:
    """``(i, j, coef)`` arrays from a (i, j, coef) tuple of sequences; checked finite."""
    qi, qj, q = (np.asarray(t) for t in quadratic)
    qi, qj = qi.astype(np.int64).reshape(-1), qj.astype(np.int64).reshape(-1)
    q = q.astype(np.float64).reshape(-1)
    if not (qi.shape == qj.shape == q.shape):
        raise InvalidInputError("quadratic terms need as many i, j and coefficients")
    if not np.isfinite(q).all():
        raise InvalidInputError("quadratic terms hold NaN or infinite coefficients")
    return qi, qj, q


class Model:
    """Variables with bounds and integrality, ranged linear rows with tags, SOS2 sets, quadratic rows, one
    objective (linear, plus optional quadratic terms)."""

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self._lb: list[Array] = []
        self._ub: list[Array] = []
        self._int: list[Array] = []
        self.variable_tags: list[VariableTag | None] = []
        self._rows: list[Array] = []
        self._cols: list[Array] = []
        self._vals: list[Array] = []
        self._lo: list[Array] = []
        self._hi: list[Array] = []
        self.constraint_tags: list[ConstraintTag | None] = []
        self.sos2: list[tuple[Array, Array]] = []
        self.quadratic_constraints: list[QuadraticConstraint] = []
        # quadratic objective terms sum q x_i x_j (empty: a linear objective)
        self.objective_quadratic: tuple[Array, Array, Array] = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        self.objective = np.zeros(0)
        self.objective_constant = 0.0
        self.sense = Sense.MINIMIZE
        self._num_vars = 0
        self._num_rows = 0
        self._cache: dict[str, object] = {}

    # -- variables ----------------------------------------------------------------------------
    @property
    def num_variables(self) -> int:
        return self._num_vars

    @property
    def num_constraints(self) -> int:
        return self._num_rows

    def add_variables(
        self,
        n: int,
        lb: float | Array = -INF,
        ub: float | Array = INF,
        *,
        integer: bool = False,
        tags: Sequence[VariableTag | None] | VariableTag | None = None,
    ) -> Array:
        """Add ``n`` variables; returns their indices (an int array)."""
        lb = np.broadcast_to(np.asarray(lb, dtype=np.float64), (n,)).copy()
        ub = np.broadcast_to(np.asarray(ub, dtype=np.float64), (n,)).copy()
        if np.isnan(lb).any() or np.isnan(ub).any():
            raise InvalidInputError("variable bounds hold NaN")
        if (lb > ub).any():
            k = int(np.argmax(lb > ub))
            raise InvalidInputError(f"variable bound lb={lb[k]} > ub={ub[k]}")
        idx = np.arange(self._num_vars, self._num_vars + n)
        self._lb.append(lb)
        self._ub.append(ub)
        self._int.append(np.full(n, bool(integer)))
        if tags is None or isinstance(tags, VariableTag):
            self.variable_tags.extend([tags] * n)
        else:
            if len(tags) != n:
                raise InvalidInputError(f"{n} variables but {len(tags)} tags")
            self.variable_tags.extend(tags)
        self._num_vars += n
        self._cache.clear()
        return idx

    def add_variable(self, lb: float = -INF, ub: float = INF, *, integer: bool = False, tag: VariableTag | None = None) -> int:
        return int(self.add_variables(1, lb, ub, integer=integer, tags=[tag])[0])

    def add_binaries(self, n: int, *, tags=None) -> Array:
        return self.add_variables(n, 0.0, 1.0, integer=True, tags=tags)

    def _frozen(self, key: str, parts: list[Array], dtype) -> Array:
        if key not in self._cache:
            self._cache[key] = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
        return self._cache[key]  # type: ignore[return-value]

    @property
    def lb(self) -> Array:
        return self._frozen("lb", self._lb, np.float64)

    @property
    def ub(self) -> Array:
        return self._frozen("ub", self._ub, np.float64)

    @property
    def integrality(self) -> Array:
        return self._frozen("int", self._int, bool)

    @property
    def num_integers(self) -> int:
        return int(self.integrality.sum())

    @property
    def is_mip(self) -> bool:
        return self.num_integers > 0 or bool(self.sos2)

    def set_bounds(self, idx: Array | int, lb: float | Array, ub: float | Array) -> None:
        """Change variable bounds in place (used to re-solve one built model for many queries)."""
        lbs, ubs = self.lb.copy(), self.ub.copy()
        lbs[idx] = lb
        ubs[idx] = ub
        if (lbs > ubs).any():
            raise InvalidInputError("set_bounds would make lb > ub")
        self._lb, self._ub = [lbs], [ubs]
        self._cache.pop("lb", None)
        self._cache.pop("ub", None)

    # -- constraints --------------------------------------------------------------------------
    def add_constraints(
        self,
        coefficients: Array | sp.spmatrix,
        variables: Array,
        lo: float | Array = -INF,
        hi: float | Array = INF,
        *,
        tags: Sequence[ConstraintTag | None] | ConstraintTag | None = None,
    ) -> Array:
        """Add rows ``lo <= coefficients @ x[variables] <= hi``; returns the new row indices.

        ``coefficients`` has shape (m, len(variables)), dense or sparse; zeros are dropped.
        """
        variables = np.asarray(variables, dtype=np.int64).reshape(-1)
        coo = sp.coo_matrix(coefficients)
        m = coo.shape[0]
        if coo.shape[1] != variables.shape[0]:
            raise InvalidInputError(f"coefficients have {coo.shape[1]} columns for {variables.shape[0]} variables")
        if variables.size and (variables.min() < 0 or variables.max() >= self._num_vars):
            raise InvalidInputError("a constraint refers to a variable that does not exist")
        lo_arr = np.broadcast_to(np.asarray(lo, dtype=np.float64), (m,)).copy()
        hi_arr = np.broadcast_to(np.asarray(hi, dtype=np.float64), (m,)).copy()
        if np.isnan(coo.data).any() or np.isnan(lo_arr).any() or np.isnan(hi_arr).any():
            raise InvalidInputError("a constraint holds NaN")
        keep = coo.data != 0.0
        self._rows.append(coo.row[keep].astype(np.int64) + self._num_rows)
        self._cols.append(variables[coo.col[keep]])
        self._vals.append(coo.data[keep].astype(np.float64))
        self._lo.append(lo_arr)
        self._hi.append(hi_arr)
        if tags is None or isinstance(tags, ConstraintTag):
            self.constraint_tags.extend([tags] * m)
        else:
            if len(tags) != m:
                raise InvalidInputError(f"{m} rows but {len(tags)} tags")
            self.constraint_tags.extend(tags)
        rows = np.arange(self._num_rows, self._num_rows + m)
        self._num_rows += m
        self._cache.clear()
        return rows

    def add_constraint(
        self,
        terms: Mapping[int, float] | tuple[Iterable[int], Iterable[float]],
        lo: float = -INF,
        hi: float = INF,
        *,
        tag: ConstraintTag | None = None,
    ) -> int:
        """Add one row ``lo <= sum coef * x[var] <= hi``; ``terms`` is {var: coef} or (vars, coefs)."""
        if isinstance(terms, Mapping):
            variables, coefs = list(terms.keys()), list(terms.values())
        else:
            variables, coefs = (list(t) for t in terms)
        row = np.asarray(coefs, dtype=np.float64).reshape(1, -1)
        return int(self.add_constraints(row, np.asarray(variables), lo, hi, tags=[tag])[0])

    def add_sos2(self, variables: Array, weights: Array | None = None) -> None:
        """An SOS2 set: at most two consecutive variables of ``variables`` are non-zero."""
        variables = np.asarray(variables, dtype=np.int64)
        weights = np.arange(1, len(variables) + 1, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
        self.sos2.append((variables, weights))

    def add_quadratic_constraint(
        self,
        linear: Mapping[int, float] | tuple[Iterable[int], Iterable[float]] | None,
        quadratic: tuple[Iterable[int], Iterable[int], Iterable[float]],
        lo: float = -INF,
        hi: float = INF,
        *,
        tag: ConstraintTag | None = None,
    ) -> int:
        """Add ``lo <= linear . x + sum q x_i x_j <= hi``; returns its index in :attr:`quadratic_constraints`."""
        if linear is None:
            lv, lc = np.zeros(0, np.int64), np.zeros(0)
        elif isinstance(linear, Mapping):
            lv, lc = np.asarray(list(linear.keys()), np.int64), np.asarray(list(linear.values()), np.float64)
        else:
            lv, lc = (np.asarray(list(t)) for t in linear)
            lv, lc = lv.astype(np.int64).reshape(-1), lc.astype(np.float64).reshape(-1)
        qi, qj, q = _triples(quadratic)
        used = np.concatenate([lv, qi, qj])
        if used.size and (used.min() < 0 or used.max() >= self._num_vars):
            raise InvalidInputError("a quadratic constraint refers to a variable that does not exist")
        if lv.shape != lc.shape or not np.isfinite(lc).all() or np.isnan(lo) or np.isnan(hi) or lo > hi:
            raise InvalidInputError("a quadratic constraint has malformed linear terms or bounds")
        self.quadratic_constraints.append(QuadraticConstraint(lv, lc, qi, qj, q, float(lo), float(hi), tag))
        return len(self.quadratic_constraints) - 1

    def add_sum_of_squares(self, variables: Array, radius: float, *, tag: ConstraintTag | None = None) -> int:
        """``sum_i x[variables_i]^2 <= radius^2`` (a convex ball around 0; centre it with shifted variables)."""
        variables = np.asarray(variables, dtype=np.int64).reshape(-1)
        if not (np.isfinite(radius) and radius >= 0):
            raise InvalidInputError(f"a ball radius must be finite and >= 0, got {radius}")
        return self.add_quadratic_constraint(None, (variables, variables, np.ones(variables.size)), -INF,
                                             float(radius) ** 2, tag=tag)

    @property
    def has_quadratic_objective(self) -> bool:
        return bool(self.objective_quadratic[2].size) and bool(np.any(self.objective_quadratic[2] != 0))

    @property
    def is_quadratic(self) -> bool:
        """True when the model has a quadratic row or quadratic objective terms."""
        return bool(self.quadratic_constraints) or self.has_quadratic_objective

    @property
    def row_lower(self) -> Array:
        return self._frozen("lo", self._lo, np.float64)

    @property
    def row_upper(self) -> Array:
        return self._frozen("hi", self._hi, np.float64)

    def matrix(self) -> sp.csr_matrix:
        """The constraint matrix, shape (num_constraints, num_variables), CSR."""
        if "A" not in self._cache:
            rows = np.concatenate(self._rows) if self._rows else np.zeros(0, dtype=np.int64)
            cols = np.concatenate(self._cols) if self._cols else np.zeros(0, dtype=np.int64)
            vals = np.concatenate(self._vals) if self._vals else np.zeros(0)
            self._cache["A"] = sp.csr_matrix((vals, (rows, cols)), shape=(self._num_rows, self._num_vars))
        return self._cache["A"]  # type: ignore[return-value]

    # -- objective ----------------------------------------------------------------------------
    def set_objective(
        self,
        terms: Mapping[int, float] | tuple[Iterable[int], Iterable[float]] | Array,
        *,
        constant: float = 0.0,
        sense: Sense = Sense.MINIMIZE,
        quadratic: tuple[Iterable[int], Iterable[int], Iterable[float]] | None = None,
    ) -> None:
        """Set the objective: linear terms {var: coef}, (vars, coefs), or a dense vector over all variables,
        plus ``quadratic`` terms ``(i, j, coef)`` meaning ``sum coef x_i x_j`` (convex or not)."""
        c = np.zeros(self._num_vars)
        if isinstance(terms, np.ndarray) and terms.ndim == 1 and terms.shape[0] == self._num_vars:
            c = terms.astype(np.float64).copy()
        else:
            if isinstance(terms, Mapping):
                variables, coefs = list(terms.keys()), list(terms.values())
            else:
                variables, coefs = (list(t) for t in terms)
            np.add.at(c, np.asarray(variables, dtype=np.int64), np.asarray(coefs, dtype=np.float64))
        if not np.isfinite(c).all() or not np.isfinite(constant):
            raise InvalidInputError("objective holds NaN or infinite coefficients")
        if quadratic is None:
            quad = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        else:
            quad = _triples(quadratic)
            used = np.concatenate(quad[:2])
            if used.size and (used.min() < 0 or used.max() >= self._num_vars):
                raise InvalidInputError("a quadratic objective term refers to a variable that does not exist")
        self.objective, self.objective_constant, self.sense = c, float(constant), sense
        self.objective_quadratic = quad

    def objective_vector(self) -> Array:
        """Objective coefficients padded to the current number of variables."""
        c = np.zeros(self._num_vars)
        c[: self.objective.shape[0]] = self.objective
        return c

    # -- checks -------------------------------------------------------------------------------
    def evaluate(self, x: Array) -> float:
        """Objective value at a point."""
        x = np.asarray(x, dtype=np.float64)
        qi, qj, q = self.objective_quadratic
        quad = float(np.sum(q * x[qi] * x[qj])) if q.size else 0.0
        return float(self.objective_vector() @ x + self.objective_constant + quad)

    def max_violation(self, x: Array) -> float:
        """Largest violation of bounds, rows and integrality at ``x`` (0.0 when feasible)."""
        x = np.asarray(x, dtype=np.float64)
        ax = self.matrix() @ x
        viol = [
            np.maximum(self.lb - x, 0.0),
            np.maximum(x - self.ub, 0.0),
            np.maximum(self.row_lower - ax, 0.0),
            np.maximum(ax - self.row_upper, 0.0),
            np.abs(x - np.round(x)) * self.integrality,
        ]
        for qc in self.quadratic_constraints:
            act = qc.activity(x)
            viol.append(np.array([max(qc.lo - act, act - qc.hi, 0.0)]))
        return float(max((v.max() if v.size else 0.0) for v in viol))

    def tight_rows(self, x: Array, tolerance: float = 1e-6) -> Array:
        """Indices of rows active (within ``tolerance``, scaled by the row's size) at ``x``."""
        ax = self.matrix() @ np.asarray(x, dtype=np.float64)
        scale = 1.0 + np.abs(ax)
        lo_tight = np.isfinite(self.row_lower) & (np.abs(ax - self.row_lower) <= tolerance * scale)
        hi_tight = np.isfinite(self.row_upper) & (np.abs(ax - self.row_upper) <= tolerance * scale)
        return np.flatnonzero(lo_tight | hi_tight)

    def summary(self) -> dict:
        """Formulation size, as stored with certificates."""
        out = {
            "variables": self.num_variables,
            "integers": self.num_integers,
            "constraints": self.num_constraints,
            "nonzeros": int(self.matrix().nnz),
            "sos2": len(self.sos2),
        }
        if self.is_quadratic:  # quadratic rows (and a quadratic objective, counted as one); absent when linear
            out["quadratic"] = len(self.quadratic_constraints) + int(self.has_quadratic_objective)
        return out
