"""ReLU branch and bound (alpha/beta-CROWN): every bound below the exact minimum, every verdict right.

The oracle is activation-pattern enumeration (one LP per pattern, scipy's HiGHS): independent of the
code under test. Thresholds just above and below the exact minimum make "verified" and "falsified"
both reachable, so a wrong answer on either side fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polycert.formulations.bounds import symbolic_bounds
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.relu_bab import (FALSIFIED, UNKNOWN, VERIFIED, BabSearch, BabSettings, optimised_bounds,
                                   relu_bab)
from tests.formulations.helpers import random_network, relu_enumeration_min_margin, relu_margin_instance

SMALL = BabSettings(batch=16, iterations=8, first_iterations=20)


def _instance(seed: int):
    rng = np.random.default_rng(seed)
    net = random_network(rng, (3, 5, 4, 3), "relu")
    x = rng.uniform(0.3, 0.7, size=3)
    label = int(net.predict(x))
    target = (label + 1 + int(rng.integers(0, 2))) % 3
    eps = float(rng.uniform(0.05, 0.3))
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    return net, lo, hi, label, target


def _agrees_with_enumeration(seed: int, offset: float, bab_settings: BabSettings) -> None:
    """relu_bab against the exact minimum, with a threshold ``offset`` away from it: sound on both sides,
    complete below a positive minimum (the network is small)."""
    net, lo, hi, label, target = _instance(seed)
    exact = relu_enumeration_min_margin(net, lo, hi, label, target)
    threshold = exact + offset
    result = relu_bab(net, lo, hi, symbolic_bounds(net, lo, hi), label, target, time_limit=20.0,
                      settings=bab_settings, threshold=threshold)
    assert result.lower <= exact + 1e-9  # a proven bound never exceeds the true minimum
    if result.status == VERIFIED:
        assert exact > threshold and result.lower > threshold
    if result.status == FALSIFIED:
        y = net.forward(result.x)
        assert np.all(result.x >= lo) and np.all(result.x <= hi)
        assert y[label] - y[target] < 0 and exact < 0
    if offset < 0 and exact > 0:
        # complete on a network this small: a threshold below a positive minimum is proven
        assert result.status == VERIFIED


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), offset=st.sampled_from([-0.05, -1e-3, 1e-3, 0.05]))
def test_verdicts_and_bounds_agree_with_enumeration(seed, offset):
    _agrees_with_enumeration(seed, offset, SMALL)


def test_a_negative_minimum_is_never_verified_and_usually_falsified():
    falsified = 0
    for seed in range(30):
        net, lo, hi, label, target = _instance(seed)
        exact = relu_enumeration_min_margin(net, lo, hi, label, target)
        if exact >= 0:
            continue
        result = relu_bab(net, lo, hi, symbolic_bounds(net, lo, hi), label, target, time_limit=20.0, settings=SMALL)
        assert result.status != VERIFIED
        falsified += result.status == FALSIFIED
    assert falsified >= 1


def test_time_limit_gives_unknown_with_a_sound_bound():
    rng = np.random.default_rng(3)
    net = random_network(rng, (10, 40, 40, 10), "relu")
    x = rng.uniform(0.3, 0.7, size=10)
    label = int(net.predict(x))
    target = (label + 1) % 10
    lo, hi = np.clip(x - 0.3, 0, 1), np.clip(x + 0.3, 0, 1)
    result = relu_bab(net, lo, hi, symbolic_bounds(net, lo, hi), label, target, time_limit=0.0, settings=SMALL)
    samples = rng.uniform(lo, hi, size=(2000, 10))
    y = net.forward(samples)
    assert result.status in (UNKNOWN, FALSIFIED, VERIFIED)
    assert result.lower <= float(np.min(y[:, label] - y[:, target])) + 1e-9


def test_smooth_activations_are_refused():
    rng = np.random.default_rng(0)
    net = random_network(rng, (3, 4, 3), "gelu")
    lo, hi = np.zeros(3), np.ones(3)
    with pytest.raises(InvalidInputError, match="ReLU"):
        relu_bab(net, lo, hi, symbolic_bounds(net, lo, hi), 0, 1, time_limit=1.0)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000))
def test_verdicts_agree_with_the_exact_mip_on_wider_networks(seed):
    """32 hidden ReLUs (too many to enumerate): the MIP's bracket of the minimum margin is the oracle."""
    from polycert.formulations.robustness import minimum_margin

    eps = 0.15
    net, x, label, target, lo, hi = relu_margin_instance(np.random.default_rng(seed), (6, 16, 16, 3), eps)
    mip_lower, mip_upper, _ = minimum_margin(net, x, label, target, eps, tolerance=1e-6)
    bounds = symbolic_bounds(net, lo, hi)
    for threshold in (mip_lower - 0.02, mip_upper + 0.02):
        result = relu_bab(net, lo, hi, bounds, label, target, time_limit=30.0, settings=SMALL, threshold=threshold)
        assert result.lower <= mip_upper + 1e-7
        if result.status == VERIFIED:
            assert threshold < mip_upper
        if result.status == FALSIFIED:
            y = net.forward(result.x)
            assert y[label] - y[target] < 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_optimised_bounds_contain_every_sampled_pre_activation_and_never_loosen(seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng, (5, 20, 20, 20, 4), "relu")
    x = rng.uniform(0.2, 0.8, size=5)
    lo, hi = np.clip(x - 0.25, 0, 1), np.clip(x + 0.25, 0, 1)
    given_bounds = symbolic_bounds(net, lo, hi)
    tight = optimised_bounds(net, lo, hi, given_bounds, iterations=10)
    samples = np.vstack([rng.uniform(lo, hi, size=(3000, 5)), np.where(rng.random((500, 5)) < 0.5, lo, hi)])
    a = samples
    for layer, old, new in zip(net.layers, given_bounds, tight):
        z = layer.pre_activation(a)
        assert np.all(z >= new.lower) and np.all(z <= new.upper)
        assert np.all(new.lower >= old.lower - 1e-12) and np.all(new.upper <= old.upper + 1e-12)
        a = layer.activation(z)


