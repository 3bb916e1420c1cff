"""Branch and bound for smooth activations (GELU, sigmoid, tanh, SiLU) with optimised linear bounds, batched.

The ReLU search of :mod:`formulations.relu_bab` for networks whose hidden layers are smooth (Shi, Jin, Kolter,
Hsieh, Zhang, "Neural network verification with branch-and-bound for general nonlinearities", TACAS 2025:
GenBaB). The question is again whether ``m(x) = f(x)[label] - f(x)[target]`` stays above a threshold over a box.

A *domain* is the box with an interval ``[L_j, U_j]`` for every hidden neuron's pre-activation ``z_j`` (the
box-wide sound bounds, narrowed by splits). Its lower bound is CROWN's back-substitution (Zhang et al. 2018)
through one lower and one upper line per neuron, valid on the neuron's interval:

* the lines are *optimisable* (alpha-CROWN for general activations, Xu et al. 2021): the lower line is the tangent
  of the interval's convex hull (:func:`formulations.envelopes.hull_endpoint_slopes`) at a point
  ``p = t_l + theta (t_u - t_l)`` of the hull's curved part ``[t_l, t_u]``, ``theta in [0, 1]`` (where the hull is
  one line, the secant or a tangent-from-endpoint line, that line); the upper line likewise on the concave hull.
  For every theta the line supports the hull, so it is valid on the interval;
* beta: two multipliers ``beta_lo, beta_hi >= 0`` per neuron add ``beta_lo (L_j - z_j) + beta_hi (z_j - U_j)``
  to the objective, which is ``<= 0`` on the domain (beta-CROWN's split multipliers, Wang et al. 2021 eq. 5,
  for interval splits at any point);

Branching splits one neuron's interval at its midpoint, on the neuron whose relaxation costs the bound most:
``|a_j|`` times the vertical gap between the line used and the graph, at the interval's ends and midpoint (the
BaBSR-style score of GenBaB's §3.2 with the gap of the line in use). The two children cover the parent.

Soundness (design.md): the search (float32 by default) only *chooses* theta and beta. A domain is closed only by a
float64 bound (:func:`_confirm`) whose lines are re-certified on the domain's intervals exactly as the envelopes
are (:func:`formulations.envelopes.certify_intercepts`: the residual's exact extremes, moved outward by
``LINE_MARGIN``), with any beta ``>= 0`` (weak duality), and only when :func:`formulations.refinement.sound_lower`
of it is above the threshold. Every domain's bound minimiser (a box corner) is evaluated on the real network:
a negative margin there is a counterexample. A domain that stays open when its neurons' intervals are too narrow
to split, or any open domain at the time or domain limit, leaves the answer *unknown*; the cascade
(:func:`formulations.cascade._smooth_stage`, stage ``bab``) then hands the target on to the LP and to stage 4 (segment
branch and bound, then the exact piecewise MIP with refinement), which keep the method complete. Not yet done: sending
the search's small open domains to that MIP one by one (the fallback is per target, from the box), and re-deriving a
domain's later-layer intervals after a split (beta-CROWN's per-domain intermediate bounds).

Measured (hypothesis instances of ``tests/formulations/test_smooth_bab.py``, 3-5-4-3 nets): a threshold 0.02 below the
exact minimum closes in 1-107 domains; 0.005 below it stayed open after 15 s (~10k domains) on 6 of 33 instances:
the last thousandths are the exact MIP's.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .activations import get_activation
from .bounds import LayerBounds
from .envelopes import LINE_MARGIN, LOWER, UPPER, certify_intercepts, hull_endpoint_slopes
from .errors import InvalidInputError
from .network import Network
from .refinement import sound_lower
from .relu_bab import FALSIFIED, UNKNOWN, VERIFIED, BabResult, _flushing_subnormals

if TYPE_CHECKING:
    import torch

Array = np.ndarray
#: The activations this search bounds (identity layers pass through exactly).
SMOOTH = ("gelu", "sigmoid", "tanh", "silu")
#: A neuron whose interval is narrower than this is not split again (its lines are within ~width^2 of the graph).
MIN_WIDTH = 1e-6
#: Rows of the hull data of a domain: (t_l, t_u, s0, x0) of the lower side, then of the upper side.
_HULL_ROWS = 8
#: Bytes an open domain holds per hidden neuron: L, U (float64), 8 hull rows, 2 thetas, 2 betas, a score (float32).
_DOMAIN_BYTES = 2 * 8 + (_HULL_ROWS + 2 + 2 + 1) * 4


@dataclass(frozen=True)
class SmoothBabSettings:
    """``batch``: domains split per round; ``iterations``: optimiser steps per round's children
    (``first_iterations`` for the root); ``lr_theta``, ``lr_beta``: Adam step sizes; ``max_domains``: open domains
    kept before giving up (None: as many as ``memory`` bytes hold, a domain holding about 68 bytes per hidden neuron;
    on 784-100-100-10 GELU image 15 at eps 0.02 the search's open bound went -0.45 -> -0.11 in 60 s and 20k open
    domains, the old fixed limit); ``float32_search``: bound the
    domains in float32 and re-bound in float64, with certified lines, every domain that would close."""

    batch: int = 256
    iterations: int = 10
    first_iterations: int = 50
    lr_theta: float = 0.1
    lr_beta: float = 0.05
    max_domains: int | None = None
    memory: float = 2e9
    float32_search: bool = True


def supports(network: Network) -> bool:
    """Whether every hidden layer is smooth (:data:`SMOOTH`) or identity, with at least one smooth one."""
    names = [layer.activation.name for layer in network.hidden_layers]
    return all(n in SMOOTH or n == "identity" for n in names) and any(n in SMOOTH for n in names)


# -- the activations in torch (the search's and the float64 bound's slopes; intercepts are certified in NumPy) --

def _torch_fns(name: str):
    """(value, slope) of an activation as torch functions."""
    import torch

    if name == "gelu":
        inv_sqrt2, inv_sqrt_2pi = 1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0 * math.pi)
        return (lambda z: 0.5 * z * (1.0 + torch.special.erf(z * inv_sqrt2)),
                lambda z: 0.5 * (1.0 + torch.special.erf(z * inv_sqrt2)) + z * inv_sqrt_2pi * torch.exp(-0.5 * z * z))
    if name == "sigmoid":
        return torch.sigmoid, lambda z: torch.sigmoid(z) * (1.0 - torch.sigmoid(z))
    if name == "tanh":
        return torch.tanh, lambda z: 1.0 - torch.tanh(z) ** 2
    if name == "silu":
        return (lambda z: z * torch.sigmoid(z),
                lambda z: torch.sigmoid(z) * (1.0 + z * (1.0 - torch.sigmoid(z))))
    if name == "identity":
        return (lambda z: z), (lambda z: torch.ones_like(z))
    raise InvalidInputError(f"smooth branch and bound does not bound {name!r}")


def hull_data(name: str, lower: Array, upper: Array) -> Array:
    """The tangent families of each interval: (8, m) rows ``t_l, t_u, s0, x0`` for the lower side, then the upper.

    On a side, ``[t_l, t_u]`` is the curved part of the hull (convex hull below, concave above:
    :func:`formulations.envelopes.hull_endpoint_slopes`), where the family is the tangent at ``p in [t_l, t_u]``;
    where ``t_l >= t_u`` the hull is one line, slope ``s0`` through ``(x0, f(x0))``. Identity: the line ``z``."""
    lower = np.asarray(lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(upper, dtype=np.float64).reshape(-1)
    out = np.zeros((_HULL_ROWS, lower.size))
    if name == "identity" or lower.size == 0:
        out[2] = out[6] = 1.0
        return out
    for j, side in enumerate((LOWER, UPPER)):
        s_l, t_l, _, t_u = hull_endpoint_slopes(get_activation(name), lower, upper, side)
        out[4 * j:4 * j + 4] = t_l, t_u, s_l, lower
    return out


@dataclass
class _Layer:
    weight: "torch.Tensor"
    bias: "torch.Tensor"
    name: str
    start: int  # offset of the layer's neurons in a domain's rows
    stop: int
    value: object
    slope: object


class _Problem:
    """Back-substitution of ``w_out . h_last + b_out`` through hidden layers, as torch tensors of one dtype:
    ``w_out`` one row (a margin: every domain bounds the same function) or one row per domain (the optimised
    intermediate bounds of :func:`optimised_bounds`: one neuron side each)."""

    def __init__(self, hidden: Sequence, lo: Array, hi: Array, w_out: Array, b_out, dtype) -> None:
        import torch

        self.torch, self.dtype = torch, dtype
        t = lambda a: torch.tensor(np.ascontiguousarray(a, dtype=np.float64), dtype=dtype)  # noqa: E731
        self.layers: list[_Layer] = []
        start = 0
        for layer in hidden:
            value, slope = _torch_fns(layer.activation.name)
            self.layers.append(_Layer(t(layer.weight), t(layer.bias), layer.activation.name, start,
                                      start + layer.n_out, value, slope))
            start += layer.n_out
        self.n = start
        self.w_out, self.b_out = t(w_out), t(b_out)
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self.lo, self.hi, self.mid, self.rad = t(lo), t(hi), t((lo + hi) / 2), t((hi - lo) / 2)

    @classmethod
    def margin(cls, network: Network, lo: Array, hi: Array, label: int, target: int, dtype) -> "_Problem":
        """``f(x)[label] - f(x)[target]``: the last layer folded with ``e_label - e_target``."""
        last = network.layers[-1]
        return cls(network.hidden_layers, lo, hi, last.weight[label] - last.weight[target],
                   float(last.bias[label] - last.bias[target]), dtype)

    def lines(self, hull, theta):
        """Per layer the lines ``(s_lo, c_lo, s_up, c_up)`` (each (D, n_i)) at the parameters ``theta`` (D, 2, N):
        tangents of the hull at ``p = t_l + clamp(theta) (t_u - t_l)``, or the hull's single line. Not certified:
        the search's lines; :func:`_confirm` certifies the intercepts of the same slopes."""
        torch = self.torch
        out = []
        for lay in self.layers:
            sl = slice(lay.start, lay.stop)
            sides = []
            for j in range(2):
                t_l, t_u, s0, x0 = (hull[:, 4 * j + r, sl] for r in range(4))
                curved = t_u > t_l
                p = t_l + theta[:, j, sl].clamp(0.0, 1.0) * (t_u - t_l)
                x = torch.where(curved, p, x0)
                s = torch.where(curved, lay.slope(p), s0)
                sides += [s, lay.value(x) - s * x]
            out.append(tuple(sides))
        return out

    def bound(self, lines, lower, upper, betas, *, scores: bool = False, points: bool = False):
        """Lower bounds of the margin for a batch of domains: (D,) values, with ``points`` the (D, d) minimisers
        over the box, with ``scores`` each neuron's branching score (D, N). ``lower``, ``upper``: (D, N) the
        domains' intervals; ``betas`` (D, 2, N), clamped to ``>= 0`` here."""
        torch = self.torch
        D = lower.shape[0]
        lam = self.w_out.expand(D, -1) if self.w_out.ndim == 1 else self.w_out
        const = self.b_out.expand(D).clone() if self.b_out.ndim == 0 else self.b_out.clone()
        beta = betas.clamp(min=0.0)
        score_parts = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            lay = self.layers[i]
            sl = slice(lay.start, lay.stop)
            s_lo, c_lo, s_up, c_up = lines[i]
            pos = lam >= 0
            b_lo, b_hi = beta[:, 0, sl], beta[:, 1, sl]
            L, U = lower[:, sl], upper[:, sl]
            c_z = torch.where(pos, lam * s_lo, lam * s_up) + b_hi - b_lo
            const = const + torch.where(pos, lam * c_lo, lam * c_up).sum(-1) + (b_lo * L - b_hi * U).sum(-1)
            if scores:
                score_parts[i] = _scores(lay, lam.detach(), lines[i], L, U)
            const = const + c_z @ lay.bias
            lam = c_z @ lay.weight
        value = const + lam @ self.mid - lam.abs() @ self.rad
        x_star = torch.where(lam >= 0, self.lo, self.hi).detach() if points else None
        return value, x_star, (torch.cat(score_parts, dim=1) if scores else None)


