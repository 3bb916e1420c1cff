"""Projected gradient descent on the margin (Madry et al., ICLR 2018), batched, in NumPy float64.

For each input ``c_i`` with label ``y_i`` and each target class ``k``, PGD minimises the margin
``m_k(x) = f(x)[y_i] - f(x)[k]`` over the input set ``S_i = {||x - c_i||_p <= eps_i} ∩ domain`` (the
targeted margin loss of Carlini & Wagner, S&P 2017). All trajectories — inputs × starts × targets — move
together as one (N, d) array: the forward pass keeps every pre-activation, the gradient is the chain rule
through the affine maps and the activations' analytic slopes (:attr:`Activation.slope`), and each step is
followed by a projection onto ``S_i`` (exact for L-inf; for L1/L2 onto the ball, then clipped —
:func:`formulations.input_sets.fast_project`; the final points get the exact one).

Steps: L-inf, ``x - α sign(g)``; L2, ``x - α g/||g||``; L1, ``α`` spread over the few coordinates with the
largest |g| (the steepest L1 descent, made less greedy as in SLIDE, Tramèr & Boneh 2019). Coordinates at a
domain face whose gradient points outward are ignored for L1/L2 steps (they would be undone by the
projection). The default step is ``α = 2.5 eps / steps`` (Madry et al.).

Starts: the centre (projected onto ``S_i``) and ``restarts`` random points of ``S_i``. With ``odi_steps``,
each random start first climbs ``w . f(x)`` for a random output direction ``w ~ U(-1, 1)^n_out``
(output-diversified initialisation, Tashiro et al., NeurIPS 2020): uniform starts in a high-dimensional box
all fall into the same basin of the margin, while the output-diversified ones spread out, and find the
narrow violations that plain restarts miss (VNN-COMP 256x6 prop_1_0.05). Each trajectory
keeps the best point it visited. The answer, per input, is the visited point with the smallest margin
over all targets; it is projected once more, checked with ``contains(tol=0)`` and its margins are
re-evaluated with :meth:`Network.forward` in float64 — only those numbers are returned, and
``found`` (margin <= 0) is therefore a checked counterexample, never a gradient artefact.
"""

from __future__ import annotations

from dataclasses import dataclass

import time

import numpy as np

from .bounds import check_labels
from .errors import InvalidInputError
from .input_sets import contains_points, fast_project, inner_boxes, project_points, sample_points, validate_balls
from .network import Network

Array = np.ndarray

# Trajectories x widest layer x 8 bytes kept per chunk (forward pass keeps every layer): ~128 MiB.
_CHUNK_BYTES = 128 * 2**20
# L1 steps move the top 5 % of coordinates (at least one).
_L1_FRACTION = 0.05


@dataclass(frozen=True, eq=False)
class AttackResult:
    """Per input: the best point found, its margin and whether it is a counterexample.

    ``per_target_margins[i, k]`` is the smallest ``f(x)[y_i] - f(x)[k]`` re-evaluated at any candidate
    point of input ``i``; ``+inf`` where ``k`` was not attacked (``k == y_i`` or ``k`` not in targets).
    ``margins[i]`` is the margin of ``points[i]`` over the attacked targets (= the row minimum).
    """

    points: Array
    margins: Array
    found: Array
    per_target_margins: Array

    @property
    def num_found(self) -> int:
        return int(self.found.sum())


def _check_targets(targets, n_out: int) -> Array:
    if targets is None:
        return np.arange(n_out)
    arr = np.unique(np.asarray(list(np.atleast_1d(targets))))
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"targets must be a non-empty list of class indices, got {targets!r}")
    if ((arr < 0) | (arr >= n_out)).any():
        raise InvalidInputError(f"target {int(arr[(arr < 0) | (arr >= n_out)][0])} is outside 0..{n_out - 1}")
    return arr.astype(np.int64)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def margin_and_gradient(network: Network, x: Array, spec: Array) -> tuple[Array, Array]:
    """``spec_i . f(x_i)`` and its gradient with respect to ``x_i``, for rows x (N, d), spec (N, n_out).

    Reverse-mode chain rule: ``g_z = g_a * f'(z)``, ``g_a_prev = g_z W``.
    """
    pre = []
    a = x
    for layer in network.layers:
        z = layer.pre_activation(a)
        pre.append(z)
        a = layer.activation.value(z)
    value = np.einsum("ij,ij->i", a, spec)
    g = spec
    for layer, z in zip(reversed(network.layers), reversed(pre)):
        if layer.activation.name != "identity":
            g = g * layer.activation.slope(z)
        g = g @ layer.weight
    return value, g


