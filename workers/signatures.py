"""Signature jobs (issue 16): maximise a class logit over each query's eps-ball and store its tight set.

A query is one (input, eps, method); its class is the job's ``target_class`` or, by default, the input's
label. The engine call is ``formulations.signatures.maximize_logit_batch``, once per (method) group of a
chunk (each input with its own class and radius); if that call raises, the group is answered query by
query through the same function, so that one refusal costs one query, not the chunk.

What a certificate row holds for a signature query:

* ``upper``: the sound upper bound on ``max logit[c]`` over the ball (the LP's or the MIP's dual bound,
  moved outward); ``lower``: ``logit[c]`` of the real network at the solver's input (achieved);
  ``gap = upper - lower``.
* ``extra``: ``class`` (the maximised class), ``point`` (the solver's input: the optimum's location),
  ``achieved``, ``bound``, ``tolerance``, ``bracket_closed``, ``known`` (the best logit an attack or a
  sampled point reached). The point lives in ``extra``, not in ``counterexample``: everywhere else
  ``counterexample`` is a violation of a property, re-checked on the network, and a signature optimum
  violates nothing.
* its tight constraints as signature rows (:func:`signature_tag_rows`).

Verdicts (the fixed vocabulary) and answer words:

* ``verified`` / ``bound``: an LP solved to optimality gave a sound bound (the relaxation's; not exact).
* ``verified`` / ``optimum``: a MIP whose bracket closed, ``upper - lower <= tolerance``.
* ``unknown`` / ``bound``: a MIP stopped with a sound bound but an open bracket (reason ``time limit``
  when its time ran out, ``refinement limit`` when the refinement rounds did).
* ``unknown`` / ``unknown``: no answer (the solver failed, or an answer was rejected as unsound; the
  message is in ``error``). ``falsified`` is never used: a signature query has no property to refute.

Soundness: besides :func:`maximize_logit`'s own check at its optimum, every bound is compared with the
logit at the centre, at random points of the ball and at a gradient-ascent attack
(``logit_attack``); a bound below any of them is rejected (``UnsoundAnswerError`` -> unknown).
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from polycert.formulations.certificate import UnknownReason, Verdict
from polycert.formulations.errors import PolyCertError

SIGNATURE = "signature"
ANSWER_OPTIMUM, ANSWER_BOUND, ANSWER_UNKNOWN = "optimum", "bound", "unknown"
DEFAULT_TOLERANCE = 1e-4
# engine seconds per query without history (maximize_logit_batch on the 49-3-3-10 network, loaded machine:
# LP ~4 ms, MIP ~0.2 s)
PRIOR_SECONDS = {"lp": 0.005, "mip": 0.25}


def query_class(query, parameters: dict[str, Any]) -> int:
    target = parameters.get("target_class")
    return int(query.label if target is None else target)


def verdict_of(sig, method: str, tolerance: float, elapsed: float, time_limit: float | None) -> tuple[str, str | None, str]:
    """(verdict, reason, answer) of a signature answer (module docstring)."""
    if method == "lp":
        return Verdict.VERIFIED.value, None, ANSWER_BOUND
    if sig.bound - sig.achieved <= tolerance:
        return Verdict.VERIFIED.value, None, ANSWER_OPTIMUM
    ran_out = time_limit is not None and elapsed >= 0.95 * time_limit
    reason = UnknownReason.TIME_LIMIT if ran_out else UnknownReason.REFINEMENT_LIMIT
    return Verdict.UNKNOWN.value, reason.value, ANSWER_BOUND


def signature_record(sig, *, tolerance: float, known: float, wall_time: float, solver: str,
                     time_limit: float | None) -> dict[str, Any]:
    """Certificate columns of one signature answer."""
    verdict, reason, answer = verdict_of(sig, sig.method, tolerance, wall_time, time_limit)
    lower, upper = float(sig.achieved), float(sig.bound)
    extra = dict(**{"class": int(sig.cls)}, point=np.asarray(sig.point, dtype=np.float64).tolist(), achieved=lower,
                 bound=upper, tolerance=tolerance, bracket_closed=sig.method == "mip" and answer == ANSWER_OPTIMUM,
                 known=float(known) if math.isfinite(known) else None)
    return dict(verdict=verdict, reason=reason, stage=sig.method, lower=lower, upper=upper, gap=upper - lower,
                counterexample=None, counterexample_value=None, targets=[], solver=solver,
                times={"engine": wall_time}, size={}, error=None, wall_time=wall_time, answer=answer, extra=extra)


def signature_tag_rows(sig, network) -> list[dict[str, Any]]:
    """The tight set of a signature as rows of ``signatures``: ``input_lower`` / ``input_upper`` (pixel),
    ``envelope_lower`` / ``envelope_upper`` (LP: layer, neuron, index = line, -1 the image bound),
    ``segment`` (MIP: index = the active segment), ``region`` (both: index = ``region_of``'s region)."""
    rows = [dict(kind=kind, layer=None, neuron=int(i), index=None, pixel=int(i))
            for kind, mask in (("input_lower", sig.pixels_lower), ("input_upper", sig.pixels_upper))
            for i in np.flatnonzero(mask)]
    if sig.method == "lp":
        rows += [dict(kind=f"envelope_{side}", layer=int(layer), neuron=int(neuron), index=int(index), pixel=None)
                 for layer, neuron, side, index in sig.lines]
    rows += [dict(kind="segment", layer=int(layer), neuron=int(neuron), index=int(s), pixel=None)
             for (layer, neuron), s in sorted(sig.segments.items())]
    units = [(layer, neuron) for layer, size in enumerate(len(l.bias) for l in network.hidden_layers)
             for neuron in range(size)]
    rows += [dict(kind="region", layer=layer, neuron=neuron, index=int(r), pixel=None)
             for (layer, neuron), r in zip(units, sig.regions)]
    return rows


def method_groups(queries: Sequence) -> list[tuple[str, list]]:
    """Queries by method, in order of first appearance (one engine call each)."""
    groups: dict[str, list] = {}
    for query in queries:
        groups.setdefault(query.method, []).append(query)
    return list(groups.items())


def answer_group(network, group: Sequence, parameters: dict[str, Any], domain: tuple[float, float]
                 ) -> list[tuple[Any, dict[str, Any], list[dict[str, Any]]]]:
    """(query, certificate columns, signature rows) for each query of a group sharing one method.

    One ``maximize_logit_batch`` call for the group; if it raises, one call per query, and a query whose
    call raises is answered unknown with the message."""
    from polycert.formulations.backends import default_lp_solver, default_mip_solver
    from polycert.formulations.signatures import logit_attack, maximize_logit_batch, reject_below_known

    method = group[0].method
    tolerance = float(parameters.get("tolerance") or DEFAULT_TOLERANCE)
    limit = parameters.get("time_limit")
    chosen = parameters.get("lp_solver") if method == "lp" else parameters.get("solver")  # the job's, if any
    solver = chosen or (default_lp_solver() if method == "lp" else default_mip_solver())
    options = dict(method=method, domain=domain, tolerance=tolerance, time_limit=limit, solver=solver)
    xs = np.asarray([q.input for q in group], dtype=np.float64)
    classes = np.asarray([query_class(q, parameters) for q in group], dtype=np.int64)
    eps = np.asarray([q.eps for q in group], dtype=np.float64)
    _, known = logit_attack(network, xs, classes, eps, domain=domain)
    start = time.perf_counter()
    try:
        outcomes: list = maximize_logit_batch(network, xs, classes, eps, **options)
        seconds = [(time.perf_counter() - start) / len(group)] * len(group)
    except PolyCertError:
        outcomes, seconds = [], []
        for i in range(len(group)):
            one = time.perf_counter()
            try:
                outcomes.append(maximize_logit_batch(network, xs[i:i + 1], classes[i:i + 1], eps[i:i + 1], **options)[0])
            except PolyCertError as exc:
                outcomes.append(exc)
            seconds.append(time.perf_counter() - one)
    out = []
    for query, sig, known_i, wall in zip(group, outcomes, known, seconds):
        if not isinstance(sig, PolyCertError):
            try:
                reject_below_known(sig, float(known_i))
            except PolyCertError as exc:
                sig = exc
        if isinstance(sig, PolyCertError):
            out.append((query, unknown_answer(sig, wall), []))
            continue
        out.append((query, signature_record(sig, tolerance=tolerance, known=float(known_i), wall_time=wall,
                                            solver=solver, time_limit=limit), signature_tag_rows(sig, network)))
    return out


def unknown_answer(exc: PolyCertError, wall_time: float) -> dict[str, Any]:
    return dict(verdict=Verdict.UNKNOWN.value, reason=UnknownReason.SOLVER_ERROR.value, stage="", lower=-math.inf,
                upper=math.inf, gap=math.inf, counterexample=None, counterexample_value=None, targets=[], solver="",
                times={}, size={}, error=f"{type(exc).__name__}: {exc}"[:2000], wall_time=wall_time,
                answer=ANSWER_UNKNOWN, extra=None)