def _scores(lay: _Layer, lam, lines, L, U):
    """Branching score of each neuron: ``|a|`` times the largest gap, at the interval's ends and midpoint, between
    the graph and the line that ``a``'s sign selects; -1 where the neuron is not split (identity, too narrow)."""
    import torch

    s_lo, c_lo, s_up, c_up = (v.detach() for v in lines)
    gap = torch.zeros_like(L)
    for z in (L, U, 0.5 * (L + U)):
        f = lay.value(z)
        gap = torch.maximum(gap, torch.where(lam >= 0, lam * (f - s_lo * z - c_lo), -lam * (s_up * z + c_up - f)))
    ok = (U - L > MIN_WIDTH) & (lay.name != "identity")
    return torch.where(ok, gap, torch.full_like(gap, -1.0))


def _optimise(problem: _Problem, hull, lower, upper, theta, betas, iterations: int, settings: SmoothBabSettings):
    """Adam ascent on the sum of the batch's bounds over theta and beta. Returns the best bound seen per domain
    (search precision), the last step's minimisers and scores, and the parameters of the best bounds."""
    torch = problem.torch
    dt = problem.dtype
    hull, lower, upper = hull.to(dt), lower.to(dt), upper.to(dt)
    theta = theta.to(dt).clone().requires_grad_(True)
    betas = betas.to(dt).clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [theta], "lr": settings.lr_theta},
                            {"params": [betas], "lr": settings.lr_beta}])
    best = best_theta = best_betas = None
    for step in range(iterations + 1):
        last = step == iterations
        with torch.set_grad_enabled(not last):
            value, x_star, scores = problem.bound(problem.lines(hull, theta), lower, upper, betas,
                                                  scores=last, points=last)
        v = value.detach()
        if best is None:
            best, best_theta, best_betas = v.clone(), theta.detach().clone(), betas.detach().clone()
        else:
            better = v > best
            best = torch.where(better, v, best)
            best_theta = torch.where(better[:, None, None], theta.detach(), best_theta)
            best_betas = torch.where(better[:, None, None], betas.detach(), best_betas)
        if last:
            break
        opt.zero_grad()
        (-value.sum()).backward()
        opt.step()
    return best, x_star, scores, best_theta.clamp(0.0, 1.0), best_betas.clamp(min=0.0)


