"""The batched cascade: every stage's verdicts agree with the exact per-query MIP, no stage certifies what
another falsifies, and the reused LP model answers each input as a fresh one would."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polycert.formulations import InvalidInputError, Network, Verdict
from polycert.formulations.backends import available_solvers
from polycert.formulations.cascade import STAGES, CascadeSettings, certify_batch, run_cascade
from polycert.formulations.robustness import certify, margins

pytestmark = pytest.mark.skipif(not available_solvers().get("scip"), reason="the exact reference needs SCIP")

# configurations that switch stages off, so each stage has to decide on its own
SYMBOLIC_ONLY = CascadeSettings(attack_steps=0, strong_attack_steps=0, lp=False)
ATTACK_ONLY = CascadeSettings(symbolic=False, lp=False)
LP_ONLY = CascadeSettings(symbolic=False, attack_steps=0, strong_attack_steps=0, lp_tighten=False, smooth_bab=False)
BRANCHING = CascadeSettings(symbolic=False, attack_steps=0, strong_attack_steps=0, lp=False, smooth_bab=False)
MIP_SOLVER_ONLY = CascadeSettings(symbolic=False, attack_steps=0, strong_attack_steps=0, lp=False, branching=False,
                                  smooth_bab=False)


def random_network(rng: np.random.Generator, sizes: tuple[int, ...], activation: str) -> Network:
    weights = [rng.normal(0, 1.0 / np.sqrt(a), size=(b, a)) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.normal(0, 0.3, size=b) for b in sizes[1:]]
    return Network.from_arrays(weights, biases, activation, name=f"random-{activation}")


def sampled_min_margins(net: Network, xs: np.ndarray, labels: np.ndarray, eps: float, rng, n: int = 3000) -> np.ndarray:
    out = np.empty(len(xs))
    for i, (x, y) in enumerate(zip(xs, labels)):
        lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
        pts = np.vstack([lo + rng.uniform(size=(n, x.size)) * (hi - lo),
                         np.where(rng.uniform(size=(n, x.size)) < 0.5, lo, hi)])
        m = margins(net, pts, int(y))
        m[:, int(y)] = np.inf
        out[i] = m.min()
    return out


def batch(seed: int, activation: str, n: int = 6):
    rng = np.random.default_rng(seed)
    net = random_network(rng, (5, 4, 4, 3), activation)
    xs = rng.uniform(0.1, 0.9, size=(n, 5))
    labels = net.predict(xs)
    labels[0] = (labels[0] + 1) % 3  # one misclassified input
    return rng, net, xs, labels


@pytest.mark.parametrize("activation", [pytest.param("gelu", marks=pytest.mark.slow), "relu"])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.03, 0.08, 0.15]))
def test_every_stage_agrees_with_the_exact_per_query_mip(activation, seed, eps):
    rng, net, xs, labels = batch(seed, activation)
    exact = [certify(net, x, int(y), eps, method="mip") for x, y in zip(xs, labels)]
    full = certify_batch(net, xs, labels, eps)
    assert all(c.verdict != Verdict.UNKNOWN for c in full)
    for config in (None, SYMBOLIC_ONLY, ATTACK_ONLY, LP_ONLY, BRANCHING, MIP_SOLVER_ONLY):
        method = "lp" if config in (SYMBOLIC_ONLY, ATTACK_ONLY, LP_ONLY) else "mip"
        for ref, got in zip(exact, certify_batch(net, xs, labels, eps, method=method, settings=config)):
            assert got.stage in STAGES or got.verdict == Verdict.UNKNOWN
            if got.verdict != Verdict.UNKNOWN and ref.verdict != Verdict.UNKNOWN:
                assert got.verdict == ref.verdict, (config, got.stage, got.lower, got.upper, ref.lower, ref.upper)
            # brackets of the same minimum overlap
            assert got.lower <= ref.upper + 1e-7 and ref.lower <= got.upper + 1e-7


@pytest.mark.parametrize("activation", ["gelu", "tanh"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.05, 0.1, 0.2]))
def test_no_stage_certifies_what_another_falsifies(activation, seed, eps):
    rng, net, xs, labels = batch(seed, activation, n=10)
    sampled = sampled_min_margins(net, xs, labels, eps, rng)
    verdicts = []
    for config, method in ((SYMBOLIC_ONLY, "lp"), (ATTACK_ONLY, "lp"), (LP_ONLY, "lp"), (BRANCHING, "mip"), (None, "mip")):
        certs = certify_batch(net, xs, labels, eps, method=method, settings=config)
        verdicts.append([c.verdict for c in certs])
        for c, s, x, y in zip(certs, sampled, xs, labels):
            assert c.lower <= s + 1e-9  # no lower bound above a margin the network attains
            if c.verdict == Verdict.VERIFIED:
                assert s > 0
            if c.verdict == Verdict.FALSIFIED:
                cx = c.counterexample
                assert np.all(cx >= np.clip(x - eps, 0, 1)) and np.all(cx <= np.clip(x + eps, 0, 1))
                m = margins(net, cx, int(y))
                m[int(y)] = np.inf
                assert m.min() <= 0.0 and m.min() == pytest.approx(c.counterexample_value)
    for per_input in zip(*verdicts):
        assert not (Verdict.VERIFIED in per_input and Verdict.FALSIFIED in per_input)


def test_reused_lp_answers_each_input_as_a_fresh_model_does():
    """The LP rows' coefficients change with each input's [l, u]: its bounds must not depend on the order."""
    rng = np.random.default_rng(7)
    net = random_network(rng, (6, 5, 4, 4), "gelu")
    xs = rng.uniform(0.2, 0.8, size=(5, 6))
    labels = net.predict(xs)
    config = CascadeSettings(symbolic=False, attack_steps=0, strong_attack_steps=0, lp_tighten=False)
    together = run_cascade(net, xs, labels, 0.1, method="lp", settings=config).certificates
    for i in range(len(xs)):
        alone = run_cascade(net, xs[i:i + 1], labels[i:i + 1], 0.1, method="lp", settings=config).certificates[0]
        backwards = run_cascade(net, xs[::-1], labels[::-1], 0.1, method="lp", settings=config).certificates[len(xs) - 1 - i]
        for a, b, c in zip(together[i].targets, alone.targets, backwards.targets):
            assert a.lower == pytest.approx(b.lower, abs=1e-7) and b.lower == pytest.approx(c.lower, abs=1e-7)
    sampled = sampled_min_margins(net, xs, labels, 0.1, rng)
    assert all(c.lower <= s for c, s in zip(together, sampled))


def test_stages_are_recorded_and_a_misclassified_input_is_falsified_at_its_centre():
    rng, net, xs, labels = batch(3, "gelu")
    result = run_cascade(net, xs, labels, 0.05)
    first = result.certificates[0]
    assert first.verdict == Verdict.FALSIFIED and first.stage == "center"
    np.testing.assert_array_equal(first.counterexample, xs[0])
    assert sum(result.decided_by().values()) == len(xs)
    assert set(result.stage_times) == set(STAGES)
    for c in result.certificates:
        assert c.stage in STAGES and c.kind == "robustness" and c.eps == 0.05
        assert len(c.targets) == net.output_size - 1


def test_radius_zero_is_decided_by_the_centre_and_symbolic_bounds():
    rng, net, xs, labels = batch(5, "gelu")
    for c in certify_batch(net, xs, labels, 0.0):
        assert c.stage in ("center", "symbolic")
        assert c.verdict == (Verdict.FALSIFIED if c.stage == "center" else Verdict.VERIFIED)


@pytest.mark.parametrize("bad", [
    dict(xs=np.zeros((2, 4))), dict(labels=np.array([0, 7])), dict(eps=-0.1), dict(method="milp"),
    dict(xs=np.full((2, 5), np.nan)), dict(norm="l3"),
])
def test_malformed_queries_raise_typed_errors(bad):
    _, net, xs, labels = batch(1, "gelu", n=2)
    args = dict(xs=xs, labels=labels, eps=0.05, method="mip", norm="linf") | bad
    with pytest.raises(InvalidInputError):
        certify_batch(net, args["xs"], args["labels"], args["eps"], method=args["method"], norm=args["norm"])


@pytest.mark.parametrize("field, value", [("attack_steps", -1), ("lp_lines", 0), ("mip_time_limit", 0.0),
                                          ("branch_node_limit", 1.5), ("mip_tolerance", float("nan"))])
def test_settings_reject_bad_limits(field, value):
    with pytest.raises(InvalidInputError, match=field):
        CascadeSettings(**{field: value})


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_branch_and_bound_minimum_margin_matches_enumeration_and_the_refined_mip(seed):
    from polycert.formulations.cascade import minimum_margin_bb
    from polycert.formulations.robustness import minimum_margin
    from tests.formulations.helpers import random_network as rnet, relu_enumeration_min_margin, relu_margin_instance

    rng = np.random.default_rng(seed)
    relu, x, label, k, lo, hi = relu_margin_instance(rng, (3, 4, 3, 3), 0.2)
    lower, upper, point = minimum_margin_bb(relu, x, label, k, 0.2, tolerance=1e-6)
    exact = relu_enumeration_min_margin(relu, lo, hi, label, k)
    assert lower <= exact + 1e-6 and abs(upper - exact) <= 1e-5 * (1 + abs(exact))
    gelu = rnet(rng, (4, 5, 4, 3), "gelu")
    x = rng.uniform(0.3, 0.7, size=4)
    label = int(gelu.predict(x))
    k = (label + 1) % 3
    lb, ub, p = minimum_margin_bb(gelu, x, label, k, 0.1, tolerance=1e-4)
    lm, um, _ = minimum_margin(gelu, x, label, k, 0.1, tolerance=1e-4)
    assert ub - lb <= 1e-4 + 1e-9 and max(lb, lm) <= min(ub, um) + 1e-6
    assert margins(gelu, p, label)[k] == pytest.approx(ub)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), activation=st.sampled_from(["relu", "gelu"]), eps=st.sampled_from([0.02, 0.1, 0.4]))
def test_the_early_report_holds_exactly_the_final_answers_of_the_cheap_stages(seed, activation, eps):
    _, net, xs, labels = batch(seed, activation)
    reports = []
    certs = certify_batch(net, xs, labels, eps, on_decided=lambda idx, cs: reports.append((list(idx), list(cs))))
    plain = certify_batch(net, xs, labels, eps)
    assert len(reports) <= 1
    indices, early = reports[0] if reports else ([], [])
    cheap = [i for i, c in enumerate(certs) if c.stage in ("center", "symbolic", "attack") and c.verdict != Verdict.UNKNOWN]
    assert indices == cheap
    assert all(certs[i] is c for i, c in zip(indices, early))  # the very objects returned: final when reported
    # the report changes nothing about the answers
    assert [(c.verdict, c.lower, c.upper, c.stage) for c in certs] == [(c.verdict, c.lower, c.upper, c.stage) for c in plain]
    for i in indices:
        assert certs[i].times["lp_share"] == 0.0 and certs[i].times["mip_share"] == 0.0


BOUNDS = CascadeSettings(answer="bounds")


@pytest.mark.parametrize("activation", ["gelu", "relu", "sigmoid", "silu"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.08, 0.2]))
def test_bounds_bracket_the_exact_minimum_margin_and_the_lp_bound_lies_below_it(activation, seed, eps):
    rng, net, xs, labels = batch(seed, activation)
    lp = certify_batch(net, xs, labels, eps, method="lp", settings=BOUNDS)
    mip = certify_batch(net, xs, labels, eps, method="mip", settings=BOUNDS)
    sampled = sampled_min_margins(net, xs, labels, eps, rng)
    for i, (a, b) in enumerate(zip(lp, mip)):
        # sound: no sampled point of the set lies below either lower bound
        assert a.lower <= sampled[i] + 1e-9 and b.lower <= sampled[i] + 1e-9
        # exact: the bracket closed, and its upper end is a margin the real network attains in the set
        assert b.extra["exact"] and b.upper - b.lower <= BOUNDS.mip_tolerance * (1 + 1e-9)
        worst = b.extra["worst_target"]
        assert b.upper == pytest.approx(min(t.upper for t in b.targets)) and np.isfinite(b.upper)
        # the relaxation is never tighter than the exact answer (beyond the tolerance)
        assert a.lower <= b.lower + BOUNDS.mip_tolerance
        # both report the constraints tight at their optimum: a region for every hidden neuron at least
        for cert in (a, b):
            regions = [t for t in cert.tight if t.kind == "region"]
            assert len(regions) == sum(layer.n_out for layer in net.hidden_layers), (cert.method, cert.tight)
        assert worst in [t.target for t in b.targets]
        assert b.extra["misclassified"] == (i == 0 and net.predict(xs[:1])[0] != labels[0])


def test_a_query_deadline_stops_the_exact_search_with_time_limit_and_the_bounds_it_reached():
    rng, net, xs, labels = batch(7, "gelu", n=3)
    tight_deadline = CascadeSettings(answer="bounds", query_time_limit=1e-3, symbolic=False, attack_steps=0,
                                     strong_attack_steps=0, lp_tighten=False)
    certs = certify_batch(net, xs, labels, 0.3, method="mip", settings=tight_deadline)
    timed_out = [c for c in certs if not c.extra["exact"]]
    assert timed_out, "a millisecond cannot close an exact bracket at eps 0.3"
    for c in timed_out:
        assert c.lower <= c.upper and (c.verdict != Verdict.UNKNOWN or c.reason.value == "time limit")


@pytest.mark.parametrize("answer", ["bounds", "verdict"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.03, 0.08, 0.15]), activation=st.sampled_from(["gelu", "relu"]))
def test_both_in_one_run_answers_as_the_two_runs_do(answer, seed, eps, activation):
    """method "both" shares stages 0-3: its LP answer is the LP run's, its MIP answer the MIP run's."""
    _, net, xs, labels = batch(seed, activation)
    config = CascadeSettings(answer=answer)
    seen = []
    pairs = certify_batch(net, xs, labels, eps, method="both", settings=config,
                          on_decided=lambda idx, certs: seen.extend(zip(idx, certs)))
    alone = {m: certify_batch(net, xs, labels, eps, method=m, settings=config) for m in ("lp", "mip")}
    assert len(pairs) == len(xs)
    for i, (lp, mip) in enumerate(pairs):
        for got, want in ((lp, alone["lp"][i]), (mip, alone["mip"][i])):
            assert (got.method, got.verdict, got.stage, got.tight) == (want.method, want.verdict, want.stage, want.tight)
            assert got.lower == pytest.approx(want.lower, abs=1e-7) and got.upper == pytest.approx(want.upper, abs=1e-7)
        assert mip.lower >= lp.lower - 1e-7
    for i, (lp, mip) in seen:  # the early report hands over pairs too, the same objects as returned
        assert pairs[i][0] is lp and pairs[i][1] is mip
