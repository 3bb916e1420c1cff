"""Fixtures' building blocks for service and worker tests: settings on a temporary SQLite file, a small
network, and a stand-in engine for unit tests of the storage and queue layers (the integration tests run
the real engine)."""

from __future__ import annotations

import numpy as np

from polycert.formulations.certificate import Certificate, TargetBound, UnknownReason, Verdict
from polycert.formulations.model import ConstraintTag
from polycert.formulations.network import Network


def small_network(seed: int = 0, name: str = "toy-4-3-2") -> Network:
    rng = np.random.default_rng(seed)
    return Network.from_arrays([rng.normal(size=(3, 4)), rng.normal(size=(2, 3))], [rng.normal(size=3), rng.normal(size=2)],
                               "relu", name=name)


def interval_certify(network: Network, x, label: int, eps: float, *, method: str = "lp", domain=(0.0, 1.0),
                     **_options) -> Certificate:
    """A stand-in engine for unit tests: interval arithmetic (IBP) on the margin over the box clipped to
    ``domain``, verified iff the IBP lower bound is positive, falsified iff the centre itself is
    misclassified, tight = pixels clipped at 0."""
    lo, hi = np.clip(x - eps, *domain), np.clip(x + eps, *domain)
    for layer in network.layers:
        wp, wn = np.maximum(layer.weight, 0), np.minimum(layer.weight, 0)
        zl, zu = wp @ lo + wn @ hi + layer.bias, wp @ hi + wn @ lo + layer.bias
        lo, hi = layer.activation.value(zl), layer.activation.value(zu)  # monotone activations only
    others = [k for k in range(network.output_size) if k != label]
    lower = min(lo[label] - hi[k] for k in others)
    logits = network.forward(x)
    upper = min(logits[label] - logits[k] for k in others)
    if upper <= 0:
        verdict, reason, cex = Verdict.FALSIFIED, None, np.asarray(x, dtype=float)
    elif lower > 0:
        verdict, reason, cex = Verdict.VERIFIED, None, None
    else:
        verdict, reason, cex = Verdict.UNKNOWN, UnknownReason.RELAXATION, None
    tight = tuple(ConstraintTag("input_lower", None, int(i)) for i in np.flatnonzero(np.asarray(x) - eps <= 0))
    tight += (ConstraintTag("relu_active", 0, 1),)
    targets = tuple(TargetBound(k, float(lo[label] - hi[k]), float(logits[label] - logits[k]), verdict) for k in others)
    return Certificate(kind="robustness", verdict=verdict, lower=float(lower), upper=float(upper), method=method,
                       stage=method, reason=reason, label=label, eps=eps, counterexample=cex,
                       counterexample_value=None if cex is None else float(upper), targets=targets, tight=tight,
                       solver="interval", times={"attack": 0.0, "total": 0.0}, size={"rows": 0})