def certified_lines(name: str, s_lo: Array, s_up: Array, lower: Array, upper: Array) -> tuple[Array, ...]:
    """Lines of the given slopes certified on [lower, upper] (:func:`formulations.envelopes.certify_intercepts`,
    with ``LINE_MARGIN``): ``(s_lo, c_lo, s_up, c_up)``; a slope that cannot be certified becomes the constant line
    of the exact image (always valid). Identity: the line ``z`` itself, exact."""
    if name == "identity":
        return np.ones_like(lower), np.zeros_like(lower), np.ones_like(lower), np.zeros_like(lower)
    act = get_activation(name)
    c_lo = certify_intercepts(act, s_lo, np.zeros_like(s_lo), lower, upper, LOWER, LINE_MARGIN)
    c_up = certify_intercepts(act, s_up, np.zeros_like(s_up), lower, upper, UPPER, LINE_MARGIN)
    f_min, f_max = act.image(lower, upper)
    bad_lo, bad_up = ~(np.isfinite(c_lo) & np.isfinite(s_lo)), ~(np.isfinite(c_up) & np.isfinite(s_up))
    return (np.where(bad_lo, 0.0, s_lo), np.where(bad_lo, f_min - LINE_MARGIN, c_lo),
            np.where(bad_up, 0.0, s_up), np.where(bad_up, f_max + LINE_MARGIN, c_up))


