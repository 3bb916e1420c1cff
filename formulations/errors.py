"""Typed errors of the engine.

Every problem a caller can cause (bad input, a network whose layers do not chain, an operator the
loaders do not know, a solver that is not installed) raises one of these with a message that names
the problem, so the service can turn it into an HTTP 4xx or a CLI exit code instead of a traceback.
"""

from __future__ import annotations


class PolyCertError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(PolyCertError, ValueError):
    """An input, radius, label or option is malformed (NaN, wrong length, eps < 0, ...)."""


class NetworkShapeError(PolyCertError, ValueError):
    """A network's layers do not chain, or its arrays have the wrong shape."""


class UnsupportedOperatorError(PolyCertError, ValueError):
    """A network file uses an operator, activation or shape the loaders do not support."""


class SolverNotAvailableError(PolyCertError):
    """The requested solver is unknown, not installed, or has no working licence."""


class SolverError(PolyCertError):
    """A solver failed or returned an answer that cannot be trusted."""


class QuadraticNotSupportedError(SolverError):
    """A model with quadratic rows or objective terms went to a back-end that cannot state them.

    Raised instead of a silent linearisation; ``Capabilities.quadratic`` says which back-ends can.
    """

    @classmethod
    def of(cls, solver: str, model) -> "QuadraticNotSupportedError":
        """The refusal of ``model`` by ``solver``, in the one wording every back-end uses."""
        objective = " and a quadratic objective" if model.has_quadratic_objective else ""
        return cls(f"solver {solver!r} cannot state quadratic constraints or objectives (model {model.name!r} has "
                   f"{len(model.quadratic_constraints)} quadratic rows{objective}); it is not linearised silently: "
                   f"use 'scip' or 'gurobi'")


class UnsoundAnswerError(SolverError):
    """A solver's answer contradicts a known point (counterexample, attack, the input itself).

    Such answers are rejected and reported, never stored as certificates (design.md, Soundness rules).
    """
