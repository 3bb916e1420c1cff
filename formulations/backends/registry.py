"""The one registry of back-ends and what each can do (cvxpy/linopy style).

Back-end modules are imported lazily (on first use of a name) so that importing
:mod:`formulations.backends` never imports a solver.
"""

from __future__ import annotations

import functools
import importlib

from ..errors import SolverNotAvailableError
from .base import Backend, Capabilities

# solver name -> (module, attribute holding the Backend instance or class)
_ENTRIES: dict[str, tuple[str, str]] = {
    "scip": ("scip", "ScipBackend"),
    "ortools-glop": ("mathopt", "GLOP"),
    "ortools-pdlp": ("mathopt", "PDLP"),
    "ortools-scip": ("mathopt", "SCIP"),
    "ortools-highs": ("mathopt", "HIGHS"),
    "ortools-cpsat": ("mathopt", "CPSAT"),
    "gurobi": ("gurobi", "GurobiBackend"),
    "highs": ("highs", "HighsBackend"),
}

SOLVERS: tuple[str, ...] = tuple(_ENTRIES)

# back-ends registered at run time (register_backend): plug-ins, and the deliberately wrong fakes of tests
_REGISTERED: dict[str, Backend] = {}


def solver_names() -> tuple[str, ...]:
    """Every solver name this process knows: :data:`SOLVERS` and those added by :func:`register_backend`."""
    return SOLVERS + tuple(n for n in _REGISTERED if n not in _ENTRIES)


def register_backend(instance: Backend) -> None:
    """Make ``instance`` solvable under ``instance.name`` (it shadows a built-in of the same name)."""
    _REGISTERED[instance.name] = instance
    backend.cache_clear()
    is_available.cache_clear()


def unregister_backend(name: str) -> None:
    """Undo :func:`register_backend` (a no-op for a name it did not add)."""
    _REGISTERED.pop(name, None)
    backend.cache_clear()
    is_available.cache_clear()


@functools.cache
def backend(name: str) -> Backend:
    """The back-end object for ``name`` (not checked for installation)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _ENTRIES:
        raise SolverNotAvailableError(f"unknown solver {name!r}; known solvers: {', '.join(solver_names())}")
    module, attribute = _ENTRIES[name]
    obj = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
    return obj() if isinstance(obj, type) else obj


@functools.cache
def is_available(name: str) -> bool:
    """Whether ``name`` is usable here (cached: installation does not change while running)."""
    try:
        return backend(name).is_installed()
    except ImportError:  # the back-end module itself could not be imported
        return False


def available_solvers() -> dict[str, bool]:
    """Every known solver name -> whether it is usable here."""
    return {name: is_available(name) for name in solver_names()}


def capabilities(name: str) -> Capabilities:
    """What solver ``name`` can do (whether or not it is installed)."""
    return backend(name).capabilities


def require(name: str) -> Backend:
    """The back-end for ``name``; :class:`SolverNotAvailableError` naming what is missing otherwise."""
    b = backend(name)
    if not is_available(name):
        usable = [s for s in solver_names() if is_available(s)]
        raise SolverNotAvailableError(
            f"solver {name!r} is not usable here: it needs the Python package {b.requires!r}"
            f"{' with a working licence' if name == 'gurobi' else ''}; available solvers: "
            f"{', '.join(usable) or 'none'}")
    return b


def default_lp_solver() -> str:
    """The LP back-end used when none is named: GLOP (exact simplex, row duals), else HiGHS, else SCIP."""
    for name in ("ortools-glop", "highs", "scip"):
        if is_available(name):
            return name
    raise SolverNotAvailableError("no LP solver is installed (need ortools, highspy or pyscipopt)")


def default_mip_solver() -> str:
    """The MIP back-end used when none is named: SCIP through PySCIPOpt (design.md)."""
    for name in ("scip", "ortools-scip"):
        if is_available(name):
            return name
    raise SolverNotAvailableError("no trusted MIP solver is installed (need pyscipopt or ortools)")