def _split_instance(seed: int):
    """A random 3-hidden-layer net, a box, its symbolic bounds, the margin problem and random splits of the
    unstable neurons of the first two hidden layers: (net, lo, hi, bounds, problem, unstable, splits)."""
    import torch

    from polycert.formulations.relu_bab import _Problem

    rng = np.random.default_rng(seed)
    net = random_network(rng, (4, 12, 12, 12, 3), "relu")
    x = rng.uniform(0.3, 0.7, size=4)
    lo, hi = np.clip(x - 0.3, 0, 1), np.clip(x + 0.3, 0, 1)
    bounds = symbolic_bounds(net, lo, hi)
    problem = _Problem.margin(net, bounds, lo, hi, 0, 1)
    unstable = [np.flatnonzero((b.lower < 0) & (b.upper > 0)) for b in bounds[:-1]]
    splits = [torch.tensor(rng.choice([-1.0, 0.0, 1.0], size=(1, n), p=[0.3, 0.4, 0.3]) if i < 2 else np.zeros((1, n)),
                           dtype=torch.float64) for i, n in enumerate(problem.n_unstable)]
    return net, lo, hi, bounds, problem, unstable, splits


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_domain_bounds_contain_every_sampled_pre_activation_that_meets_the_splits(seed):
    from polycert.formulations.relu_bab import _domain_bounds

    net, lo, hi, bounds, problem, unstable, splits = _split_instance(seed)
    lowers, uppers = _domain_bounds(problem, splits, [l[None] for l in problem.lower],
                                    [u[None] for u in problem.upper], 1)
    rng = np.random.default_rng(seed + 1)
    a = np.vstack([rng.uniform(lo, hi, size=(20000, 4)), np.where(rng.random((2000, 4)) < 0.5, lo, hi)])
    zs, meets = [], np.ones(len(a), dtype=bool)
    for i, layer in enumerate(net.hidden_layers):
        z = layer.pre_activation(a)
        zs.append(z[:, unstable[i]])
        s = splits[i][0].numpy()
        meets &= np.all((s == 0) | ((s > 0) & (zs[-1] >= 0)) | ((s < 0) & (zs[-1] <= 0)), axis=1)
        a = layer.activation(z)
    for i in range(len(zs)):
        lower, upper = lowers[i][0].numpy(), uppers[i][0].numpy()
        assert np.all(lower >= problem.lower[i].numpy()) and np.all(upper <= problem.upper[i].numpy())  # never loosen
        assert np.all(zs[i][meets] >= lower) and np.all(zs[i][meets] <= upper)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000), data=st.data())