def _descent_direction(g: Array, x: Array, norm: str, dlo: Array, dhi: Array) -> Array:
    """A unit step (in the attack's norm) that decreases the margin to first order."""
    if norm == "linf":
        return -np.sign(g)
    # Moving along -g out of the domain is undone by the projection: drop those coordinates.
    blocked = ((x <= dlo) & (g > 0)) | ((x >= dhi) & (g < 0))
    g = np.where(blocked, 0.0, g)
    if norm == "l2":
        size = np.linalg.norm(g, axis=1, keepdims=True)
        return -g / np.where(size > 0, size, 1.0)
    d = g.shape[1]
    q = max(1, int(np.ceil(_L1_FRACTION * d)))
    magnitude = np.abs(g)
    kth = np.partition(magnitude, d - q, axis=1)[:, d - q][:, None]
    top = (magnitude >= kth) & (magnitude > 0)
    count = np.maximum(top.sum(axis=1, keepdims=True), 1)
    return -np.sign(g) * top / count


def _pgd(network: Network, starts: Array, centers: Array, eps: Array, spec: Array, norm: str,
         dlo: Array, dhi: Array, steps: int, alpha: Array, *, keep_best: bool = True,
         deadline: float | None = None) -> Array:
    """Run PGD on every row; return the best point each row visited (N, d), or the last one. At
    ``deadline`` (a ``time.monotonic()`` value) the steps stop where they are."""
    if norm == "linf":
        box_lo, box_hi = inner_boxes(centers, eps, dlo, dhi)  # the set itself, computed once

        def project(x: Array) -> Array:
            return np.minimum(np.maximum(x, box_lo), box_hi)
    else:
        def project(x: Array) -> Array:
            return fast_project(x, centers, eps, norm, dlo, dhi)
    x = starts
    best_x = x.copy()
    best = np.full(x.shape[0], np.inf)
    for step in range(steps + 1):
        value, g = margin_and_gradient(network, x, spec)
        better = value < best
        best = np.where(better, value, best)
        best_x[better] = x[better]
        if step == steps or (deadline is not None and time.monotonic() >= deadline):
            break
        x = project(x + alpha[:, None] * _descent_direction(g, x, norm, dlo, dhi))
    return best_x if keep_best else x


