"""The k-neuron relaxation (formulations.multi_neuron, formulations.klp, formulations.input_bab)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polycert.formulations.bounds import symbolic_bounds
from polycert.formulations.cascade import STAGES, CascadeSettings, certify_batch
from polycert.formulations.certificate import Verdict
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.input_bab import minimize_input_bab
from polycert.formulations.input_sets import InputSet
from polycert.formulations.klp import KLPSettings, build_klp
from polycert.formulations.model import Model, Sense
from polycert.formulations.multi_neuron import (branches, certify_facets, choose_groups, group_facets,
                                                octagon_directions, polytope_vertices, polytope_vertices_many)
from polycert.formulations.network import Layer, Network


def _square(r: float = 1.0, d: int = 2) -> InputSet:
    return InputSet(np.zeros(d), r, norm="linf", domain=(-r, r))


def _section2() -> Network:
    """Singh et al. 2019, §2: x3 = x1 + x2, x4 = x1 - x2, x5 = ReLU(x3), x6 = ReLU(x4), x7 = x5 + 2 x6."""
    return Network((Layer(np.array([[1.0, 1.0], [1.0, -1.0]]), np.zeros(2), "relu"),
                    Layer(np.array([[1.0, 2.0]]), np.zeros(1), "identity")), name="kpoly-section-2")


def _max_x7(net: Network, k_settings: KLPSettings | None, lp: bool) -> float:
    s = _square()
    lo, hi = s.box()
    bounds = symbolic_bounds(net, lo, hi)
    if lp:  # the single-neuron LP: the same builder with no groups
        k_settings = KLPSettings(k=2, max_groups=1, cluster=2)
        rel = build_klp(net, s, bounds, k_settings)
        rel_rows = rel.model.num_constraints
        del rel_rows
        from polycert.formulations.envelope_lp import EnvelopeLP, Relaxations
        from polycert.formulations.bounds import LayerBounds

        env = EnvelopeLP(net, 3, None)
        Relaxations(env, [LayerBounds(b.lower[None], b.upper[None]) for b in bounds]).load(0, lo, hi)
        return -env.minimize_outputs(np.array([-1.0])).dual_bound
    rel = build_klp(net, s, bounds, k_settings)
    return -rel.minimize_outputs(np.array([-1.0])).dual_bound


def test_section_2_single_neuron_lp_bounds_x7_by_5_and_2_relu_by_4():
    net = _section2()
    assert _max_x7(net, None, lp=True) == pytest.approx(5.0, abs=1e-4)
    assert _max_x7(net, KLPSettings(k=2), lp=False) == pytest.approx(4.0, abs=1e-4)


def test_section_2_property_x7_at_most_4_fails_with_lp_and_holds_with_klp():
    # logit 0 = 4.0 + 1e-3, logit 1 = x7: the margin 4.001 - x7 > 0 is the property x7 <= 4 (with a hair of room)
    net = Network((_section2().layers[0], Layer(np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([4.001, 0.0]),
                                                   "identity")), name="kpoly-section-2-property")
    quiet = CascadeSettings(attack_steps=0, strong_attack_steps=0)
    lp = certify_batch(net, np.zeros((1, 2)), [0], 1.0, method="lp", domain=(-1.0, 1.0), settings=quiet)[0]
    klp = certify_batch(net, np.zeros((1, 2)), [0], 1.0, method="klp", domain=(-1.0, 1.0), settings=quiet)[0]
    assert lp.verdict == Verdict.UNKNOWN and lp.lower == pytest.approx(-0.999, abs=1e-3)
    assert klp.verdict == Verdict.VERIFIED and klp.stage == "klp"
    # one hull facet: 2 y5 + 2 y6 - x3 - x4 <= 2, up to scale
    assert klp.extra["relaxation"] == {"kind": "k-neuron", "k": 2, "groups": [1], "facets": [1], "lp_solves": 4}


def test_figure_1_constraint_2y1_2y2_minus_x1_minus_x2_le_2_is_implied_by_the_hull():
    # Figure 1: x1, x2 in [-2, 2] with |x1 + x2| <= 2, |x1 - x2| <= 2 (the octagon of the input square)
    dirs = octagon_directions(2)
    fac = group_facets("relu", (0, 1), np.array([[-2.0, 2.0], [-2.0, 2.0]]), np.full(4, -2.0), np.full(4, 2.0))
    # max of 2 y1 + 2 y2 - x1 - x2 over the hull (facets + the octagon + ReLU's y >= 0, y >= x) by LP
    m = Model("figure-1")
    v = m.add_variables(4, -2.0, 2.0)  # x1, x2, y1, y2
    m.add_constraints(np.hstack([dirs, np.zeros((4, 2))]), v, -2.0, 2.0)
    m.add_constraints(np.hstack([fac.alpha, fac.beta]), v, -np.inf, fac.rhs)
    m.add_constraints(np.array([[0, 0, 1, 0], [0, 0, 0, 1], [-1, 0, 1, 0], [0, -1, 0, 1.0]]), v, 0.0, np.inf)
    m.set_objective(np.array([-1.0, -1.0, 2.0, 2.0]), sense=Sense.MAXIMIZE)
    from polycert.formulations.backends import solve

    res = solve(m, "highs")
    # implied up to the facets' outward margin (LINE_MARGIN on a unit normal, x sqrt(10) here), and attained
    assert res.dual_bound <= 2.0 + 1e-5
    assert res.dual_bound == pytest.approx(2.0, abs=1e-5)


def test_octagon_has_3_to_the_k_minus_1_over_2_directions_unit_first():
    for k in (2, 3):
        d = octagon_directions(k)
        assert d.shape == ((3 ** k - 1) // 2, k)
        assert np.array_equal(d[:k], np.eye(k))


def test_vertices_of_the_unit_square_are_its_four_corners():
    A = np.vstack([np.eye(2), -np.eye(2)])
    v = polytope_vertices(A, np.ones(4))
    assert sorted(map(tuple, v)) == [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)]
    assert polytope_vertices(A, np.array([1.0, 1.0, -2.0, 1.0])).shape[0] == 0  # x >= 2 and x <= 1: empty


def test_batched_vertices_are_each_polytopes_own():
    # one rows matrix, many right-hand sides (a group's branches): the same vertices as one polytope at a time
    rng = np.random.default_rng(3)
    for k in (2, 3):
        dirs = octagon_directions(k)
        A = np.vstack([dirs, -dirs, np.eye(k), -np.eye(k)])
        bs = np.column_stack([rng.uniform(0.5, 2.0, size=(6, 2 * dirs.shape[0])), rng.uniform(0.1, 1.0, size=(6, 2 * k))])
        bs[0, -2 * k:] = [-5.0] * k + [-5.0] * k  # an empty one: x_u <= -5 and x_u >= 5
        for b, many in zip(bs, polytope_vertices_many(A, bs)):
            one = polytope_vertices(A, b)
            assert sorted(map(tuple, one)) == sorted(map(tuple, np.unique(np.round(many, 12), axis=0)))
        assert polytope_vertices_many(A, bs)[0].shape == (0, k)


def test_a_shared_residual_cache_certifies_the_same_right_hand_sides():
    nb = np.array([[-1.5, 0.8], [-0.4, 2.0]])
    dirs = octagon_directions(2)
    lo = np.array([np.sum(np.where(d > 0, d * nb[:, 0], d * nb[:, 1])) for d in dirs]) + 0.05
    hi = np.array([np.sum(np.where(d > 0, d * nb[:, 1], d * nb[:, 0])) for d in dirs]) - 0.05
    bl = branches("gelu", dirs, lo, hi, nb, 5)
    rng = np.random.default_rng(0)
    alpha, beta = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    cache: dict = {}
    first = certify_facets("gelu", alpha, beta, bl, cache)
    assert cache and np.array_equal(first, certify_facets("gelu", alpha, beta, bl))
    assert np.array_equal(first, certify_facets("gelu", alpha, beta, bl, cache))  # read from the cache


def test_groups_overlap_within_clusters_of_the_largest_area_and_respect_the_cap():
    area = np.array([0.0, 5.0, 1.0, 3.0, 4.0, 2.0])
    groups = choose_groups(area, 2, cluster=3, max_groups=100)
    assert groups[:3] == [(1, 4), (1, 3), (3, 4)]  # the three largest, all pairs
    assert all(0 not in g for g in groups)  # a stable neuron is in no group
    assert len(choose_groups(area, 2, cluster=3, max_groups=2)) == 2


def test_objective_direction_cuts_keep_the_2_relu_bound_x7_le_4():
    # the cut -(W^T c) . y <= rhs for c = -1 (maximise x7) is 'y5 + 2 y6 <= 4' itself, certified over P
    net, s = _section2(), _square()
    lo, hi = s.box()
    rel = build_klp(net, s, symbolic_bounds(net, lo, hi), KLPSettings(k=2, objective_pieces=1),
                    output_directions=[np.array([-1.0])])
    assert -rel.minimize_outputs(np.array([-1.0])).dual_bound == pytest.approx(4.0, abs=1e-4)


def test_klp_settings_reject_k_outside_2_3():
    with pytest.raises(InvalidInputError):
        KLPSettings(k=4)
    assert KLPSettings().max_facets is None  # every certified facet unless capped
    with pytest.raises(InvalidInputError, match="max_facets"):
        KLPSettings(max_facets=0)
    with pytest.raises(InvalidInputError, match="klp_k"):
        CascadeSettings(klp_k=1)
    assert "klp" in STAGES and STAGES.index("lp") < STAGES.index("klp") < STAGES.index("mip")


def _barrier() -> Network:
    """1-D input in [-1, 1], two ReLU layers of width 2 (found by search): f >= 0 everywhere (min 0 at
    x = -5/13), but the k-LP with k = 2 = the width (each layer's full joint hull) only proves f >= -0.17."""
    return Network((Layer(np.array([[1.5], [-1.5]]), np.zeros(2), "relu"),
                    Layer(np.array([[1.0, -1.0], [1.0, -0.5]]), np.array([0.5, 0.0]), "relu"),
                    Layer(np.array([[1.5, -1.0]]), np.zeros(1), "identity")), name="barrier")


def test_barrier_full_layer_hulls_fail_and_input_partitioning_proves_f_above_minus_0_1():
    net, s = _barrier(), _square(1.0, 1)
    lo, hi = s.box()
    rel = build_klp(net, s, symbolic_bounds(net, lo, hi), KLPSettings(k=2))
    assert rel.groups == [[(0, 1)], [(0, 1)]]  # every layer's one group is the whole layer
    assert rel.minimize_outputs(np.array([1.0])).dual_bound < -0.15
    out = minimize_input_bab(net, lo, hi, np.array([1.0]), close_at=-0.1, stop_at=-np.inf, node_limit=50)
    assert out.lower > -0.1 and out.upper >= out.lower and out.nodes <= 50
    xs = np.linspace(-1, 1, 2001)[:, None]
    assert net.forward(xs).min() >= out.lower


def test_input_bab_closes_the_exact_minimum_on_a_low_dimensional_input():
    net, s = _barrier(), _square(1.0, 1)
    lo, hi = s.box()
    out = minimize_input_bab(net, lo, hi, np.array([1.0]), close_at=np.inf, stop_at=-np.inf, tolerance=1e-4,
                             node_limit=400)
    true = net.forward(np.linspace(-1, 1, 20001)[:, None]).min()
    assert out.lower <= true + 1e-9 and out.upper - out.lower <= 1e-4 + 1e-9


def test_input_bab_reports_the_node_limit_when_it_cannot_decide():
    net, s = _barrier(), _square(1.0, 1)
    lo, hi = s.box()
    out = minimize_input_bab(net, lo, hi, np.array([1.0]), close_at=0.01, stop_at=-np.inf, tolerance=0.0,
                             node_limit=3)
    assert out.termination.value == "node_limit" and out.nodes == 3


# -- property tests -----------------------------------------------------------------------------------

ACTIVATIONS = ["relu", "gelu", "sigmoid", "tanh", "silu"]


def _random_net(seed: int, act: str, d: int = 3, width: int = 3) -> Network:
    rng = np.random.default_rng(seed)
    return Network((Layer(rng.normal(size=(width, d)), rng.normal(size=width) * 0.3, act),
                    Layer(rng.normal(size=(width, width)) / 1.5, rng.normal(size=width) * 0.3, act),
                    Layer(rng.normal(size=(3, width)), rng.normal(size=3) * 0.1, "identity")), name=f"rand-{act}")


def _full_point(rel, net: Network, x: np.ndarray) -> np.ndarray:
    v = np.zeros(rel.model.num_variables)
    v[rel.inputs] = x
    a = x
    for i, layer in enumerate(net.layers):
        z = layer.weight @ a + layer.bias
        v[rel.pre[i]] = z
        a = layer.activation.value(z)
        if rel.post[i] is not None:
            v[rel.post[i]] = a
    return v


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), act=st.sampled_from(ACTIVATIONS), k=st.sampled_from([2, 3]),
       eps=st.sampled_from([0.1, 0.3, 1.0]))