def test_split_betas_start_each_child_at_its_parents_bound(seed, data):
    """For a neuron whose coefficient is >= 0, the start beta makes the child's bound its parent's, exactly."""
    import torch

    from polycert.formulations.relu_bab import _split_betas

    net, lo, hi, bounds, problem, unstable, splits = _split_instance(seed)
    n = problem.total_unstable
    rng = np.random.default_rng(seed + 2)
    flat = torch.cat(splits, dim=1)
    alphas = torch.tensor(rng.uniform(0, 1, size=(1, n)))
    betas = torch.tensor(rng.uniform(0, 0.5, size=(1, n))) * (flat != 0)
    value, _, layers = problem.bound(problem.per_layer(flat), problem.per_layer(alphas), problem.per_layer(betas),
                                     scores=True)
    coefs = torch.cat([a for _, a in layers], dim=1)
    candidates = np.flatnonzero(((flat[0] == 0) & (coefs[0] >= 0)).numpy())
    if candidates.size == 0:
        return
    j = int(data.draw(st.sampled_from(candidates.tolist())))
    for side in (1.0, -1.0):
        child = flat.clone()
        child[0, j] = side
        start = _split_betas(betas, torch.tensor([0]), torch.tensor([j]), coefs, alphas, torch.tensor([side]))
        child_value, _, _ = problem.bound(problem.per_layer(child), problem.per_layer(alphas),
                                          problem.per_layer(start))
        assert float(child_value[0]) == pytest.approx(float(value[0]), abs=1e-9)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), offset=st.sampled_from([-0.05, -1e-3, 1e-3, 0.05]))
def test_verdicts_with_domain_bounds_agree_with_enumeration(seed, offset):
    _agrees_with_enumeration(seed, offset, BabSettings(batch=16, iterations=8, first_iterations=20, domain_bounds=True))


@pytest.mark.parametrize("seed", [14812, 8066])
def test_a_fully_split_domain_the_polish_leaves_short_is_closed_by_its_exact_lp(seed):
    # hypothesis found both: every unstable neuron split, the polished Lagrangian bound 0.01-0.03 short of
    # the exact minimum (14812: two leaves that are empty polytopes, which gradient steps never close)
    net, lo, hi, label, target = _instance(seed)
    exact = relu_enumeration_min_margin(net, lo, hi, label, target)
    result = relu_bab(net, lo, hi, symbolic_bounds(net, lo, hi), label, target, time_limit=20.0, settings=SMALL,
                      threshold=exact - 1e-3)
    assert result.status == VERIFIED and exact - 1e-3 < result.lower <= exact + 1e-9


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), data=st.data())
def test_the_leaf_lp_bounds_the_margin_on_its_domain_and_proves_only_empty_domains_empty(seed, data):
    import torch

    from polycert.formulations.relu_bab import _leaf_lp, _Problem

    net, lo, hi, label, target = _instance(seed)
    bounds = symbolic_bounds(net, lo, hi)
    problem = _Problem.margin(net, bounds, lo, hi, label, target)
    if problem.total_unstable == 0:
        return
    splits = np.array(data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=problem.total_unstable,
                                         max_size=problem.total_unstable)))
    lower, point = _leaf_lp(net, problem, torch.tensor(splits), lo, hi, label, target)
    # the domain, sampled: points of the box whose unstable neurons have the split's signs
    xs = np.random.default_rng(seed).uniform(lo, hi, size=(4000, len(lo)))
    inside = np.ones(len(xs), dtype=bool)
    h = xs
    for i, layer in enumerate(net.hidden_layers):
        z = h @ np.asarray(layer.weight).T + layer.bias
        side = splits[problem.offsets[i]:problem.offsets[i + 1]]
        inside &= np.all(side * z[:, problem.unstable_index[i]] >= 0, axis=1)
        h = np.maximum(z, 0.0)
    y = net.forward(xs)
    margins = y[:, label] - y[:, target]
    if inside.any():
        assert lower <= margins[inside].min() + 1e-9  # sound on the domain
        assert np.isfinite(lower)  # a non-empty domain has an optimal LP, hence a finite bound
    if point is not None:
        assert np.all(point >= lo - 1e-9) and np.all(point <= hi + 1e-9)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), offset=st.sampled_from([-0.05, -1e-3, 1e-3, 0.05]))
