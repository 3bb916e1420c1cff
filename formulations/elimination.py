"""Stable-neuron elimination: a ReLU network's first layers as a MIP over its inputs and unstable neurons only.

Tjeng, Xiao & Tedrake (ICLR 2019, §4.2) drop the binary of a stable ReLU; here it loses its variables too. A
stably inactive neuron (``u <= 0``) outputs 0; a stably active one (``l >= 0``) outputs its pre-activation, an
affine function of the layer before. Composing these maps, the pre-activations of layer ``i`` are an affine
function ``z_i = M_i v + c_i`` of ``v`` = (the inputs, the variables of the unstable neurons of layers ``< i``):
a stable neuron needs no variable and no row. Each unstable neuron ``j`` of layer ``i`` gets its
pre-activation ``z_j in [l_j, u_j]`` with the row ``z_j = M_i[j] v + c_i[j]``, its output ``a_j in [0, u_j]``
and, with its binary ``d_j`` (eq. (5) of the paper),

    a_j >= z_j,    a_j <= z_j - l_j (1 - d_j),    a_j <= u_j d_j;

in LP mode ``d_j`` is relaxed, which is the triangle ``a_j <= u_j (z_j - l_j) / (u_j - l_j)`` (Ehlers 2017).

Why: the intermediate-bound MIPs of :mod:`formulations.tightening` on mnist_fc 256x4 and 256x6 keep 130-300
of the 784 + 1,024 neurons before a layer; with every neuron a variable the model has 2-4k columns (over
Gurobi's size-limited licence, 2,000), without the stable ones 1,000-1,700. The rows ``z_j = ...`` are
dense over the inputs (``M_i`` composes the active neurons' weights), which is what a solver would make of
the substitution anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .bounds import LayerBounds, unstable
from .encoding import LP, MIP, pair_rows, encode_input_set
from .errors import InvalidInputError
from .input_sets import InputSet
from .model import INF, ConstraintTag, Model, VariableTag
from .network import Network

Array = np.ndarray


@dataclass
class PrefixEncoding:
    """``inputs``: the input variables; ``maps[i] = (M_i, c_i)``: layer ``i``'s pre-activations as an affine
    function of the model's variables (``M_i`` has a column per variable of the finished model);
    ``unstable[i]``: the neurons of layer ``i`` that have variables, ``pre[i]`` their pre-activations ``z``,
    ``post[i]`` their outputs ``a``,
    ``binaries[i]`` their binaries ``d`` (none in LP mode)."""

    model: Model
    inputs: Array
    maps: list[tuple[Array, Array]]
    unstable: list[Array]
    pre: list[Array]
    post: list[Array]
    binaries: list[Array]

    def pre_activation(self, layer: int, neuron: int) -> tuple[Array, float]:
        """``z = coefficients @ v + constant`` for one neuron: an objective for :meth:`Model.set_objective`."""
        M, c = self.maps[layer]
        return M[neuron], float(c[neuron])


def encode_prefix(model: Model, network: Network, input_set: InputSet, bounds: Sequence[LayerBounds], layer: int, *,
                  mode: str = MIP) -> PrefixEncoding:
    """Encode layers ``0..layer-1`` (ReLU) of ``network`` over ``input_set`` with their stable neurons eliminated,
    and the affine map of layer ``layer``'s pre-activations (module docstring).

    Args:
        bounds: sound pre-activation bounds of layers ``0..layer-1`` at least; they decide which neurons are
            stable and give the big-M constants.
        layer: the layer whose pre-activations are to be optimised (``maps[layer]``).
        mode: ``"mip"`` (big-M with binaries) or ``"lp"`` (their relaxation, the triangle).
    """
    if mode not in (LP, MIP):
        raise InvalidInputError(f"mode must be 'lp' or 'mip', got {mode!r}")
    if not 0 <= layer < len(network.layers) or len(bounds) < layer:
        raise InvalidInputError(f"layer {layer} of a network of {len(network.layers)} layers "
                                f"with {len(bounds)} layer bounds")
    for i in range(layer):
        if network.layers[i].activation.name not in ("relu", "identity"):
            raise InvalidInputError(f"stable-neuron elimination encodes ReLU layers; layer {i} is "
                                    f"{network.layers[i].activation.name!r}")
    x = encode_input_set(model, input_set)
    # the previous layer's outputs h = H v + h0 over the variables so far (dense: a few hundred by ~1,000)
    H = np.zeros((x.size, model.num_variables))
    H[np.arange(x.size), x] = 1.0
    h0 = np.zeros(x.size)
    maps, unstables, pre, post, binaries = [], [], [], [], []
    for i in range(layer + 1):
        W, b = network.layers[i].weight, network.layers[i].bias
        M, c = W @ H, W @ h0 + b
        maps.append((M, c))
        if i == layer:
            break
        if network.layers[i].activation.name == "identity":
            H, h0 = M, c
            for kept in (unstables, pre, post, binaries):
                kept.append(np.zeros(0, dtype=np.int64))
            continue
        l, u = bounds[i].lower, bounds[i].upper
        unst = unstable(bounds[i])
        lu, uu = l[unst], u[unst]
        # z gets a variable and one dense row; the ReLU's rows are then over (a, z, d) only: half the nonzeros of
        # writing z out in each of them, and Gurobi's nodes twice as fast (256x4, layer 1)
        z = model.add_variables(unst.size, lu, uu, tags=[VariableTag("pre", i, int(j)) for j in unst])
        model.add_constraints(np.hstack([np.eye(unst.size), -M[unst]]), np.concatenate([z, np.arange(M.shape[1])]),
                              c[unst], c[unst], tags=[ConstraintTag("affine", i, int(j)) for j in unst])
        a = model.add_variables(unst.size, 0.0, uu, tags=[VariableTag("post", i, int(j)) for j in unst])
        ones = np.ones(unst.size)
        d = np.zeros(0, dtype=np.int64)
        # a >= z
        pair_rows(model, np.column_stack([a, z]), np.column_stack([ones, -ones]), 0.0, INF,
                   [ConstraintTag("relu_lower", i, int(j)) for j in unst])
        if mode == MIP:
            d = model.add_variables(unst.size, 0.0, 1.0, integer=True,
                                    tags=[VariableTag("binary", i, int(j)) for j in unst])
            # a <= z - l (1 - d)  <=>  a - z - l d <= -l
            pair_rows(model, np.column_stack([a, z, d]), np.column_stack([ones, -ones, -lu]), -INF, -lu,
                       [ConstraintTag("relu_upper", i, int(j), 0) for j in unst])
            # a <= u d
            pair_rows(model, np.column_stack([a, d]), np.column_stack([ones, -uu]), -INF, 0.0,
                       [ConstraintTag("relu_upper", i, int(j), 1) for j in unst])
        else:
            s = uu / (uu - lu)  # the triangle: a <= s (z - l)
            pair_rows(model, np.column_stack([a, z]), np.column_stack([ones, -s]), -INF, -s * lu,
                       [ConstraintTag("relu_upper", i, int(j), 0) for j in unst])
        # the next layer's inputs: active neurons pass z on, unstable ones are their a, inactive ones are 0
        active = l >= 0.0
        H = np.zeros((W.shape[0], model.num_variables))
        H[:, : M.shape[1]] = np.where(active[:, None], M, 0.0)
        H[unst, a] = 1.0
        h0 = np.where(active, c, 0.0)
        unstables.append(unst)
        pre.append(z)
        post.append(a)
        binaries.append(d)
    n = model.num_variables
    maps = [(np.hstack([M, np.zeros((M.shape[0], n - M.shape[1]))]), c) for M, c in maps]
    return PrefixEncoding(model, x, maps, unstables, pre, post, binaries)
