"""Shared helpers of the engine's tests: random networks and an independent exact oracle."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog

from polycert.formulations import Network


def random_network(rng: np.random.Generator, sizes: tuple[int, ...], activation: str) -> Network:
    weights = [rng.normal(0, 1.0 / np.sqrt(a), size=(b, a)) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.normal(0, 0.3, size=b) for b in sizes[1:]]
    return Network.from_arrays(weights, biases, activation, name=f"random-{activation}")


def relu_margin_instance(rng: np.random.Generator, sizes: tuple[int, ...], eps: float):
    """A random ReLU network, an input in [0.3, 0.7]^d, its predicted label, the next class as target and the
    eps-box around the input clipped to [0, 1]: (net, x, label, target, lo, hi)."""
    net = random_network(rng, sizes, "relu")
    x = rng.uniform(0.3, 0.7, size=sizes[0])
    label = int(net.predict(x))
    target = (label + 1) % sizes[-1]
    return net, x, label, target, np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


def relu_enumeration_min_margin(net: Network, lo, hi, label: int, target: int) -> float:
    """Exact minimum margin by enumerating every activation pattern of a small ReLU network (LP per pattern)."""
    hidden = net.hidden_layers
    widths = [layer.n_out for layer in hidden]
    best = np.inf
    d = net.input_size
    for pattern in itertools.product([0, 1], repeat=sum(widths)):
        # affine map of the input on this region: a_i = D_i (W_i a_{i-1} + b_i)
        A, c = np.eye(d), np.zeros(d)
        rows, rhs = [], []
        offset = 0
        for layer, w in zip(hidden, widths):
            zA, zc = layer.weight @ A, layer.weight @ c + layer.bias
            on = np.array(pattern[offset:offset + w], dtype=bool)
            offset += w
            # on: z >= 0  ->  -zA x <= zc ; off: z <= 0 -> zA x <= -zc
            rows.append(np.where(on[:, None], -zA, zA))
            rhs.append(np.where(on, zc, -zc))
            A, c = zA * on[:, None], zc * on
        out = net.layers[-1]
        yA, yc = out.weight @ A, out.weight @ c + out.bias
        obj = yA[label] - yA[target]
        res = linprog(obj, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=list(zip(lo, hi)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + yc[label] - yc[target])
    return best
