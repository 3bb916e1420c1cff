"""Rigorous LP bounds from approximate duals (Neumaier & Shcherbina, Math. Prog. 99, 2004, §2).

An LP solver's optimum is only its *claim*: its tolerances (1e-7 and more) exceed the margins of a
verification query. Neumaier & Shcherbina turn *any* row multipliers ``y`` into a proven bound. For

    min c.x   subject to   rl <= A x <= ru,   lb <= x <= ub,

weak duality gives, with ``r = c - A^T y`` (their eq. (4)),

    c.x = y.(A x) + r.x >= sum_i min(y_i rl_i, y_i ru_i) + sum_j min_{x_j in [lb_j, ub_j]} r_j x_j,

whatever the quality of ``y``. The residual ``r`` is only known up to float64 rounding, so it is
enclosed as ``r_hat +- e`` with the a-priori bound of a k-term dot product (Higham, *Accuracy and
Stability of Numerical Algorithms*, §3.1: |fl(sum) - sum| <= gamma_k sum |terms|, gamma_k = k u / (1 - k u)),
and the final sum is rounded outward the same way. A multiplier whose row side is infinite is set to 0
first (it would make the bound -inf), and a bound that needs an infinite variable bound with a
non-zero residual is -inf: no claim (N&S treat that case by solving a perturbed LP, not done here).

The bound is valid for the LP relaxation, hence for a MIP with the same rows as well.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidInputError
from ..model import Model, Sense

Array = np.ndarray
_U = np.finfo(np.float64).eps / 2.0  # unit round-off of float64
_TINY = np.finfo(np.float64).tiny  # covers underflow in products (Higham §2.1)


def _gamma(k: Array | int) -> Array | float:
    """2 gamma_k: the dot-product error bound, doubled so that computing the bound itself is covered."""
    k = np.asarray(k, dtype=np.float64)
    return 2.0 * k * _U / (1.0 - k * _U)


def lower_bound_from_duals(c: Array, matrix: sp.spmatrix, row_lower: Array, row_upper: Array,
                           lb: Array, ub: Array, y: Array, constant: float = 0.0) -> float:
    """A rigorous lower bound on ``min c.x + constant`` over the LP, from any multipliers ``y``.

    Returns ``-inf`` when no finite bound follows from ``y`` (an unbounded variable with a residual).
    """
    csc = matrix if sp.issparse(matrix) and matrix.format == "csc" and matrix.dtype == np.float64 \
        else sp.csc_matrix(matrix, dtype=np.float64)
    n_cols = csc.shape[1]
    y = np.where(np.isfinite(y), np.asarray(y, dtype=np.float64), 0.0)
    # y_i > 0 prices the row's lower side, y_i < 0 its upper side; a multiplier on an infinite side is void
    y = np.where(((y > 0) & ~np.isfinite(row_lower)) | ((y < 0) & ~np.isfinite(row_upper)), 0.0, y)
    # A^T y and |A|^T |y| column by column straight from the CSC arrays (the bound holds for any summation
    # order; scipy's sparse products cost 3x the LP solve itself in the cascade's many small LPs)
    counts = np.diff(csc.indptr)
    column = np.repeat(np.arange(n_cols), counts)
    products = csc.data * y[csc.indices]
    r_hat = c - np.bincount(column, weights=products, minlength=n_cols)
    # enclosure of the true residual: r in [r_hat - e, r_hat + e]
    k = counts + 2
    spread = np.bincount(column, weights=np.abs(products), minlength=n_cols)  # |A|^T |y|, as |a y| = |a| |y|
    magnitude = np.abs(c) + spread
    touched = spread > 0  # otherwise r_j = c_j exactly
    e = np.where(touched, _gamma(k) * magnitude + k * _TINY, 0.0)

    row_side = np.where(y > 0, row_lower, np.where(y < 0, row_upper, 0.0))
    col_side = np.where(r_hat > 0, lb, np.where(r_hat < 0, ub, 0.0))
    reach = np.maximum(np.abs(lb), np.abs(ub))  # max |x_j| over the box
    if not (np.isfinite(row_side).all() and np.isfinite(col_side).all()):
        return -np.inf
    if not np.isfinite(reach[e > 0]).all():
        return -np.inf
    terms = np.concatenate([
        y * row_side,
        r_hat * col_side,
        -(e * np.where(e > 0, reach, 0.0)) * (1.0 + 4 * _U),  # the residual's uncertainty, rounded up
        [float(constant)],
    ])
    value = float(terms.sum())
    error = float(_gamma(terms.size + 1) * np.abs(terms).sum()) * (1.0 + 4 * _U) + terms.size * _TINY
    return float(np.nextafter(value - error, -np.inf))


def safe_lp_bound(model: Model, row_duals: Array, *, sense: Sense | None = None) -> float:
    """Rigorous bound on the optimum of ``model``'s LP relaxation from approximate row duals.

    Args:
      model: the model (its integrality and SOS2 sets are ignored: the bound holds for the relaxation).
      row_duals: one multiplier per row, in the convention ``c - A^T y = reduced costs`` with ``c``
        the model's objective as given (either sense), as :class:`SolveResult.row_duals` holds them.
      sense: defaults to ``model.sense``.

    Returns:
      A lower bound on the minimum (MINIMIZE) or an upper bound on the maximum (MAXIMIZE), valid
      whatever the accuracy of ``row_duals``; ``-inf`` / ``+inf`` when no finite bound follows.

    Raises:
      InvalidInputError: ``row_duals`` has the wrong length.
    """
    y = np.asarray(row_duals, dtype=np.float64).reshape(-1)
    if y.shape[0] != model.num_constraints:
        raise InvalidInputError(f"{y.shape[0]} row duals for {model.num_constraints} rows")
    sense = model.sense if sense is None else sense
    c, constant = model.objective_vector(), model.objective_constant
    args = (model.matrix(), model.row_lower, model.row_upper, model.lb, model.ub)
    if sense == Sense.MINIMIZE:
        return lower_bound_from_duals(c, *args, y, constant)
    # max c.x = -min (-c).x; the multipliers of the negated problem are -y
    return -lower_bound_from_duals(-c, *args, -y, -constant)
