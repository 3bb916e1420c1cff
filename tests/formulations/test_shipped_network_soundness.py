"""Cross-checks on the shipped 49-3-3-10 GELU networks: LP, exact MIP, the cascade and strong attacks agree."""

from __future__ import annotations

import numpy as np
import pytest

from polycert.formulations import Verdict
from polycert.formulations.attack import pgd_attack
from polycert.formulations.cascade import certify_batch
from polycert.formulations.robustness import certify, margins
from polycert.datasets import load_preprocessed
from polycert.zoo import load_builtin


@pytest.mark.parametrize("name", ["polycert-tiny", "verianet"])
def test_exact_verdicts_agree_with_lp_cascade_and_attacks_on_the_shipped_network(name):
    net = load_builtin(name)
    xs, ys = load_preprocessed(net.metadata["preprocessing"], "test")
    idx = np.arange(0, 240, 16)  # 15 images spread over the first 240
    xs, ys = xs[idx], ys[idx]
    eps = 0.02
    exact = [certify(net, x, int(y), eps, method="mip") for x, y in zip(xs, ys)]
    lp = [certify(net, x, int(y), eps, method="lp") for x, y in zip(xs, ys)]
    batch = certify_batch(net, xs, ys, eps, method="mip")
    strong = pgd_attack(net, xs, ys, eps, steps=100, restarts=10, seed=1)
    rng = np.random.default_rng(0)
    for q, (x, y) in enumerate(zip(xs, ys)):
        e, l, b = exact[q], lp[q], batch[q]
        assert e.verdict != Verdict.UNKNOWN and b.verdict == e.verdict
        assert l.lower <= e.upper + 1e-9 and e.lower <= e.upper + 1e-9
        if l.verdict == Verdict.VERIFIED:
            assert e.verdict == Verdict.VERIFIED
        if e.verdict == Verdict.VERIFIED:
            assert strong.margins[q] > 0
            lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
            corners = np.where(rng.uniform(size=(2000, x.size)) < 0.5, lo, hi)
            m = margins(net, corners, int(y))
            m[:, int(y)] = np.inf
            assert m.min() > 0 and m.min() >= e.lower - 1e-9
        else:
            assert margins(net, e.counterexample, int(y)).min() <= 0
            assert np.all(np.abs(e.counterexample - x) <= eps + 1e-12)
