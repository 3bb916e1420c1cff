"""Back-ends whose MIP answers need a second opinion never decide a proof alone (backends.second_opinion)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from polycert.formulations.backends import (
    SolveParameters, Termination, register_backend, second_opinion, solve, unregister_backend,
)
from polycert.formulations.backends import base
from polycert.formulations.backends.registry import backend
from polycert.formulations.cascade import CascadeSettings, certify_batch
from polycert.formulations.certificate import UnknownReason, Verdict

from ..helpers import random_network
from .conftest import AVAILABLE, random_model


class Overstating(base.Backend):
    """A deliberately wrong back-end: SCIP's answer with the primal point dropped and the dual bound of a
    minimisation raised to at least 1e-3, so that every margin looks positive: a wrong *verified*."""

    requires = "pyscipopt"

    def __init__(self, name: str, needs_second_opinion: bool) -> None:
        self.name = name
        self.capabilities = base.Capabilities(lp=True, mip=True, sos2=True, needs_second_opinion=needs_second_opinion)
        self.calls = 0

    def _build(self, model, params):
        return None

    def _run(self, model, handle, params):
        self.calls += 1
        real = backend("scip").solve(model, params)
        return dataclasses.replace(real, solver=self.name, primal=None, objective_value=None,
                                   dual_bound=max(real.dual_bound or 0.0, 1e-3))


@pytest.fixture
def fake():
    """Register an overstating back-end under "fake"; the test says whether it claims needs_second_opinion."""
    made = []

    def make(needs_second_opinion: bool) -> Overstating:
        instance = Overstating("fake", needs_second_opinion)
        register_backend(instance)
        made.append(instance)
        return instance

    yield make
    unregister_backend("fake")


def _mip_only_certificate(seed: int):
    """A GELU 3-4-3 network and an input that is *not* robust at eps 0.2 (SCIP falsifies it), answered by the
    cascade with every stage but the MIP switched off, so the MIP back-end alone decides."""
    rng = np.random.default_rng(seed)
    net = random_network(rng, (3, 4, 3), "gelu")
    x = rng.uniform(0.3, 0.7, 3)
    label = int(net.predict(x))

    def run(solver: str):
        settings = CascadeSettings(symbolic=False, attack_steps=0, strong_attack_steps=0, lp=False, branching=False,
                                   smooth_bab=False, mip_solver=solver)
        return certify_batch(net, x[None], np.array([label]), np.array([0.2]), method="mip", settings=settings)[0]

    return run


@pytest.mark.parametrize("seed", [6, 12])
def test_an_overstating_backend_that_needs_a_second_opinion_never_verifies_a_falsifiable_input(fake, seed):
    run = _mip_only_certificate(seed)
    assert run("scip").verdict == Verdict.FALSIFIED  # the truth, from the trusted back-end
    wrong = fake(needs_second_opinion=True)
    cert = run("fake")
    assert wrong.calls > 0  # it was asked, and overruled
    assert cert.verdict == Verdict.FALSIFIED
    assert cert.counterexample is not None and cert.counterexample_value <= 0
    assert "fake+scip" in cert.solver


def test_the_same_overstating_backend_trusted_alone_would_verify_it(fake):
    """The control: without the capability the fake's bound is taken, and its verified is wrong. This is what
    the rule above prevents (and shows the fake is wrong enough for that test to mean something)."""
    run = _mip_only_certificate(6)
    fake(needs_second_opinion=False)
    assert run("fake").verdict == Verdict.VERIFIED


def test_with_no_trusted_backend_the_answer_is_unknown_unconfirmed(fake, monkeypatch):
    import polycert.formulations.backends as backends

    monkeypatch.setattr(backends, "TRUSTED_MIP_SOLVERS", ())
    fake(needs_second_opinion=True)
    cert = _mip_only_certificate(6)("fake")
    assert cert.verdict == Verdict.UNKNOWN
    assert cert.reason == UnknownReason.UNCONFIRMED
    assert cert.reason.value == "unconfirmed"


def test_an_unconfirmed_solve_has_no_dual_bound_and_says_why(fake, monkeypatch):
    import polycert.formulations.backends as backends

    monkeypatch.setattr(backends, "TRUSTED_MIP_SOLVERS", ())
    fake(needs_second_opinion=True)
    model, _ = random_model(3, 6, 4, integer=True)
    res = solve(model, "fake")
    assert res.termination == Termination.UNCONFIRMED
    assert res.dual_bound is None and res.safe_dual_bound is None
    assert "unconfirmed" in res.message


@pytest.mark.skipif(not AVAILABLE["highs"], reason="highspy is not installed")
@pytest.mark.parametrize("seed", range(4))
def test_highs_mip_answers_are_those_of_scip(seed):
    model, x0 = random_model(seed, 8, 6, integer=True)
    confirmed = solve(model, "highs")
    trusted = solve(model, "scip")
    assert confirmed.solver == "highs+scip"
    assert confirmed.termination == trusted.termination
    assert confirmed.dual_bound == pytest.approx(trusted.dual_bound, abs=1e-9)
    assert confirmed.dual_bound >= model.evaluate(x0) - 1e-9  # a maximisation's bound is above a known point


@pytest.mark.skipif(not AVAILABLE["highs"], reason="highspy is not installed")
def test_highs_lp_answers_need_no_second_opinion():
    model, _ = random_model(1, 6, 4, integer=False)
    assert solve(model, "highs").solver == "highs"


def test_trusted_backends_are_returned_unchanged():
    model, _ = random_model(2, 6, 4, integer=True)
    res = solve(model, "scip")
    assert second_opinion(model, "scip", SolveParameters(), res) is res


def test_the_second_opinion_shares_the_time_limit_and_none_left_means_no_bound(fake):
    model, _ = random_model(4, 6, 4, integer=True)
    fake(needs_second_opinion=True)
    first = solve(model, "fake", SolveParameters(time_limit=60))
    late = dataclasses.replace(first, solver="fake", solve_time=61.0, dual_bound=1e9)
    res = second_opinion(model, "fake", SolveParameters(time_limit=60), late)
    assert res.termination == Termination.TIME_LIMIT and res.dual_bound is None
    assert "no time was left" in res.message
