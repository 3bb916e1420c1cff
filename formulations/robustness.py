"""Local robustness queries: ``certify(network, x, label, eps, method=...)``.

The query: over the input set B (a norm ball around ``x`` clipped to the input domain), is the margin
``logit[label] - logit[k]`` positive for every other class k? The answer is a :class:`Certificate` bracketing
``m* = min_k min_{x' in B} margin_k(x')``:

* *falsified* iff some x' in B has a margin <= 0, re-evaluated on the real network in float64;
* *verified* iff a sound lower bound on m* is > 0: a symbolic bound or a solver's **dual** bound, moved
  outward by the slack granted to its tolerances (never a primal / incumbent value);
* *unknown* otherwise, with the reason.

:func:`certify` is the batched cascade (:mod:`formulations.cascade`) with one input: one engine path for a
query asked alone, in a job or in a benchmark. :func:`minimum_margin` is the exact MIP with refinement for
one target, on its own: the independent check the tests and benchmarks compare the cascade against.
"""

from __future__ import annotations

import time

import numpy as np

from .backends import default_mip_solver
from .backends.registry import require
from .bounds import symbolic_bounds
from .certificate import Certificate
from .encoding import LP, MIP, ROBUSTNESS_METHODS, margin_objective
from .errors import InvalidInputError
from .input_sets import InputSet
from .network import Network
from .refinement import minimize_with_refinement

Array = np.ndarray
METHODS = ROBUSTNESS_METHODS


def margins(network: Network, x: Array, label: int) -> Array:
    """``logit[label] - logit[k]`` for every k (0 at k = label), in float64, for one input or a batch."""
    y = network.forward(x)
    return y[..., label, None] - y


def validate_query(network: Network, x: Array, label: int, eps: float, method: str) -> Array:
    """Check a robustness query's arguments; returns ``x`` as float64. Raises InvalidInputError."""
    x = network.check_input(x)
    if x.ndim != 1:
        raise InvalidInputError(f"certify takes one input of length {network.input_size}, got shape {x.shape}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise InvalidInputError(f"label must be an integer class index, got {label!r}")
    if not 0 <= int(label) < network.output_size:
        raise InvalidInputError(f"label {label} is out of range for a network with {network.output_size} outputs")
    if not np.isfinite(eps) or eps < 0:
        raise InvalidInputError(f"eps must be a finite number >= 0, got {eps!r}")
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    return x


def _check_solver(name: str) -> None:
    """Fail early, with a message naming the solver and what is usable, before any work is done."""
    require(name)


def certify(
    network: Network,
    x: Array,
    label: int,
    eps: float,
    *,
    method: str = MIP,
    solver: str | None = None,
    lp_solver: str | None = None,
    norm: str = "linf",
    domain: tuple[float, float] = (0.0, 1.0),
    targets: list[int] | None = None,
    tolerance: float = 1e-4,
    time_limit: float | None = None,
    attack: bool = True,
    n_lines: int = 3,
    seed: int = 0,
    answer: str = "bounds",
) -> Certificate:
    """Certify local robustness of ``network`` at ``x`` (class ``label``) within radius ``eps``.

    One engine path: this is :func:`formulations.cascade.certify_batch` with one input, so a query asked
    alone and the same query inside a job get the same certificate.

    Args:
        method: ``"lp"`` (the envelope LP's bound on every target, sound and incomplete), ``"klp"`` (the
            k-neuron LP's bound, :mod:`formulations.klp`; sound, incomplete, tighter) or ``"mip"`` (the exact
            minimum margin, bracketed to ``tolerance``).
        solver: the MIP back-end (default SCIP). ``lp_solver``: the envelope LP runs on HiGHS, held across
            targets, with its bound recomputed from the duals (Neumaier & Shcherbina 2004); only ``"highs"``
            is accepted here.
        norm, domain: the input set, a ``norm`` ball of radius ``eps`` intersected with the box ``domain``.
        targets: the classes to compare against (default: all others).
        time_limit: seconds for the whole query; on expiry the answer is *unknown (time limit)*.
        attack: run the PGD attacks (upper bounds, counterexamples) before the LP and MIP stages.
        n_lines: certified envelope lines per side and neuron in the LP.
        answer: ``"bounds"`` (default: the bound and optimum of the method, with the tight constraints) or
            ``"verdict"`` (the sign only, faster).

    Returns:
        A :class:`Certificate` whose ``lower``/``upper`` bracket the minimum margin over all targets.

    Raises:
        InvalidInputError: malformed input, label, eps, norm, method or targets.
        SolverNotAvailableError: the requested solver cannot run here.
        UnsoundAnswerError: a solver's bound contradicted a point the real network attains.
    """
    from .cascade import CascadeSettings, certify_batch  # the cascade builds on this module's helpers

    x = validate_query(network, x, label, eps, method)
    if solver is not None:
        _check_solver(solver)
    if lp_solver is not None and lp_solver != "highs":
        _check_solver(lp_solver)
        raise InvalidInputError(f"the envelope LP runs on HiGHS (its bound recomputed from the duals); "
                                f"lp_solver {lp_solver!r} is not one it can use")
    if targets is not None:  # the cascade checks the range and that one is left; naming the label is an error here
        if int(label) in [int(k) for k in targets]:
            raise InvalidInputError(f"targets {list(targets)} include the label {label}")
        targets = [[int(k) for k in targets]]
    steps = dict(attack_steps=0, strong_attack_steps=0) if not attack else {}
    settings = CascadeSettings(answer=answer, mip_solver=solver, mip_tolerance=tolerance, query_time_limit=time_limit,
                               lp_lines=n_lines, seed=seed, **steps)
    return certify_batch(network, x[None, :], np.array([int(label)]), float(eps), method=method, settings=settings,
                         norm=norm, domain=domain, targets=targets)[0]


def minimum_margin(
    network: Network,
    x: Array,
    label: int,
    target: int,
    eps: float,
    *,
    solver: str | None = None,
    norm: str = "linf",
    domain: tuple[float, float] = (0.0, 1.0),
    tolerance: float = 1e-4,
    time_limit: float | None = None,
) -> tuple[float, float, Array | None]:
    """The exact minimum of ``logit[label] - logit[target]`` over the input set, as a bracket.

    Unlike :func:`certify` it does not stop once the sign is known: refinement runs until
    ``upper - lower <= tolerance``. Returns ``(lower, upper, point)`` with ``point`` attaining ``upper``.
    """
    x = validate_query(network, x, label, eps, MIP)
    solver = solver or default_mip_solver()
    _check_solver(solver)
    input_set = InputSet(x, float(eps), norm=norm, domain=domain)
    lo, hi = input_set.box()
    bounds = symbolic_bounds(network, lo, hi, ball=input_set)
    centre = input_set.project(x)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    outcome = minimize_with_refinement(
        network, input_set, bounds,
        lambda e: margin_objective(e, int(label), int(target)),
        lambda p: float(margins(network, p, int(label))[int(target)]),
        solver=solver, tolerance=tolerance, deadline=deadline, stop_at_sign=False,
        upper=float(margins(network, centre, int(label))[int(target)]), point=centre, max_rounds=60,
    )
    return outcome.lower, outcome.upper, outcome.point