def _confirm(problem: _Problem, hull, lower, upper, theta, betas) -> Array:
    """Float64 bounds of domains at the given parameters, on lines certified on the domains' own intervals:
    sound whatever theta and beta are (``problem`` is the float64 one)."""
    torch = problem.torch
    f64 = torch.float64
    lower, upper = lower.to(f64), upper.to(f64)
    with torch.no_grad():
        search_lines = problem.lines(hull.to(f64), theta.to(f64))
        lines = []
        for lay, (s_lo, _, s_up, _) in zip(problem.layers, search_lines):
            sl = slice(lay.start, lay.stop)
            parts = certified_lines(lay.name, s_lo.numpy(), s_up.numpy(), lower[:, sl].numpy(), upper[:, sl].numpy())
            lines.append(tuple(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float64)) for p in parts))
        value, _, _ = problem.bound(lines, lower, upper, betas.to(f64))
    return value.numpy()


class SmoothBabSearch:
    """A resumable branch and bound for one margin over a box (module docstring), with the interface of
    :class:`formulations.relu_bab.BabSearch`: the root is bounded on construction, :meth:`run` searches for some
    seconds and may be called again; ``result`` holds the state (``verified`` / ``falsified`` final; ``unknown``
    final when ``finished``: the domain limit, or a domain with nothing left to split)."""

    def __init__(self, network: Network, lo: Array, hi: Array, bounds: Sequence[LayerBounds], label: int,
                 target: int, *, settings: SmoothBabSettings | None = None, threshold: float = 0.0) -> None:
        import torch

        started = time.monotonic()
        if not supports(network):
            names = [layer.activation.name for layer in network.hidden_layers]
            raise InvalidInputError(f"smooth branch and bound needs smooth hidden layers {SMOOTH}; got {names}")
        if len(bounds) < len(network.hidden_layers):
            raise InvalidInputError(f"{len(bounds)} layer bounds for {len(network.hidden_layers)} hidden layers")
        self.settings = settings = settings or SmoothBabSettings()
        self.network, self.label, self.target, self.threshold = network, label, target, float(threshold)
        self.lo, self.hi = lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self.problem = _Problem.margin(network, lo, hi, label, target, torch.float64)
        self.search = _Problem.margin(network, lo, hi, label, target, torch.float32) if settings.float32_search \
            else self.problem
        hidden = network.hidden_layers
        L0 = np.concatenate([np.asarray(b.lower, dtype=np.float64).reshape(-1) for b in bounds[:len(hidden)]])
        U0 = np.concatenate([np.asarray(b.upper, dtype=np.float64).reshape(-1) for b in bounds[:len(hidden)]])
        if not (np.all(np.isfinite(L0)) and np.all(np.isfinite(U0)) and np.all(L0 <= U0)):
            raise InvalidInputError("smooth branch and bound needs finite, non-empty pre-activation bounds")
        n = L0.size
        self.max_domains = settings.max_domains if settings.max_domains is not None else \
            int(min(1_000_000, max(1_000, settings.memory // (_DOMAIN_BYTES * n))))
        self.result = BabResult(UNKNOWN, -np.inf, domains=1)
        self.result.stats.update(unconfirmed=0, confirmed=0, upper=np.inf)
        self._final = False
        self.proven = np.inf
        self.counter = itertools.count()
        self.heap: list = []
        lower, upper = torch.from_numpy(L0[None, :].copy()), torch.from_numpy(U0[None, :].copy())
        hull = torch.from_numpy(self._hull(lower.numpy(), upper.numpy()))
        theta = torch.full((1, 2, n), 0.5, dtype=torch.float64)
        betas = torch.zeros((1, 2, n), dtype=torch.float64)
        with _flushing_subnormals():
            value, x_star, scores, theta, betas = _optimise(self.problem, hull, lower, upper, theta, betas,
                                                            settings.first_iterations, settings)
            self.root = sound_lower(float(_confirm(self.problem, hull, lower, upper, theta, betas)[0]))
        self.result.lower = self.root
        if self._check_points(x_star.numpy()):
            pass
        elif self.root > self.threshold:
            self.proven = self.root
            self._finish(VERIFIED)
        else:
            self._push(float(value[0]), lower[0], upper[0], hull[0], theta[0], betas[0], scores[0])
        self.result.seconds = time.monotonic() - started

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._final

    def _hull(self, lower: Array, upper: Array) -> Array:
        return _hull_rows(self.problem, lower, upper)

    def _margin_at(self, x: Array) -> Array:
        y = self.network.forward(np.clip(x, self.lo, self.hi))
        return y[:, self.label] - y[:, self.target]

    def _check_points(self, points: Array) -> bool:
        """Evaluate minimisers on the real network; a negative margin ends the search (falsified)."""
        m = self._margin_at(points)
        j = int(np.argmin(m))
        if m[j] < self.result.stats["upper"]:
            self.result.stats["upper"], self.result.stats["point"] = float(m[j]), np.clip(points[j], self.lo, self.hi)
        if m[j] < 0:
            self._finish(FALSIFIED, x=np.clip(points[j], self.lo, self.hi))
            return True
        return False

    def _finish(self, status: str, *, x: Array | None = None, reason: str | None = None) -> None:
        self.result.status, self.result.x, self._final = status, x, True
        if reason is not None:
            self.result.stats["reason"] = reason
        if status == VERIFIED:
            self.result.lower = self.proven
        self.heap = []

    def _push(self, key, lower, upper, hull, theta, betas, scores) -> None:
        heapq.heappush(self.heap, (key, next(self.counter), lower.double(), upper.double(), hull.float(),
                                   theta.float(), betas.float(), scores.float()))

    # -- the search -----------------------------------------------------------------------------------------------
    def run(self, time_limit: float) -> BabResult:
        """Search for at most ``time_limit`` more seconds (checked between rounds); returns :attr:`result`.
        ``lower`` is a proven lower bound of the margin over the box in every case."""
        started = time.monotonic()
        try:
            if not self.finished:
                with _flushing_subnormals():
                    self._search(started, time_limit)
        finally:
            self.result.seconds += time.monotonic() - started
        return self.result

    def _search(self, started: float, time_limit: float) -> None:
        import torch

        settings, result, heap = self.settings, self.result, self.heap
        while heap:
            if time.monotonic() - started > time_limit or len(heap) > self.max_domains:
                result.lower = min(self.proven, self.root)
                result.stats.update(open_bound=heap[0][0], open=len(heap), reason="time limit")
                if len(heap) > self.max_domains:
                    self._finish(UNKNOWN, reason="domain limit")
                return
            result.rounds += 1
            parents = [heapq.heappop(heap) for _ in range(min(settings.batch, len(heap)))]
            keys = np.array([p[0] for p in parents])
            p_lower, p_upper = torch.stack([p[2] for p in parents]), torch.stack([p[3] for p in parents])
            p_hull = torch.stack([p[4] for p in parents]).double()
            p_theta, p_betas = torch.stack([p[5] for p in parents]), torch.stack([p[6] for p in parents])
            p_scores = torch.stack([p[7] for p in parents])
            best, branch = p_scores.max(dim=1)
            if bool((best < 0).any()):
                # a domain whose every neuron is too narrow to split stayed open: the exact MIP's job
                result.lower = min(self.proven, self.root)
                result.stats.update(open=len(heap) + len(parents))
                self._finish(UNKNOWN, reason="a domain too narrow to split stayed undecided")
                return
            rows = torch.arange(len(parents))
            cut = 0.5 * (p_lower[rows, branch] + p_upper[rows, branch])
            left_upper, right_lower = p_upper.clone(), p_lower.clone()
            left_upper[rows, branch] = cut
            right_lower[rows, branch] = cut
            lower = torch.cat([p_lower, right_lower])
            upper = torch.cat([left_upper, p_upper])
            hull = torch.cat([p_hull, p_hull])
            idx = torch.cat([branch, branch])
            all_rows = torch.arange(2 * len(parents))
            hull[all_rows, :, idx] = torch.from_numpy(self._column_hull(lower[all_rows, idx].numpy(),
                                                                        upper[all_rows, idx].numpy(), idx.numpy()))
            theta, betas = torch.cat([p_theta, p_theta]), torch.cat([p_betas, p_betas])
            value, x_star, scores, theta, betas = _optimise(self.search, hull, lower, upper, theta, betas,
                                                            settings.iterations, settings)
            result.domains += int(value.shape[0])
            if self._check_points(x_star.double().numpy()):
                return
            if result.stats["upper"] <= self.threshold:
                # the real network attains the threshold: no proof above it exists, more search cannot help
                result.lower = min(self.proven, self.root)
                self._finish(UNKNOWN, reason="a margin at or below the threshold is attained")
                return
            values = value.double().numpy()
            closing = np.flatnonzero([sound_lower(float(v)) > self.threshold for v in values])
            if closing.size:
                sel = torch.as_tensor(closing)
                values[closing] = _confirm(self.problem, hull[sel], lower[sel], upper[sel], theta[sel], betas[sel])
                result.stats["confirmed"] += int(closing.size)
            sound = np.array([sound_lower(float(v)) for v in values])
            result.stats["unconfirmed"] += int((sound[closing] <= self.threshold).sum())
            c_keys = np.concatenate([keys, keys])
            closed = set(closing[sound[closing] > self.threshold].tolist())
            for d in range(values.shape[0]):
                if d in closed:
                    self.proven = min(self.proven, sound[d])
                    continue
                key = max(float(value[d]), float(c_keys[d]))  # a child lies in its parent: a key, never a proof
                self._push(key, lower[d], upper[d], hull[d], theta[d], betas[d], scores[d])
        self._finish(VERIFIED)

    def _column_hull(self, lower: Array, upper: Array, neuron: Array) -> Array:
        """(m, 8) hull data of one neuron per row (``neuron`` its index in the rows), grouped by layer."""
        out = np.zeros((lower.size, _HULL_ROWS))
        for lay in self.problem.layers:
            rows = np.flatnonzero((neuron >= lay.start) & (neuron < lay.stop))
            if rows.size:
                out[rows] = hull_data(lay.name, lower[rows], upper[rows]).T
        return out


def optimised_bounds(network: Network, lo: Array, hi: Array, bounds: Sequence[LayerBounds], *, iterations: int = 20,
                     deadline: float | None = None, settings: SmoothBabSettings | None = None) -> list[LayerBounds]:
    """Optimised pre-activation bounds of the hidden layers of a smooth network, layer by layer (alpha-CROWN for
    general activations: Xu et al. 2021, §3.1; GenBaB §3.1).

    For hidden layer ``k >= 1`` (layer 0's are exact on a box), the lower bound of ``z_j`` and of ``-z_j`` through
    layers ``0..k-1`` with their own optimised tangent points (one theta per neuron side and row, beta 0), then
    re-bounded in float64 on certified lines (:func:`_confirm`), moved outward by :func:`sound_lower`'s slack and
    intersected with the bounds given: bounds only tighten, and each is sound whatever the optimiser found. The
    returned list has the given bounds' length (layers past the hidden ones are kept as given). ``deadline``
    (``time.monotonic()``) stops between layers."""
    import torch

    settings = settings or SmoothBabSettings()
    hidden = network.hidden_layers
    current = [LayerBounds(np.asarray(b.lower, dtype=np.float64).copy(), np.asarray(b.upper, dtype=np.float64).copy())
               for b in bounds]
    for k in range(1, len(hidden)):
        if deadline is not None and time.monotonic() >= deadline:
            break
        layer = hidden[k]
        w_out = np.vstack([layer.weight, -layer.weight])
        b_out = np.concatenate([layer.bias, -layer.bias])
        problem = _Problem(hidden[:k], lo, hi, w_out, b_out, torch.float64)
        rows = w_out.shape[0]
        L = np.concatenate([current[i].lower for i in range(k)])
        U = np.concatenate([current[i].upper for i in range(k)])
        lower = torch.from_numpy(np.repeat(L[None, :], rows, axis=0))
        upper = torch.from_numpy(np.repeat(U[None, :], rows, axis=0))
        hull = torch.from_numpy(_hull_rows(problem, L[None, :], U[None, :])).expand(rows, -1, -1)
        theta = torch.full((rows, 2, problem.n), 0.5, dtype=torch.float64)
        betas = torch.zeros((rows, 2, problem.n), dtype=torch.float64)
        with _flushing_subnormals():
            _, _, _, theta, betas = _optimise(problem, hull, lower, upper, theta, betas, iterations, settings)
            value = _confirm(problem, hull, lower, upper, theta, betas)
        n_k = layer.n_out
        lows = np.array([sound_lower(v) for v in value[:n_k]])
        highs = np.array([-sound_lower(v) for v in value[n_k:]])
        new_lo = np.maximum(current[k].lower, lows)
        new_hi = np.minimum(current[k].upper, highs)
        if np.any(new_lo > new_hi):
            break  # cannot happen for a non-empty box; keep the given bounds rather than an empty interval
        current[k] = LayerBounds(new_lo, new_hi)
    return current


def _hull_rows(problem: _Problem, lower: Array, upper: Array) -> Array:
    """(D, 8, N) hull data of the domains' intervals (D, N), layer by layer."""
    out = np.zeros((lower.shape[0], _HULL_ROWS, lower.shape[1]))
    for lay in problem.layers:
        sl = slice(lay.start, lay.stop)
        data = hull_data(lay.name, lower[:, sl], upper[:, sl])  # (8, D * n_i), rows of the domains in order
        out[:, :, sl] = data.reshape(_HULL_ROWS, lower.shape[0], lay.stop - lay.start).transpose(1, 0, 2)
    return out


def smooth_bab(network: Network, lo: Array, hi: Array, bounds: Sequence[LayerBounds], label: int, target: int, *,
               time_limit: float, settings: SmoothBabSettings | None = None, threshold: float = 0.0) -> BabResult:
    """Prove ``f(x)[label] - f(x)[target] > threshold`` on the box ``[lo, hi]`` of a smooth network, or find a point
    where the margin is negative, by branch and bound over interval splits (module docstring).

    Args:
        network: hidden layers GELU, sigmoid, tanh, SiLU (or identity), last layer affine.
        bounds: sound pre-activation bounds of every hidden layer over the box.
        time_limit: seconds (the root is always bounded); on expiry the answer is ``unknown``.

    Returns:
        A :class:`formulations.relu_bab.BabResult`: ``verified`` only when every domain's float64 certified bound
        is above ``threshold``; ``falsified`` only with a point of the box whose real margin is negative;
        ``lower`` a proven lower bound of the margin over the box in every case; ``stats['upper']`` the smallest
        real margin seen (at ``stats['point']``).
    """
    started = time.monotonic()
    search = SmoothBabSearch(network, lo, hi, bounds, label, target, settings=settings, threshold=threshold)
    return search.run(max(0.0, time_limit - (time.monotonic() - started)))