def pgd_attack(network: Network, centers: Array, labels, eps, *, norm: str = "linf", domain=(0.0, 1.0),
               steps: int = 50, restarts: int = 5, step_size: float | None = None, seed: int = 0,
               targets=None, odi_steps: int = 0, deadline: float | None = None) -> AttackResult:
    """Targeted PGD against every other class, for a batch of inputs (module docstring).

    Args:
        centers: (n, d) inputs (a single (d,) input is treated as n = 1).
        labels: (n,) true classes (or one int for all).
        eps: radius, a scalar or one per input.
        norm, domain: the input set, as in :class:`formulations.input_sets.InputSet`.
        steps, restarts: PGD steps per trajectory; random starts per input and target besides the centre.
        step_size: α in units of the input (default ``2.5 eps / steps`` per input).
        seed: the random starts come from ``numpy.random.default_rng(seed)``: same seed, same answer.
        targets: the classes to attack (default all); the label itself is always skipped.
        odi_steps: output-diversification steps for each random start (module docstring; 0: none).
        deadline: a ``time.monotonic()`` value at which the search stops and answers with the points it has
            (a query's time limit covers its attack too); the answer then depends on the machine's speed.

    Returns:
        :class:`AttackResult`; every point lies in its input set and every margin was re-evaluated with
        :meth:`Network.forward`.

    Raises:
        InvalidInputError: malformed centres, labels, eps, norm, domain, counts or targets.
    """
    try:
        centers = np.asarray(centers, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"centres are not numeric: {exc}") from None
    if centers.ndim == 1:
        centers = centers[None, :]
    centers, eps, norm, dlo, dhi = validate_balls(centers, eps, norm, domain)
    network.check_input(centers)
    n, d = centers.shape
    n_out = network.output_size
    labels = check_labels(labels, n, n_out)
    steps = _check_count("steps", steps, 0)
    restarts = _check_count("restarts", restarts, 0)
    odi_steps = _check_count("odi_steps", odi_steps, 0)
    if step_size is not None and not (np.isfinite(step_size) and step_size > 0):
        raise InvalidInputError(f"step_size must be a positive number, got {step_size!r}")
    attacked = _check_targets(targets, n_out)
    alpha_of = (lambda e: np.full_like(e, float(step_size))) if step_size is not None \
        else (lambda e: 2.5 * e / max(steps, 1))

    # All random starts are drawn up front, so chunking cannot change the answer.
    rng = np.random.default_rng(seed)
    random_starts = sample_points(centers, eps, norm, dlo, dhi, restarts, rng)  # (n, restarts, d)
    if odi_steps and restarts:
        directions = rng.uniform(-1.0, 1.0, size=(n * restarts, n_out))
        owners = np.repeat(np.arange(n), restarts)
        random_starts = _pgd(network, random_starts.reshape(n * restarts, d), centers[owners], eps[owners],
                             -directions, norm, dlo, dhi, odi_steps, eps[owners] / 4.0,
                             keep_best=False).reshape(n, restarts, d)
    center_starts = project_points(centers, centers, eps, norm, dlo, dhi)[:, None, :]
    starts = np.concatenate([center_starts, random_starts], axis=1)  # (n, S, d)
    n_starts = starts.shape[1]

    # Trajectories: (input, start, target) with target != label.
    ii, ss, kk = np.meshgrid(np.arange(n), np.arange(n_starts), attacked, indexing="ij")
    keep = kk != labels[ii]
    ii, ss, kk = ii[keep], ss[keep], kk[keep]

    eye = np.eye(n_out)
    candidates = np.empty((ii.size, d))
    per_chunk = max(1, int(_CHUNK_BYTES // (8 * max(network.sizes) * (len(network.layers) + 4))))
    for lo_i in range(0, ii.size, per_chunk):
        s = slice(lo_i, lo_i + per_chunk)
        i = ii[s]
        if deadline is not None and time.monotonic() >= deadline:
            candidates[s] = starts[i, ss[s]]  # not searched: the starts are points of the set all the same
            continue
        spec = eye[labels[i]] - eye[kk[s]]
        candidates[s] = _pgd(network, starts[i, ss[s]], centers[i], eps[i], spec, norm, dlo, dhi,
                             steps, alpha_of(eps[i]), deadline=deadline)

    # Re-check every candidate: in the set (exactly, after one more projection) and re-evaluated.
    owner = np.concatenate([ii, np.arange(n)])
    candidates = np.concatenate([candidates, center_starts[:, 0, :]])  # centres too, even with no target
    candidates = project_points(candidates, centers[owner], eps[owner], norm, dlo, dhi)
    inside = contains_points(candidates, centers[owner], eps[owner], norm, dlo, dhi, tol=0.0)
    candidates = candidates[inside]
    owner = owner[inside]
    logits = network.forward(candidates)
    rows = np.arange(owner.size)
    margins_all = logits[rows, labels[owner]][:, None] - logits  # (M, n_out)
    mask = np.zeros(n_out, dtype=bool)
    mask[attacked] = True
    margins_all = np.where(mask[None, :] & (np.arange(n_out)[None, :] != labels[owner][:, None]),
                           margins_all, np.inf)
    per_target = np.full((n, n_out), np.inf)
    np.minimum.at(per_target, owner, margins_all)
    point_margin = margins_all.min(axis=1)

    # Per input, the candidate with the smallest margin (first one on ties: deterministic).
    order = np.lexsort((point_margin, owner))
    first = np.ones(order.size, dtype=bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    chosen = order[first]
    points = np.empty((n, d))
    margins = np.full(n, np.inf)
    points[owner[chosen]] = candidates[chosen]
    margins[owner[chosen]] = point_margin[chosen]
    missing = np.setdiff1d(np.arange(n), owner[chosen])
    if missing.size:  # cannot happen (the projected centre passes contains); kept so points is never garbage
        raise AssertionError(f"no candidate inside the input set for inputs {missing.tolist()}")
    return AttackResult(points=points, margins=margins, found=margins <= 0.0, per_target_margins=per_target)
