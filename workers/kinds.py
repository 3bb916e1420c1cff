"""Query kinds other than robustness: invertibility (Cui et al., L4DC 2023) and VNN-COMP instances.

One query per task (they are expensive): :func:`answer_query` turns a stored query into certificate column
values. Verdicts keep the certificate vocabulary (verified / falsified / unknown); ``answer`` is the kind's
own word: invertible / not invertible / unknown for invertibility, holds / violated / unknown for VNN-COMP.
The witness pair (x, y) of an invertibility answer, re-evaluated on the real networks by the engine, is
stored in ``extra["witness"]`` with its distance and output difference.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from polycert.formulations.certificate import Certificate, Verdict

INVERTIBILITY_KINDS = ("injectivity", "preimage", "dependence", "invariance", "radius")
VNNCOMP = "vnncomp"
SIGNATURE = "signature"  # workers.signatures
KINDS = ("robustness", *INVERTIBILITY_KINDS, VNNCOMP, SIGNATURE)
ANSWER_WORDS = {Verdict.VERIFIED.value: "invertible", Verdict.FALSIFIED.value: "not invertible",
                Verdict.UNKNOWN.value: "unknown"}
VNNCOMP_VERDICTS = {"holds": Verdict.VERIFIED.value, "violated": Verdict.FALSIFIED.value, "unknown": Verdict.UNKNOWN.value}


def jsonable(value: Any) -> Any:
    """Arrays, NumPy scalars, tuples and non-finite floats made JSON-safe (non-finite -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return getattr(value, "value", value)


def job_pair_domain(parameters: dict[str, Any], d: int):
    """The (lo, hi) box an invertibility job's pairs lie in, as the engine takes it. Jobs record it at
    submission (the network's domain or a narrower one); a job stored before that recorded none, or a pair,
    and was asked on R^d (invariance: on [0, 1])."""
    from polycert.formulations.domains import parse_domain

    domain = parameters.get("domain")
    if domain is None:
        return None
    return parse_domain(domain).pair(d)


def invertibility_certificate(kind: str, network, center: np.ndarray, parameters: dict[str, Any],
                              second=None) -> Certificate:
    """One engine call of ``formulations.invertibility`` for a centre (the job's parameters)."""
    from polycert.formulations import invertibility as inv

    common = dict(norm=parameters.get("norm", "linf"), delta=parameters.get("delta"), solver=parameters.get("solver"),
                  tolerance=parameters.get("tolerance", 1e-4))
    domain = job_pair_domain(parameters, network.input_size)
    limit = parameters.get("time_limit")
    radius = parameters.get("radius")
    if kind == "injectivity":
        return inv.injectivity(network, center, radius, domain=domain, time_limit=limit, **common)
    if kind == "preimage":
        return inv.preimage(network, center, radius, domain=domain, time_limit=limit, **common)
    if kind == "dependence":
        return inv.dependence(network, second, center, radius, domain=domain, time_limit=limit, **common)
    if kind == "invariance":
        return inv.decision_invariance(network, center, radius=radius, domain=(0.0, 1.0) if domain is None else domain,
                                       time_limit=limit, **common)
    if kind == "radius":
        search = {k: parameters[k] for k in ("start", "growth", "gap", "max_radius") if parameters.get(k) is not None}
        per_query = parameters.get("query_time_limit") or limit
        if second is None:
            return inv.injectivity_radius(network, center, domain=domain, time_limit=limit, query_time_limit=per_query,
                                          **common, **search)
        return inv.dependence_radius(network, second, center, domain=domain, time_limit=limit,
                                     query_time_limit=per_query, **common, **search)
    raise ValueError(f"not an invertibility kind: {kind!r}")


def invertibility_record(cert: Certificate, wall_time: float) -> dict[str, Any]:
    """Certificate columns of an invertibility answer: the bracket [lower, upper] on p*, the witness pair."""
    extra = jsonable(dict(cert.extra))
    witness = extra.get("witness") or extra.get("witness_above")
    counterexample = None if cert.counterexample is None else jsonable(np.asarray(cert.counterexample, dtype=np.float64))
    return dict(
        verdict=cert.verdict.value, reason=jsonable(cert.reason), stage=cert.stage or "",
        lower=float(cert.lower), upper=float(cert.upper), gap=float(cert.gap), counterexample=counterexample,
        counterexample_value=None if witness is None else witness.get("objective"),
        targets=[], solver=cert.solver or "", times=jsonable(dict(cert.times)),
        size={k: int(v) for k, v in cert.size.items()}, error=None, wall_time=wall_time,
        answer=ANSWER_WORDS[cert.verdict.value], extra=extra,
    )


def vnncomp_record(network, vnnlib_text: str, timeout: float, solver: str | None = None) -> dict[str, Any]:
    """Decide one VNN-COMP instance (``formulations.vnncomp.vnncomp_answer``); certificate columns."""
    from polycert.formulations.vnncomp import vnncomp_answer
    from polycert.formulations.vnnlib import read_vnnlib
    from polycert.workers.execution import target_records

    started = time.perf_counter()
    prop = read_vnnlib(vnnlib_text, n_inputs=network.input_size, n_outputs=network.output_size)
    options = {"solver": solver} if solver else {}
    answer = vnncomp_answer(network, prop, timeout=timeout, **options)
    lower = float(answer.lower)
    x = None if answer.x is None else jsonable(np.asarray(answer.x, dtype=np.float64))
    y = None if answer.y is None else jsonable(np.asarray(answer.y, dtype=np.float64))
    upper = float(answer.upper)
    return dict(
        verdict=VNNCOMP_VERDICTS.get(answer.word, Verdict.UNKNOWN.value),
        reason=None if answer.reason is None else answer.reason.value,  # the engine's, not a guess
        stage=answer.stage or "", lower=lower, upper=upper, gap=upper - lower, counterexample=x, counterexample_value=None,
        targets=target_records(answer.targets), solver=solver or "scip", times=jsonable(dict(answer.times)), size={}, error=None,
        wall_time=time.perf_counter() - started, answer=answer.word,
        extra={"y": y, "undecided": [int(k) for k in answer.undecided], "timeout": timeout},
    )


AnswerQuery = Callable[..., dict[str, Any]]