def test_a_search_resumed_round_by_round_ends_as_one_run(seed, offset):
    """The search is deterministic: slices of one round each reach one run's verdict, bound and domain count."""
    net, lo, hi, label, target = _instance(seed)
    exact = relu_enumeration_min_margin(net, lo, hi, label, target)
    bab_settings = BabSettings(batch=4, iterations=8, first_iterations=20)
    bounds = symbolic_bounds(net, lo, hi)
    once = relu_bab(net, lo, hi, bounds, label, target, time_limit=60.0, settings=bab_settings, threshold=exact + offset)
    search = BabSearch(net, lo, hi, bounds, label, target, settings=bab_settings, threshold=exact + offset)
    for _ in range(10_000):
        sliced = search.run(60.0, rounds=1)
        if search.finished:
            break
        assert sliced.status == UNKNOWN and sliced.lower <= exact + 1e-9
    assert search.finished and not search.heap
    assert (sliced.status, sliced.lower, sliced.domains, sliced.rounds) == (once.status, once.lower, once.domains,
                                                                            once.rounds)
    if sliced.status == FALSIFIED:
        np.testing.assert_array_equal(sliced.x, once.x)


def _reference_step(a, s, alpha, beta, lower, upper):
    """One ReLU layer of beta-CROWN's back-substitution (Wang et al. 2021, eq. 5) written out neuron class by neuron
    class, as the engine first had it: the oracle of the precomputed :func:`formulations.relu_bab._relu_back`.
    Returns the coefficients on ``z`` and the intercepts, not summed."""
    import torch

    lu = torch.where(s > 0, torch.clamp(lower, min=0.0), lower)
    uu = torch.where(s < 0, torch.clamp(upper, max=0.0), upper)
    on, off = lu >= 0, uu <= 0
    open_ = ~on & ~off
    slope = uu / (uu - lu).clamp(min=torch.finfo(a.dtype).tiny)
    relaxed = torch.where(a >= 0, a * alpha.clamp(0.0, 1.0), a * slope)
    c_u = torch.where(on, a, torch.where(off, torch.zeros_like(a), relaxed)) - s * beta.clamp(min=0.0)
    return c_u, torch.where(open_ & (a < 0), a * (-slope * lu), torch.zeros_like(a))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), zero_rows=st.integers(0, 3))
