"""One MIP, many objectives: the bound-tightening loop's view of a back-end.

:func:`persistent_mip` returns an object with ``set_objective(c, sense=, constant=)`` and ``solve(params)``
(a :class:`~formulations.backends.base.SolveResult`, as :func:`formulations.backends.solve` gives). Gurobi keeps
the model between solves (:class:`formulations.backends.gurobi.PersistentGurobi`); the other back-ends are
handed the whole model again at each solve (:class:`Resubmitting`), which is correct and slower.
"""

from __future__ import annotations

import numpy as np

from ..model import Model, Sense
from .base import SolveParameters, SolveResult
from .registry import require


class Resubmitting:
    """The model solved afresh by ``solver`` at each :meth:`solve`."""

    def __init__(self, model: Model, solver: str) -> None:
        require(solver).check_model(model)
        self.model, self.solver = model, solver

    def set_objective(self, c, *, sense: Sense = Sense.MINIMIZE, constant: float = 0.0) -> None:
        self.model.set_objective(np.asarray(c, dtype=np.float64), constant=constant, sense=sense)

    def solve(self, params: SolveParameters | None = None) -> SolveResult:
        from . import solve

        return solve(self.model, self.solver, params)

    def close(self) -> None:
        pass


def persistent_mip(model: Model, solver: str):
    """A re-solvable handle on ``model`` for ``solver`` (module docstring).

    Raises:
        SolverNotAvailableError: ``solver`` is unknown or cannot run here, or the model is over its licence.
    """
    if solver == "gurobi":
        from .gurobi import PersistentGurobi

        require(solver)
        return PersistentGurobi(model)
    return Resubmitting(model, solver)