def test_every_real_point_of_the_network_satisfies_every_k_neuron_facet(seed, act, k, eps):
    net = _random_net(seed, act)
    rng = np.random.default_rng(seed + 1)
    center = rng.uniform(-0.5, 0.5, size=3)
    s = InputSet(center, eps, norm="linf", domain=(-2.0, 2.0))
    lo, hi = s.box()
    directions = [rng.normal(size=3) for _ in range(2)]  # objective-direction cuts are certified rows too
    rel = build_klp(net, s, symbolic_bounds(net, lo, hi), KLPSettings(k=k, cluster=4, objective_pieces=3),
                    output_directions=directions)
    rows = np.array([r for r, t in enumerate(rel.model.constraint_tags) if t is not None and t.kind == "k_neuron"])
    matrix, upper = rel.model.matrix(), rel.model.row_upper
    xs = np.vstack([rng.uniform(lo, hi, size=(300, 3)), lo, hi, np.clip(center, lo, hi)])
    for x in xs:
        v = _full_point(rel, net, x)
        # the whole model (tightened bounds, envelopes, facets) holds at every real point
        assert rel.model.max_violation(v) <= 1e-9
        if rows.size:
            assert np.all(matrix[rows] @ v <= upper[rows] + 1e-12)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["relu", "gelu", "tanh"]))