def test_the_optimisers_bound_has_the_reference_steps_value_and_gradient_also_where_a_coefficient_is_zero(seed, zero_rows):
    """``_Problem.bound`` (precomputed relaxation, :func:`_relu_back`) against the one-step reference
    the one-step reference ``_reference_step``, value and gradient in alpha and beta. Zeroed output weights make coefficients exactly 0 on
    open neurons, where a subgradient that mixed the two lines (clamp's) steered the optimiser wrongly."""
    import torch

    from polycert.formulations.relu_bab import _Problem

    from polycert.formulations.network import Network

    rng = np.random.default_rng(seed)
    base = random_network(rng, (4, 8, 8, 3), "relu")
    weights = [np.array(layer.weight) for layer in base.layers]
    for w in weights[1:]:  # a neuron with no outgoing weight has coefficient 0 on every path
        w[:, rng.choice(w.shape[1], zero_rows, replace=False)] = 0.0
    net = Network.from_arrays(weights, [np.array(layer.bias) for layer in base.layers], "relu")
    x = rng.uniform(0.3, 0.7, size=4)
    lo, hi = np.clip(x - 0.4, 0, 1), np.clip(x + 0.4, 0, 1)
    problem = _Problem.margin(net, symbolic_bounds(net, lo, hi), lo, hi, 0, 1)
    n, D = problem.total_unstable, 12
    splits = torch.as_tensor(rng.integers(-1, 2, (D, n)) * (rng.uniform(size=(D, n)) < 0.3), dtype=torch.float64)
    alphas = torch.as_tensor(rng.choice([0.0, 0.3, 1.0], (D, n)), dtype=torch.float64).requires_grad_(True)
    betas = torch.as_tensor(rng.choice([0.0, 0.2], (D, n)), dtype=torch.float64).requires_grad_(True)

    def reference():
        lam, const = problem.w_out.expand(D, -1), problem.b_out.expand(D).clone()
        for i in range(len(problem.W_u) - 1, -1, -1):
            a, active = lam[:, :problem.n_unstable[i]], lam[:, problem.n_unstable[i]:]
            c_u, intercept = _reference_step(a, problem.per_layer(splits)[i], problem.per_layer(alphas)[i],
                                             problem.per_layer(betas)[i], problem.lower[i], problem.upper[i])
            const = const + intercept.sum(dim=1) + c_u @ problem.b_u[i] + active @ problem.b_a[i]
            lam = c_u @ problem.W_u[i] + active @ problem.W_a[i]
        return const + lam @ problem.mid - lam.abs() @ problem.rad

    expected = reference()
    value, _, _ = problem.bound(problem.per_layer(splits), problem.per_layer(alphas), problem.per_layer(betas))
    assert torch.allclose(value, expected, rtol=0, atol=1e-12)
    for got, want in zip(torch.autograd.grad(value.sum(), [alphas, betas]),
                         torch.autograd.grad(expected.sum(), [alphas, betas])):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_one_relaxed_layer_matches_the_reference_step_in_value_and_in_every_gradient_also_at_zero_coefficients(seed):
    """:func:`_relu_back` on :func:`_relaxation` against the one-step reference ``_reference_step``, with coefficients ``a`` that are exactly
    0 in places (as the search meets them): the gradient in ``a`` (what flows to the later layers' parameters)
    must be the reference's subgradient there, not a mix of the two lines."""
    import torch

    from polycert.formulations.relu_bab import _relaxation, _relu_back

    rng = np.random.default_rng(seed)
    D, n = 6, 10
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    lower, upper = t(rng.uniform(-2, 1, n)), None
    upper = lower + t(rng.uniform(0.1, 3, n))
    s = t(rng.integers(-1, 2, (D, n)) * (rng.uniform(size=(D, n)) < 0.4))
    a = t(rng.normal(size=(D, n)) * (rng.uniform(size=(D, n)) < 0.7)).requires_grad_(True)  # ~30 % exact zeros
    alpha = t(rng.choice([0.0, 0.5, 1.0], (D, n))).requires_grad_(True)
    beta = t(rng.choice([0.0, 0.4], (D, n))).requires_grad_(True)
    c_u, intercept = _relu_back(a, s, alpha, beta, _relaxation(s, lower, upper))
    ref_c_u, ref_intercept = _reference_step(a, s, alpha, beta, lower, upper)
    assert torch.equal(c_u, ref_c_u) and torch.allclose(intercept, ref_intercept.sum(dim=1), rtol=0, atol=1e-12)
    w = t(rng.normal(size=(D, n)))  # any downstream use of both outputs
    ours = torch.autograd.grad((c_u * w).sum() + intercept.sum(), [a, alpha, beta])
    reference = torch.autograd.grad((ref_c_u * w).sum() + ref_intercept.sum(), [a, alpha, beta])
    for got, want in zip(ours, reference):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
