"""The segment branch and bound's node loading: the LP must hold the node it is asked about, whatever was
written into it before (regression: load_node remembered what it had loaded by id(), so a layer written since
by the relaxation of another input, or arrays that reused a freed node's ids, were taken for loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from polycert.formulations.bounds import symbolic_bounds_batch
from polycert.formulations.envelope_lp import EnvelopeLP, Relaxations
from polycert.formulations.segment_bab import load_node, root_node

from .helpers import random_network


def test_a_node_loaded_again_after_another_relaxation_was_written_is_written_again():
    rng = np.random.default_rng(3)
    net = random_network(rng, (4, 5, 5, 3), "gelu")
    centres = rng.uniform(0.2, 0.8, size=(2, 4))
    lo, hi = np.clip(centres - 0.15, 0, 1), np.clip(centres + 0.15, 0, 1)
    env = EnvelopeLP(net, 3, None)
    rel = Relaxations(env, symbolic_bounds_batch(net, lo, hi))
    c = np.zeros(3)
    c[0], c[1] = 1.0, -1.0

    def fresh_bound(r: int) -> float:  # the same node in an LP of its own
        own = EnvelopeLP(net, 3, None)
        other = Relaxations(own, symbolic_bounds_batch(net, lo, hi))
        load_node(own, root_node(other, r), lo[r], hi[r])
        return own.minimize_outputs(c).dual_bound

    root = root_node(rel, 0)
    load_node(env, root, lo[0], hi[0])
    first = env.minimize_outputs(c).dual_bound
    rel.load(1, lo[1], hi[1])  # the relaxation of the other input written into the same LP (as the LP stage does)
    load_node(env, root, lo[0], hi[0])  # the very same arrays as before
    again = env.minimize_outputs(c).dual_bound
    # the same LP up to the solver's path from another basis (the bound is the safe one of either's duals)
    assert again == pytest.approx(first, abs=1e-9) and first == pytest.approx(fresh_bound(0), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_a_node_written_over_another_by_its_differing_neurons_is_the_node_loaded_fresh(seed):
    """load_node writes only the neurons in which a node differs from the one the LP holds; whatever the order
    of loads through a search, every node's bound is the bound of that node in an LP of its own."""
    from polycert.formulations.segment_bab import branch_neuron, split_nodes

    rng = np.random.default_rng(seed)
    net = random_network(rng, (4, 5, 5, 3), "gelu")
    centre = rng.uniform(0.2, 0.8, size=(1, 4))
    lo, hi = np.clip(centre - 0.2, 0, 1), np.clip(centre + 0.2, 0, 1)
    c = np.zeros(3)
    c[0], c[1] = 1.0, -1.0
    env = EnvelopeLP(net, 5, None)
    rel = Relaxations(env, symbolic_bounds_batch(net, lo, hi))
    nodes = [root_node(rel, 0)]
    for _ in range(12):  # a tree of splits, the deepest nodes last
        node = nodes[int(rng.integers(len(nodes)))]
        load_node(env, node, lo[0], hi[0])
        res = env.minimize_outputs(c)
        pick = None if res.primal is None else branch_neuron(env, node, res.primal)
        if pick is not None:
            nodes += split_nodes(env, [(node, pick, -np.inf)])
    for q in rng.permutation(len(nodes)):  # loaded in any order over one another
        load_node(env, nodes[q], lo[0], hi[0])
        held = env.minimize_outputs(c).dual_bound
        own = EnvelopeLP(net, 5, None)
        load_node(own, nodes[q], lo[0], hi[0])
        assert held == pytest.approx(own.minimize_outputs(c).dual_bound, abs=1e-7)
