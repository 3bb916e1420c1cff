"""Running brackets ``lower[i, k] <= m_ik <= upper[i, k]`` of a batch of minimum margins, with where each came from.

``m_ik = min_{x in S_i} f(x)[y_i] - f(x)[k]``: input i's margin against target k over its input set. Lower
bounds come from proofs (symbolic bounds, solvers' safe dual bounds), upper bounds from points that the real
network, in float64, evaluates. A lower bound above an attained margin is a contradiction and is rejected
(:class:`~formulations.errors.UnsoundAnswerError`), whichever stage produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import UnsoundAnswerError
from .network import Network

Array = np.ndarray
# A lower bound may exceed an attained margin by this much (relative + absolute) before it is a contradiction:
# the slack granted to solvers' tolerances (refinement.sound_lower) is far smaller.
CONTRADICTION_TOL = 1e-6


@dataclass
class Brackets:
    """``lower[i, k] <= m_ik <= upper[i, k]`` for every input i and target k, with where each came from.

    Entries that are not targets (``k == label_i``, or a class the query leaves out) hold lower = +inf, upper = +inf. ``points[i, k]`` attains
    ``upper[i, k]`` on the real network (NaN where upper is +inf).
    """

    labels: Array
    lower: Array
    upper: Array
    lower_stage: Array
    upper_stage: Array
    points: Array
    mask: Array  # (n, n_out): which classes are targets of input i
    termination: dict = field(default_factory=dict)  # (i, k) -> Termination of the last solver run
    solver: dict = field(default_factory=dict)

    @classmethod
    def start(cls, labels: Array, n_out: int, d: int, targets: Array | None = None) -> "Brackets":
        """Open brackets (-inf, +inf) for every target; ``targets`` (n, n_out) bool narrows which classes are
        targets (default: every class but the label)."""
        n = labels.shape[0]
        mask = np.arange(n_out)[None, :] != labels[:, None]
        if targets is not None:
            mask = mask & targets
        lower = np.where(mask, -np.inf, np.inf)
        return cls(labels, lower, np.full((n, n_out), np.inf), np.full((n, n_out), "", dtype=object),
                   np.full((n, n_out), "", dtype=object), np.full((n, n_out, d), np.nan), mask)

    def snapshot(self) -> "Brackets":
        """An independent copy: the brackets as they stand now (a ``both`` call's LP answer, before the MIP)."""
        return Brackets(self.labels, self.lower.copy(), self.upper.copy(), self.lower_stage.copy(),
                        self.upper_stage.copy(), self.points.copy(), self.mask, dict(self.termination),
                        dict(self.solver))

    def raise_lower(self, i: int, k: int, value: float, stage: str) -> None:
        """Offer one lower bound, on target k of input i."""
        values = np.full((1, self.lower.shape[1]), -np.inf)
        values[0, k] = value
        self.offer_lower(np.array([i]), values, stage)

    def worst(self, i: int) -> int:
        """The target whose attained margin is smallest (the one that answers ``min_k``)."""
        return int(np.argmin(np.where(self.mask[i], self.upper[i], np.inf)))

    def targets_of(self, i: int) -> Array:
        return np.flatnonzero(self.mask[i])

    @property
    def falsified(self) -> Array:
        return (self.upper <= 0.0).any(axis=1)

    @property
    def verified(self) -> Array:
        return (self.lower > 0.0).all(axis=1)

    @property
    def undecided(self) -> Array:
        return ~(self.falsified | self.verified)

    def open_targets(self, i: int) -> Array:
        """Targets of input i whose sign is not yet decided (none once the input is falsified)."""
        if self.upper[i].min() <= 0.0:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.lower[i] <= 0.0)

    def offer_lower(self, rows: Array, values: Array, stage: str) -> None:
        """Raise lower bounds (rows: input indices, values: (len(rows), n_out), -inf where no news)."""
        current = self.lower[rows]
        better = values > current
        self.lower[rows] = np.where(better, values, current)
        self.lower_stage[rows] = np.where(better, stage, self.lower_stage[rows])
        self._check(rows)

    def offer_points(self, rows: Array, points: Array, margins: Array, stage: str) -> None:
        """Lower upper bounds with points (len(rows), d) and their re-evaluated margins (len(rows), n_out)."""
        target = self.mask[rows]
        current = self.upper[rows]
        better = target & (margins < current)
        self.upper[rows] = np.where(better, margins, current)
        self.upper_stage[rows] = np.where(better, stage, self.upper_stage[rows])
        pts = self.points[rows]
        pts[better] = np.broadcast_to(points[:, None, :], pts.shape)[better]
        self.points[rows] = pts
        self._check(rows)

    def _check(self, rows: Array) -> None:
        lo, up = self.lower[rows], self.upper[rows]
        bad = np.isfinite(up) & (lo > up + CONTRADICTION_TOL * (1.0 + np.abs(up)))
        if bad.any():
            r, k = np.argwhere(bad)[0]
            i = int(np.asarray(rows).reshape(-1)[r]) if np.ndim(rows) else int(rows)
            raise UnsoundAnswerError(
                f"input {i}, target {k}: lower bound {lo[r, k]:.9g} (from {self.lower_stage[i, k]}) exceeds the "
                f"margin {up[r, k]:.9g} the real network attains (found by {self.upper_stage[i, k]}); answer rejected")


def margins(network: Network, x: Array, labels: Array) -> Array:
    """``f(x_i)[y_i] - f(x_i)[k]`` for rows x (n, d), shape (n, n_out), in float64."""
    y = network.forward(x)
    return y[np.arange(y.shape[0]), labels][:, None] - y