def test_klp_bound_lies_between_the_lp_bound_and_the_exact_minimum(seed, act):
    net = _random_net(seed, act, d=2, width=3)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0.2, 0.8, size=(1, 2))
    labels = net.forward(xs).argmax(axis=1)
    # a stopped exact search still brackets: its upper bound is a margin the real network attains
    quiet = CascadeSettings(answer="bounds", query_time_limit=8.0)
    out = {m: certify_batch(net, xs, labels, 0.15, method=m, settings=quiet) for m in ("lp", "klp", "mip")}
    for lp, klp, mip in zip(out["lp"], out["klp"], out["mip"]):
        for t_lp, t_klp, t_mip in zip(lp.targets, klp.targets, mip.targets):
            assert t_lp.lower <= t_klp.lower + 1e-9
            assert t_klp.lower <= t_mip.upper + 1e-6  # never above a margin the real network attains
        assert klp.lower <= mip.upper + 1e-6


def test_a_klp_certificate_states_its_tight_set_pixels_lines_facets_and_regions():
    # polycert-tiny's test image 43 at eps 0.01: the single-neuron LP leaves it open, the k-LP proves it
    from polycert.datasets import load_preprocessed
    from polycert.zoo import load_builtin

    net = load_builtin("polycert-tiny")
    xs, ys = load_preprocessed(net.metadata["preprocessing"], "test")
    cert, = certify_batch(net, xs[43:44], ys[43:44], 0.01, method="klp", settings=CascadeSettings(answer="verdict"))
    assert cert.stage == "klp" and cert.verdict == Verdict.VERIFIED
    kinds = {t.kind for t in cert.tight}
    assert kinds & {"input_lower", "input_upper"} and "k_neuron" in kinds
    assert kinds & {"envelope_lower", "envelope_upper"}
    regions = [(t.layer, t.neuron) for t in cert.tight if t.kind == "region"]
    assert sorted(regions) == [(i, j) for i in range(2) for j in range(3)]  # every hidden neuron's region
    lp, = certify_batch(net, xs[43:44], ys[43:44], 0.01, method="lp", settings=CascadeSettings(answer="verdict"))
    assert lp.tight and not {t.kind for t in lp.tight} & {"k_neuron"}
