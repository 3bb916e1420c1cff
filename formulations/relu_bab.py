"""Branch and bound over ReLU splits with optimised linear bounds (alpha-CROWN / beta-CROWN), batched.

The question is whether the margin ``m(x) = c^T f(x)`` (``c = e_label - e_target``) stays positive over a
box. A *domain* is the box together with sign constraints on some unstable ReLUs (``z_j >= 0``: active,
``z_j <= 0``: inactive). Its lower bound is CROWN's back-substitution (Zhang et al. 2018) through the
ReLU relaxation, with

* alpha: the slope of each unstable neuron's lower line ``h >= alpha z``, ``alpha in [0, 1]``, optimised by
  gradient ascent (Xu et al., "Fast and complete", ICLR 2021: alpha-CROWN);
* beta: a Lagrange multiplier ``beta >= 0`` per split, adding ``-s beta z_j`` to the objective, where ``s``
  is +1 for ``z_j >= 0`` and -1 for ``z_j <= 0`` (Wang et al., "Beta-CROWN", NeurIPS 2021, eq. 5). On the
  domain ``-s beta z_j <= 0``, so the objective stays below the margin and the bound stays sound.

Every choice of alpha in [0, 1] and beta >= 0 gives a valid bound (weak duality): the optimiser only
chooses *which* valid bound, so it needs no care for soundness. What it needs are sound pre-activation
bounds for the whole box (the caller's: symbolic or LP-tightened), which a split only narrows
(``l <- max(l, 0)`` for an active split, ``u <- min(u, 0)`` for an inactive one).

Branching: on the unstable unsplit neuron whose relaxation costs the bound most, measured from the
back-substitution coefficients (the intercept score of BaBSR, Bunel et al. 2020). The domains with the
lowest bounds are split first, a batch at a time. Each bound's minimiser over the box (a box corner) is
evaluated on the real network: a negative margin there is a counterexample.

Numbers: the root, the alpha-CROWN intermediate bounds and every proof are float64; a domain counts as
verified only when :func:`formulations.refinement.sound_lower` of its float64 bound is positive (the slack
dwarfs float64's rounding on these sizes), the same rule as for a solver's dual bound. The search itself
(the optimiser's steps over batches of domains) runs in float32 by default: it only *chooses* alpha and
beta, which give a valid bound whatever they are, and a domain closes only after its bound is recomputed
in float64 at those parameters (:func:`_confirm`).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .bounds import LayerBounds
from .errors import InvalidInputError
from .network import Network
from .refinement import sound_lower

if TYPE_CHECKING:  # torch is imported where it is used: the engine loads without it
    import torch

Array = np.ndarray
VERIFIED, FALSIFIED, UNKNOWN = "verified", "falsified", "unknown"
#: Optimiser steps (and their geometric step-size decay) for a domain with every unstable neuron split.
POLISH_ITERATIONS, POLISH_DECAY = 300, 0.98


@dataclass(frozen=True)
class BabSettings:
    """``batch``: domains split per round (each makes two); ``iterations``: optimiser steps for a round's
    children (``first_iterations`` for the root); ``lr_alpha``, ``lr_beta``: Adam step sizes;
    ``max_domains``: open domains kept before giving up (memory); ``float32_search``: bound the domains in
    float32 (about twice the throughput) and re-bound in float64 every domain that would close;
    ``domain_bounds``: after a split, re-derive each child's pre-activation bounds of the layers after the split
    layer (:func:`_domain_bounds`) instead of keeping the box-wide ones; ``parent_keys``: order the open domains by
    the better of their own and their parent's bound; ``beta_init``: start a new split's beta where the child
    keeps its parent's bound (:func:`_split_betas`). ``beta_init`` is off: with it, hypothesis found a fully split
    domain whose polish stopped short of its exact bound (a completeness failure, seed 8066 of
    ``test_verdicts_and_bounds_agree_with_enumeration``), and on 256x4 it was neutral (153k -> 144k and
    15.5k -> 17.1k domains)."""

    batch: int = 512
    iterations: int = 10
    first_iterations: int = 60
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    max_domains: int = 400_000
    float32_search: bool = True
    domain_bounds: bool = False
    parent_keys: bool = True
    beta_init: bool = False


@dataclass
class BabResult:
    """``status`` verified / falsified / unknown; ``lower`` the proven lower bound of the margin over the box
    (the smallest open domain's, or the root's); ``x`` a point whose real margin is negative (falsified);
    ``domains`` bounded in all; ``seconds``."""

    status: str
    lower: float
    x: Array | None = None
    domains: int = 0
    seconds: float = 0.0
    rounds: int = 0
    stats: dict = field(default_factory=dict)


class _Problem:
    """Linear lower bounds of ``w_out . h_last + b_out`` through ReLU hidden layers ``(W_i, b_i)`` with
    box-wide pre-activation bounds, as torch tensors. ``w_out`` is one row (a margin: every domain bounds
    the same function) or one row per domain (alpha-CROWN's intermediate bounds: one neuron side each).

    Layout: a stably inactive neuron (``u <= 0``) outputs 0 on the whole box, so it is dropped from its layer
    and from the next layer's inputs; the others are ordered unstable first, then stably active (an identity
    layer is all active). Every product below then runs over the neurons that matter, and the unstable
    block is a slice rather than a gather."""

    def __init__(self, hidden: Sequence, bounds: Sequence[LayerBounds], lo: Array, hi: Array, w_out: Array,
                 b_out: Array | float, *, dtype: "torch.dtype | None" = None) -> None:
        import torch

        self.torch = torch
        self.dtype = dtype or torch.float64
        t = lambda a: torch.tensor(np.ascontiguousarray(a, dtype=np.float64), dtype=self.dtype)  # noqa: E731
        self.W_u, self.W_a, self.b_u, self.b_a, self.lower, self.upper = [], [], [], [], [], []
        self.n_unstable, self.unstable_index, self.active_index = [], [], []
        previous = np.arange(len(lo))  # the inputs, all kept, in order
        for i, layer in enumerate(hidden):
            if layer.activation.name == "identity":
                unstable, active = np.zeros(0, dtype=int), np.arange(layer.n_out)
            else:
                lower, upper = np.asarray(bounds[i].lower), np.asarray(bounds[i].upper)
                unstable = np.flatnonzero((lower < 0) & (upper > 0))
                active = np.flatnonzero(lower >= 0)
            weight = np.asarray(layer.weight)[:, previous]
            self.W_u.append(t(weight[unstable]))
            self.W_a.append(t(weight[active]))
            self.b_u.append(t(layer.bias[unstable]))
            self.b_a.append(t(layer.bias[active]))
            self.lower.append(t(np.asarray(bounds[i].lower)[unstable]))  # of the unstable neurons only
            self.upper.append(t(np.asarray(bounds[i].upper)[unstable]))
            self.n_unstable.append(int(unstable.size))
            self.unstable_index.append(unstable)
            self.active_index.append(active)
            previous = np.concatenate([unstable, active])
        w_out = np.asarray(w_out, dtype=np.float64)
        self.w_out, self.b_out = t(w_out[..., previous]), t(b_out)
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self.lo, self.hi = t(lo), t(hi)
        self.mid, self.rad = t((lo + hi) / 2), t((hi - lo) / 2)
        self.offsets = np.concatenate([[0], np.cumsum(self.n_unstable)]).astype(int)
        self.total_unstable = int(self.offsets[-1])

    @classmethod
    def margin(cls, network: Network, bounds: Sequence[LayerBounds], lo: Array, hi: Array, label: int,
               target: int, *, dtype: "torch.dtype | None" = None) -> "_Problem":
        """``f(x)[label] - f(x)[target]``: the last layer folded with ``e_label - e_target``."""
        last = network.layers[-1]
        return cls(network.hidden_layers, bounds, lo, hi, last.weight[label] - last.weight[target],
                   float(last.bias[label] - last.bias[target]), dtype=dtype)

    def initial_alphas(self, rows: int):
        """CROWN's adaptive lower slopes (1 where ``u >= -l``, else 0) as the optimiser's start."""
        torch = self.torch
        start = [(u >= -l).to(self.dtype) for l, u in zip(self.lower, self.upper)]
        flat = torch.cat(start) if start else torch.zeros(0, dtype=self.dtype)
        return flat.expand(rows, -1).clone()

    def per_layer(self, rows):
        """Split (D, total_unstable) rows into one (D, n_unstable_i) view per hidden layer."""
        return [rows[:, self.offsets[i]:self.offsets[i + 1]] for i in range(len(self.W_u))]

    def relaxations(self, splits: list, lowers: list | None = None, uppers: list | None = None) -> list:
        """Per hidden layer, the part of each domain's ReLU relaxation that alpha and beta do not change
        (:func:`_relaxation`): computed once for an optimiser's run over a batch instead of at every step."""
        return [_relaxation(splits[i], self.lower[i] if lowers is None else lowers[i],
                            self.upper[i] if uppers is None else uppers[i]) for i in range(len(self.W_u))]

    def bound(self, splits: list, alphas: list, betas: list, *, scores: bool = False, points: bool = False,
              lowers: list | None = None, uppers: list | None = None, relaxations: list | None = None):
        """Lower bounds of the objective for a batch of domains: (D,) bounds, with ``points`` their (D, d)
        minimisers over the box (else None) and, with ``scores``, the branching score of every unstable
        neuron and its coefficient ``a`` on the neuron's output (one pair of (D, n_unstable_i) per layer).

        ``splits[i]``: (D, n_unstable_i) in {-1, 0, +1}; ``alphas[i]``, ``betas[i]``: same shape (clamped
        here into [0, 1] and [0, inf)); ``lowers[i]``, ``uppers[i]``: the domains' own pre-activation bounds
        of the unstable neurons, (D, n_unstable_i) (sound on each domain; default the box-wide ones);
        ``relaxations``: :meth:`relaxations` of the same splits and bounds, if the caller has them."""
        torch = self.torch
        if relaxations is None:
            relaxations = self.relaxations(splits, lowers, uppers)
        D = splits[0].shape[0] if splits else 1
        lam = self.w_out.expand(D, -1) if self.w_out.ndim == 1 else self.w_out  # coefficient on the last h
        const = self.b_out.expand(D).clone() if self.b_out.ndim == 0 else self.b_out.clone()
        score_list = [None] * len(self.W_u)
        for i in range(len(self.W_u) - 1, -1, -1):
            a, active = lam[:, :self.n_unstable[i]], lam[:, self.n_unstable[i]:]  # on unstable / active h
            c_u, intercept = _relu_back(a, splits[i], alphas[i], betas[i], relaxations[i])
            if scores:
                open_, _, _, gap = relaxations[i]
                score_list[i] = (torch.where(open_, (torch.relu(-a) + 0.1 * torch.relu(a)) * gap,
                                             torch.full_like(a, -1.0)).detach(), a.detach())
            const = const + intercept + c_u @ self.b_u[i] + active @ self.b_a[i]
            lam = c_u @ self.W_u[i] + active @ self.W_a[i]
        value = const + lam @ self.mid - lam.abs() @ self.rad  # the box's minimum of lam . x
        x_star = torch.where(lam >= 0, self.lo, self.hi).detach() if points else None
        return value, x_star, score_list


def _relaxation(s, lower, upper):
    """The part of a ReLU layer's relaxation that the splits ``s`` and pre-activation bounds fix, for
    :func:`_relu_back`: a split clamps its neuron's bound (``l <- max(l, 0)`` active, ``u <- min(u, 0)``
    inactive), and a neuron is exact where that fixes its phase (``l >= 0``: ``h = z``; ``u <= 0``: ``h = 0``).
    Returns the open mask, the lower line's slope where the phase is fixed (1 active, 0 inactive), the upper
    line's slope (the fixed slope where the phase is fixed) and its intercept ``-slope l`` (0 where fixed)."""
    import torch

    lu = torch.where(s > 0, torch.clamp(lower, min=0.0), lower)
    uu = torch.where(s < 0, torch.clamp(upper, max=0.0), upper)
    on, off = lu >= 0, uu <= 0
    open_ = ~on & ~off
    slope = uu / (uu - lu).clamp(min=torch.finfo(lu.dtype).tiny)
    fixed = on.to(lu.dtype)
    return open_, fixed, torch.where(open_, slope, fixed), torch.where(open_, -slope * lu, torch.zeros_like(lu))


def _relu_back(a, s, alpha, beta, relaxation):
    """One ReLU layer of CROWN's back-substitution with split constraints (Wang et al. 2021, beta-CROWN eq. 5)
    on a precomputed :func:`_relaxation` (computed once for an optimiser's run).

    ``a``: coefficients on the layer's unstable outputs ``h`` (any leading shape); ``s`` the splits, ``alpha``,
    ``beta`` the parameters (all broadcast against ``a``). A neuron's coefficient on ``z`` is ``a`` times its lower
    slope (alpha where open) for ``a >= 0`` and times its upper slope for ``a < 0``, less ``s beta``; only the
    upper line has an intercept. Returns the coefficients and the intercepts summed over the last axis."""
    import torch

    open_, fixed, upper_slope, gap = relaxation
    lower_slope = torch.where(open_, alpha.clamp(0.0, 1.0), fixed)
    c_u = torch.where(a >= 0, a * lower_slope, a * upper_slope) - s * beta.clamp(min=0.0)
    # -relu(-a), not a.clamp(max=0): the same values, but at a == 0 (frequent) its gradient is 0, as for the lower
    # line that c_u takes there; clamp's would mix in the upper line's intercept, and the optimiser then steered
    # by a wrong subgradient needed 3x the domains (256x4 prop_8_0.03 target 2: 1,453 -> 4,295)
    return c_u, -(torch.relu(-a) * gap).sum(dim=-1)


def _outward(values, *, down: bool):
    """``values`` moved outward by :func:`sound_lower`'s slack (down for a lower bound, up for an upper)."""
    from .refinement import DUAL_SLACK_ABS, DUAL_SLACK_REL

    slack = DUAL_SLACK_ABS + DUAL_SLACK_REL * values.abs()
    return values - slack if down else values + slack


def _domain_bounds(problem: _Problem, splits: list, lowers: list, uppers: list, first: int, *,
                   chunk: int = 32) -> tuple[list, list]:
    """Each domain's pre-activation bounds of hidden layers ``first..``, re-derived under its splits.

    beta-CROWN re-computes the intermediate bounds of the layers after a split for every domain (Wang et al.
    2021, §3.3): a split fixes a neuron's phase, its relaxation becomes exact, and the neurons after it
    tighten, often to stable. Here CROWN's back-substitution (Zhang et al. 2018) with the adaptive slopes
    (``alpha = 1`` where ``u >= -l``) and no beta, through the domain's splits and bounds of the layers
    before, in float64, moved outward by :func:`sound_lower`'s slack and intersected with the bounds given:
    the domain is a subset of the box and every step is a valid relaxation on it, so bounds only tighten.

    ``splits``, ``lowers``, ``uppers``: per layer (D, n_unstable_i) (any float type); returns float64 lists."""
    torch = problem.torch
    f64 = torch.float64
    splits = [t.to(f64) for t in splits]
    lowers, uppers = [t.to(f64).clone() for t in lowers], [t.to(f64).clone() for t in uppers]
    W_u = [w.to(f64) for w in problem.W_u]
    W_a = [w.to(f64) for w in problem.W_a]
    b_u = [b.to(f64) for b in problem.b_u]
    b_a = [b.to(f64) for b in problem.b_a]
    mid, rad = problem.mid.to(f64), problem.rad.to(f64)
    D = splits[0].shape[0] if splits else 0
    for k in range(max(first, 1), len(W_u)):
        n_k = problem.n_unstable[k]
        if n_k == 0:
            continue
        w = torch.cat([W_u[k], -W_u[k]])  # rows: z_j (its lower bound) and -z_j (its upper bound)
        b = torch.cat([b_u[k], -b_u[k]])
        new_lo, new_hi = [], []
        for start in range(0, D, chunk):
            sl = slice(start, min(D, start + chunk))
            d = sl.stop - sl.start
            lam = w.expand(d, -1, -1)  # (d, 2 n_k, n_prev)
            const = b.expand(d, -1).clone()
            for i in range(k - 1, -1, -1):
                n_u = problem.n_unstable[i]
                a, active = lam[..., :n_u], lam[..., n_u:]
                lower, upper = lowers[i][sl, None, :], uppers[i][sl, None, :]
                s = splits[i][sl, None, :]
                lu = torch.where(s > 0, torch.clamp(lower, min=0.0), lower)
                uu = torch.where(s < 0, torch.clamp(upper, max=0.0), upper)
                alpha = (uu >= -lu).to(f64)  # CROWN's adaptive lower slope
                c_u, intercept = _relu_back(a, s, alpha, torch.zeros_like(s), _relaxation(s, lower, upper))
                const = const + intercept + c_u @ b_u[i] + active @ b_a[i]
                lam = c_u @ W_u[i] + active @ W_a[i]
            value = const + lam @ mid - lam.abs() @ rad  # (d, 2 n_k)
            new_lo.append(_outward(value[:, :n_k], down=True))
            new_hi.append(-_outward(value[:, n_k:], down=True))
        lowers[k] = torch.maximum(lowers[k], torch.cat(new_lo))
        uppers[k] = torch.minimum(uppers[k], torch.cat(new_hi))
    return lowers, uppers


_FLUSH = threading.local()  # nesting depth of _flushing_subnormals, per thread (the CPU flag is per thread)


@contextlib.contextmanager
def _flushing_subnormals():
    """Subnormal floats flushed to zero (the CPU's flush-to-zero / denormals-are-zero modes) for the duration.

    Arithmetic on subnormals is about a hundred times slower on x86; the back-substitution and the optimiser's
    moments meet them on some margins: on 256x4 prop_10_0.05 target 2, the root's 60 steps took 40.2 s instead
    of 0.09 s (same bound). Flushing changes a float64 value by less than its smallest normal (2.2e-308, 1.2e-38
    in float32) per operation, which :func:`sound_lower`'s slack (1e-6 absolute) covers many times over, and the
    float32 search only chooses parameters. torch's default (off) is restored on leaving the outermost use.

    The flag belongs to a thread. torch's intra-op threads copy it from the thread that starts them, when the
    process' first parallel torch operation runs: inside this context (as in :func:`formulations.vnncomp.
    vnncomp_answer`, the CLI and the workers, whose first torch work is alpha-CROWN) they flush for the rest of
    the process, as checked with two threads (they run torch kernels only, and every bound here carries the
    slack). A process that ran parallel torch work before keeps intra-op threads that do not flush: give the
    search one thread there."""
    import torch

    depth = getattr(_FLUSH, "depth", 0)
    if depth == 0:
        torch.set_flush_denormal(True)
    _FLUSH.depth = depth + 1
    try:
        yield
    finally:
        _FLUSH.depth = depth
        if depth == 0:
            torch.set_flush_denormal(False)


def _round_outward_f32(lower, upper):
    """float64 bounds stored in float32 without losing soundness: lower rounded down, upper rounded up."""
    import torch

    lo32, hi32 = lower.float(), upper.float()
    lo32 = torch.where(lo32.double() > lower, torch.nextafter(lo32, torch.tensor(-np.inf)), lo32)
    hi32 = torch.where(hi32.double() < upper, torch.nextafter(hi32, torch.tensor(np.inf)), hi32)
    return lo32, hi32


def _optimise(problem: _Problem, splits: "torch.Tensor", alphas: "torch.Tensor", betas: "torch.Tensor",
              iterations: int, settings: BabSettings, *, decay: float = 1.0, lowers=None, uppers=None):
    """Adam ascent on the sum of the batch's bounds. Domains are rows over all unstable neurons (layers
    concatenated). Returns the best bound seen per domain (each one valid), the last step's minimiser (a
    point of the box to try on the real network) and branching scores, and the parameters that gave the
    best bound (the last step's are often worse: Adam oscillates, and children started from them lost
    most of what their parents had gained).
    ``decay`` < 1 shrinks the step sizes geometrically, to converge rather than explore; ``lowers``,
    ``uppers``: the domains' own pre-activation bounds, (D, total_unstable) rows (default the box-wide ones)."""
    torch = problem.torch
    alphas = alphas.clone().requires_grad_(True)
    betas = betas.clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [alphas], "lr": settings.lr_alpha},
                            {"params": [betas], "lr": settings.lr_beta}], fused=True)
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
    layer_splits = problem.per_layer(splits)
    own = {} if lowers is None else {"lowers": problem.per_layer(lowers.to(problem.dtype)),
                                     "uppers": problem.per_layer(uppers.to(problem.dtype))}
    own["relaxations"] = problem.relaxations(layer_splits, own.get("lowers"), own.get("uppers"))
    if splits.shape[1] == 0:
        iterations = 0  # no unstable neuron: the bound has no parameters to optimise
    best = best_alphas = best_betas = scores = coefs = x_star = None
    for step in range(iterations + 1):
        last = step == iterations
        with torch.set_grad_enabled(not last):
            value, x_star, layer_scores = problem.bound(layer_splits, problem.per_layer(alphas),
                                                        problem.per_layer(betas), scores=last, points=last, **own)
        v = value.detach()
        if best is None:
            best = v.clone()
            best_alphas, best_betas = alphas.detach().clone(), betas.detach().clone()
        else:  # per domain, the best bound and the parameters that gave it: the children start from those
            better = v > best
            best = torch.where(better, v, best)
            best_alphas = torch.where(better[:, None], alphas.detach(), best_alphas)
            best_betas = torch.where(better[:, None], betas.detach(), best_betas)
        if last:
            empty = torch.zeros((v.shape[0], 0), dtype=v.dtype)
            scores = torch.cat([sc for sc, _ in layer_scores], dim=1) if layer_scores else empty
            coefs = torch.cat([a for _, a in layer_scores], dim=1) if layer_scores else empty
            break
        opt.zero_grad()
        (-value.sum()).backward()
        opt.step()
        schedule.step()
    return best, x_star, scores, best_alphas.clamp(0.0, 1.0), best_betas.clamp(min=0.0), coefs


def optimised_bounds(network: Network, lo: Array, hi: Array, bounds: Sequence[LayerBounds], *,
                     iterations: int = 20, deadline: float | None = None,
                     settings: BabSettings | None = None) -> list[LayerBounds]:
    """alpha-CROWN pre-activation bounds of the hidden layers, layer by layer (Xu et al. 2021, §3.1).

    For hidden layer ``k >= 1`` (layer 0's are exact on a box) and each of its unstable neurons, the lower
    bound of ``z_j`` and of ``-z_j`` through layers ``0..k-1`` with their own optimised slopes (one alpha
    vector per neuron side). Each new bound is moved outward by :func:`sound_lower`'s slack and intersected
    with the one given, so bounds only tighten; the output layer's are re-derived symbolically at the end.
    Usually as tight as LP tightening at a small fraction of its time (one batched gradient ascent per
    layer instead of two LPs per neuron). ``deadline`` (``time.monotonic()``) stops between layers.
    """
    import torch

    from .bounds import symbolic_bounds

    settings = settings or BabSettings()
    hidden = network.hidden_layers
    current = [LayerBounds(b.lower, b.upper) for b in bounds]
    for k in range(1, len(hidden)):
        if deadline is not None and time.monotonic() >= deadline:
            break
        lower, upper = current[k].lower.copy(), current[k].upper.copy()
        idx = np.flatnonzero((lower < 0) & (upper > 0))
        if idx.size == 0:
            continue
        layer = hidden[k]
        w_out = np.vstack([layer.weight[idx], -layer.weight[idx]])
        b_out = np.concatenate([layer.bias[idx], -layer.bias[idx]])
        problem = _Problem(hidden[:k], current[:k], lo, hi, w_out, b_out)
        rows = w_out.shape[0]
        with _flushing_subnormals():
            value, *_ = _optimise(problem, torch.zeros((rows, problem.total_unstable), dtype=torch.float64),
                                  problem.initial_alphas(rows),
                                  torch.zeros((rows, problem.total_unstable), dtype=torch.float64), iterations,
                                  settings)
        value = value.numpy()
        lows = np.array([sound_lower(v) for v in value[: idx.size]])
        highs = np.array([-sound_lower(v) for v in value[idx.size:]])
        lower[idx] = np.maximum(lower[idx], lows)
        upper[idx] = np.minimum(upper[idx], highs)
        current[k] = LayerBounds(lower, upper)
    return symbolic_bounds(network, lo, hi, initial=current)


class BabSearch:
    """A resumable branch and bound for one margin (module docstring): the root is bounded on construction,
    :meth:`run` searches for a given number of seconds and may be called again, going on from the open domains
    it left (a search's tree is kept between calls, so time given to it in slices adds up as one run would).

    ``result`` is the search's state so far: ``verified`` / ``falsified`` are final, and so is an ``unknown``
    whose ``stats['reason']`` is not the time limit (the domain limit, or a fully split domain that stayed open:
    more time does not help); ``finished`` says which."""

    def __init__(self, network: Network, lo: Array, hi: Array, bounds: Sequence[LayerBounds], label: int,
                 target: int, *, settings: BabSettings | None = None, threshold: float = 0.0) -> None:
        import torch

        started = time.monotonic()
        self.settings = settings = settings or BabSettings()
        for i, layer in enumerate(network.hidden_layers):
            if layer.activation.name not in ("relu", "identity"):
                raise InvalidInputError(
                    f"ReLU branch and bound needs ReLU layers; layer {i} is {layer.activation.name!r}")
        if len(bounds) < len(network.hidden_layers):
            raise InvalidInputError(f"{len(bounds)} layer bounds for {len(network.hidden_layers)} hidden layers")
        self.network, self.label, self.target, self.threshold = network, label, target, threshold
        self.lo, self.hi = lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self.problem = problem = _Problem.margin(network, bounds, lo, hi, label, target)  # float64: root, proofs
        self.search = _Problem.margin(network, bounds, lo, hi, label, target, dtype=torch.float32) \
            if settings.float32_search else problem
        n = problem.total_unstable
        with _flushing_subnormals():
            value, x_star, scores, alphas, betas, coefs = _optimise(
                problem, torch.zeros((1, n), dtype=torch.float64), problem.initial_alphas(1),
                torch.zeros((1, n), dtype=torch.float64), settings.first_iterations, settings)
        self.root = sound_lower(float(value[0]))
        self.result = BabResult(UNKNOWN, self.root, domains=1)
        self.result.stats["unconfirmed"] = 0
        self._final = False  # verified, falsified, or unknown for good (more time would not help)
        self.proven = np.inf  # the smallest sound (float64) bound among the domains closed so far
        self.counter = itertools.count()
        # the box-wide pre-activation bounds of the unstable neurons, float32 rounded outward: every domain's
        # own when domain_bounds is off (then the heap carries none)
        root_lower = torch.cat(problem.lower) if n else torch.zeros(0, dtype=torch.float64)
        root_upper = torch.cat(problem.upper) if n else torch.zeros(0, dtype=torch.float64)
        self.box_lower, self.box_upper = _round_outward_f32(root_lower, root_upper)
        # open domains, lowest key first: (key, tiebreak, splits int8, alphas, betas, scores, lower, upper, coefs)
        # as 1-D rows; keys in the search precision (float32 by default): a guide for the order, never a proof
        self.heap: list = []
        if self._margin_at(x_star.numpy())[0] < 0:
            self._finish(FALSIFIED, x=np.clip(x_star.numpy()[0], lo, hi))
        elif self.root > threshold:
            self._finish(VERIFIED)
        else:
            self._push(float(value[0]), torch.zeros(n, dtype=torch.int8), alphas[0], betas[0], scores[0],
                       self.box_lower, self.box_upper, coefs[0])
        self.result.seconds = time.monotonic() - started

    @property
    def finished(self) -> bool:
        return self._final

    def _margin_at(self, x: Array) -> Array:
        y = self.network.forward(np.clip(x, self.lo, self.hi))
        return y[:, self.label] - y[:, self.target]

    def _finish(self, status: str, *, x: Array | None = None, reason: str | None = None) -> None:
        self.result.status, self.result.x, self._final = status, x, True
        if reason is not None:
            self.result.stats["reason"] = reason
        if status == VERIFIED:
            self.result.lower = self.proven if np.isfinite(self.proven) else self.root
        self.heap = []  # nothing left to search: free the tree

    def _push(self, key, splits, alphas, betas, scores, lower, upper, coefs) -> None:
        own = self.settings.domain_bounds  # without domain bounds every domain's are the box's: not stored
        heapq.heappush(self.heap, (key, next(self.counter), splits, alphas.float(), betas.float(), scores.float(),
                                   lower if own else None, upper if own else None,
                                   coefs.float() if self.settings.beta_init else None))

    def run(self, time_limit: float, *, rounds: int | None = None) -> BabResult:
        """Search for at most ``time_limit`` more seconds (checked between rounds) and at most ``rounds`` more
        rounds (batches split); returns :attr:`result`.

        ``verified`` only when every domain's :func:`sound_lower` bound is above the threshold; ``falsified``
        only with a point of the box where the real network's margin is negative; ``lower`` is a proven lower
        bound of the margin over the box in every case (while domains are open, the root's or a closed one's:
        the open domains' float32 bounds prove nothing)."""
        started = time.monotonic()
        try:
            if not self.finished:
                with _flushing_subnormals():
                    self._search(started, time_limit, np.inf if rounds is None else rounds)
        finally:
            self.result.seconds += time.monotonic() - started
        return self.result

    def _search(self, started: float, time_limit: float, rounds: float) -> None:
        import torch

        settings, problem, search, result = self.settings, self.problem, self.search, self.result
        threshold, heap, n = self.threshold, self.heap, problem.total_unstable
        last_round = result.rounds + rounds
        while heap:
            if time.monotonic() - started > time_limit or len(heap) > settings.max_domains or result.rounds >= last_round:
                result.lower = min(self.proven, self.root)
                result.stats["open_bound"] = heap[0][0]
                result.stats["open"] = len(heap)
                result.stats["reason"] = "time limit"  # (or the rounds asked for): more would go on
                if len(heap) > settings.max_domains:
                    self._finish(UNKNOWN, reason="domain limit")
                return
            result.rounds += 1
            parents = [heapq.heappop(heap) for _ in range(min(settings.batch, len(heap)))]
            p_splits = torch.stack([p[2] for p in parents]).to(search.dtype)
            p_scores = torch.stack([p[5] for p in parents]).to(search.dtype)
            p_scores = torch.where(p_splits != 0, torch.full_like(p_scores, -1.0), p_scores)
            best_score = p_scores.max(dim=1).values if n else torch.full((len(parents),), -1.0)
            p_alphas = torch.stack([p[3] for p in parents]).to(search.dtype)
            p_betas = torch.stack([p[4] for p in parents]).to(search.dtype)
            p_keys = np.array([p[0] for p in parents])
            if settings.domain_bounds:
                p_lower = torch.stack([p[6] for p in parents]).double()
                p_upper = torch.stack([p[7] for p in parents]).double()
            else:
                p_lower = self.box_lower.double().expand(len(parents), -1)
                p_upper = self.box_upper.double().expand(len(parents), -1)
            p_coefs = torch.stack([p[8] for p in parents]).to(search.dtype) if settings.beta_init else None
            full = np.flatnonzero((best_score < 0).numpy())
            if full.size:
                # every unstable neuron split: the domain is a polytope and its Lagrangian bound is exact at the
                # optimal beta, so converge on it (float64, decaying steps) instead of branching further
                f_value, f_x, *_ = _optimise(problem, p_splits[full].double(), p_alphas[full].double(),
                                             p_betas[full].double(), POLISH_ITERATIONS, settings, decay=POLISH_DECAY,
                                             lowers=p_lower[full], uppers=p_upper[full])
                points = f_x.numpy()
                bad = np.flatnonzero(self._margin_at(points) < 0)
                if bad.size:
                    return self._finish(FALSIFIED, x=np.clip(points[bad[0]], self.lo, self.hi))
                bounds_ = [sound_lower(float(v)) for v in f_value.numpy()]
                for j in np.flatnonzero(np.array(bounds_) <= threshold):
                    # the polish is a gradient method and may stop short of the exact bound: the domain's
                    # margin is affine on a polytope, so one LP gives the bound itself (and its minimiser)
                    exact, point = _leaf_lp(self.network, problem, p_splits[full[j]], self.lo, self.hi, self.label,
                                            self.target)
                    if point is not None and self._margin_at(point[None, :])[0] < 0:
                        return self._finish(FALSIFIED, x=np.clip(point, self.lo, self.hi))
                    bounds_[j] = max(bounds_[j], exact)
                    result.stats["leaf_lps"] = result.stats.get("leaf_lps", 0) + 1
                if min(bounds_) <= threshold:
                    result.lower = min(self.proven, self.root)
                    return self._finish(UNKNOWN, reason="a domain with nothing left to split stayed undecided")
                self.proven = min(self.proven, min(bounds_))
                keep = np.setdiff1d(np.arange(len(parents)), full)
                if keep.size == 0:
                    continue
                parents = [parents[i] for i in keep]
                p_splits, p_scores, p_alphas, p_betas = p_splits[keep], p_scores[keep], p_alphas[keep], p_betas[keep]
                p_lower, p_upper, p_keys = p_lower[keep], p_upper[keep], p_keys[keep]
                p_coefs = p_coefs[keep] if p_coefs is not None else None
            branch = p_scores.argmax(dim=1)
            rows = torch.arange(len(parents))
            active, inactive = p_splits.clone(), p_splits.clone()
            active[rows, branch], inactive[rows, branch] = 1.0, -1.0
            splits = torch.cat([active, inactive])
            c_betas = torch.cat([p_betas, p_betas])
            if settings.beta_init:
                c_betas = _split_betas(c_betas, torch.cat([rows, rows + len(parents)]), torch.cat([branch, branch]),
                                       torch.cat([p_coefs, p_coefs]), torch.cat([p_alphas, p_alphas]),
                                       torch.cat([torch.ones(len(parents)), -torch.ones(len(parents))]))
            c_keys = np.concatenate([p_keys, p_keys])
            c_alphas = torch.cat([p_alphas, p_alphas])
            if settings.domain_bounds:
                c_lower, c_upper = _children_bounds(problem, splits, torch.cat([p_lower, p_lower]),
                                                    torch.cat([p_upper, p_upper]), torch.cat([branch, branch]))
                c_lower, c_upper = _round_outward_f32(c_lower, c_upper)
                # a child whose own bounds cross is empty (no input of the box meets its splits): nothing to prove
                feasible = ~(c_lower > c_upper).any(dim=1) if n else torch.ones(splits.shape[0], dtype=torch.bool)
                result.stats["empty"] = result.stats.get("empty", 0) + int((~feasible).sum())
                if not bool(feasible.all()):
                    keep = torch.nonzero(feasible).flatten()
                    if keep.numel() == 0:
                        continue
                    splits, c_lower, c_upper, c_keys = splits[keep], c_lower[keep], c_upper[keep], c_keys[keep.numpy()]
                    c_alphas, c_betas = c_alphas[keep], c_betas[keep]
            else:
                c_lower = self.box_lower.expand(splits.shape[0], -1)
                c_upper = self.box_upper.expand(splits.shape[0], -1)
            value, x_star, scores, alphas, betas, coefs = _optimise(search, splits, c_alphas, c_betas,
                                                                    settings.iterations, settings,
                                                                    lowers=c_lower, uppers=c_upper)
            result.domains += int(value.shape[0])
            points = x_star.double().numpy()
            bad = np.flatnonzero(self._margin_at(points) < 0)
            if bad.size:
                return self._finish(FALSIFIED, x=np.clip(points[bad[0]], self.lo, self.hi))
            values = value.double().numpy()
            closing = np.flatnonzero([sound_lower(float(v)) > threshold for v in values])
            if closing.size and search is not problem:
                # a proof is a float64 bound: re-bound the closing domains at the parameters found in float32
                values[closing] = _confirm(problem, splits[closing], alphas[closing], betas[closing],
                                           c_lower[closing], c_upper[closing])
            sound = np.array([sound_lower(float(v)) for v in values])
            result.stats["unconfirmed"] += int((sound[closing] <= threshold).sum())  # float32 closed, float64 not
            splits8 = splits.to(torch.int8)
            for d in range(values.shape[0]):
                if sound[d] > threshold:
                    self.proven = min(self.proven, sound[d])
                    continue
                # a child is a subset of its parent: the parent's bound holds for it too (a better key for the
                # order; never a proof, the parent was open)
                key = max(float(values[d]), float(c_keys[d])) if settings.parent_keys else float(values[d])
                self._push(key, splits8[d], alphas[d], betas[d], scores[d], c_lower[d], c_upper[d], coefs[d])
        self._finish(VERIFIED)


def relu_bab(network: Network, lo: Array, hi: Array, bounds: Sequence[LayerBounds], label: int, target: int, *,
             time_limit: float, settings: BabSettings | None = None, threshold: float = 0.0) -> BabResult:
    """Prove ``f(x)[label] - f(x)[target] > threshold`` on the box ``[lo, hi]``, or find a point where the
    margin is negative, by branch and bound over ReLU splits (module docstring): one :class:`BabSearch`, run once.

    Args:
        network: hidden layers ReLU (or identity), last layer affine.
        bounds: sound pre-activation bounds of every layer over the box (only the hidden layers' are used).
        time_limit: seconds; on expiry the answer is ``unknown`` with the best proven bound.

    Returns:
        A :class:`BabResult`. ``verified`` only when every domain's :func:`sound_lower` bound is above
        ``threshold``; ``falsified`` only with a point of the box where the real network's margin is
        negative. ``lower`` is a proven lower bound of the margin over the box in every case.
    """
    started = time.monotonic()
    search = BabSearch(network, lo, hi, bounds, label, target, settings=settings, threshold=threshold)
    return search.run(max(0.0, time_limit - (time.monotonic() - started)))


def _leaf_lp(network: Network, problem: _Problem, splits, lo: Array, hi: Array, label: int, target: int
             ) -> tuple[float, Array | None]:
    """The exact minimum of the margin over a domain whose every unstable neuron is split: each hidden layer
    is then affine on the domain (``h = D z``, ``D`` the phases), so the margin is an affine function of
    ``x`` and the domain a polytope (the box and one half-space ``s_j z_j(x) >= 0`` per split); one LP.

    Returns a sound lower bound and the LP's minimiser (None if it has none). The bound never rests on the
    solver's word: it is the rigorous Lagrangian bound of the LP's row duals (Neumaier & Shcherbina 2004,
    :func:`formulations.backends.safe_bounds.safe_lp_bound`) through :func:`formulations.refinement.sound_lower`.
    An empty domain (the LP infeasible) gets the same kind of bound from the duals of the phase-one LP
    ``max s: s_j z_j(x) >= s``, scaled up (a Farkas combination of the splits: any multiple is a valid
    multiplier, and it grows without bound on an empty domain); ``-inf`` where neither gives one."""
    from .backends import solve
    from .backends.base import SolveParameters, Termination
    from .backends.safe_bounds import safe_lp_bound
    from .model import Model, Sense

    splits = np.asarray(splits, dtype=np.float64)
    A, c = np.eye(len(lo)), np.zeros(len(lo))  # h = A x + c, for the layer's inputs
    rows, row_c = [np.zeros((0, len(lo)))], [np.zeros(0)]
    for i, layer in enumerate(network.hidden_layers):
        W, b = np.asarray(layer.weight, dtype=np.float64), np.asarray(layer.bias, dtype=np.float64)
        zA, zc = W @ A, W @ c + b
        if layer.activation.name == "identity":
            A, c = zA, zc
            continue
        phase = np.zeros(layer.n_out)
        phase[problem.active_index[i]] = 1.0
        side = splits[problem.offsets[i]:problem.offsets[i + 1]]
        unstable = problem.unstable_index[i]
        phase[unstable] = (side > 0).astype(np.float64)
        rows.append(side[:, None] * zA[unstable])  # s_j z_j(x) >= 0
        row_c.append(side * zc[unstable])
        A, c = phase[:, None] * zA, phase * zc
    G, g = np.vstack(rows), np.concatenate(row_c)
    last = network.layers[-1]
    w = np.asarray(last.weight[label] - last.weight[target], dtype=np.float64)

    model = Model("relu-bab-leaf")
    x = model.add_variables(len(lo), lo, hi)
    model.add_constraints(G, x, lo=-g)
    model.set_objective((x, w @ A), constant=float(w @ c + last.bias[label] - last.bias[target]), sense=Sense.MINIMIZE)
    res = solve(model, "highs", SolveParameters(time_limit=10.0))
    point = None if res.primal is None else np.asarray(res.primal[x], dtype=np.float64)
    if res.row_duals is not None and res.termination == Termination.OPTIMAL:
        return float(sound_lower(safe_lp_bound(model, res.row_duals))), point
    if res.termination != Termination.INFEASIBLE:
        return -np.inf, point
    phase_one = Model("relu-bab-leaf-phase-one")
    x1 = phase_one.add_variables(len(lo), lo, hi)
    slack = phase_one.add_variable(-1.0, 1.0)
    phase_one.add_constraints(np.hstack([G, -np.ones((G.shape[0], 1))]), np.append(x1, slack), lo=-g)
    phase_one.set_objective({slack: -1.0}, sense=Sense.MINIMIZE)  # max s
    res = solve(phase_one, "highs", SolveParameters(time_limit=10.0))
    if res.row_duals is None:
        return -np.inf, None
    farkas, best = np.maximum(np.asarray(res.row_duals, dtype=np.float64), 0.0), -np.inf
    for scale in 10.0 ** np.arange(0, 13, 2):
        best = max(best, safe_lp_bound(model, scale * farkas))
    return float(sound_lower(best)), None


def _confirm(problem: _Problem, splits, alphas, betas, lowers, uppers) -> Array:
    """Float64 bounds of domains at the given (float32-found) parameters and the domains' own (sound)
    pre-activation bounds: valid whatever the parameters are."""
    torch = problem.torch
    with torch.no_grad():
        value, _, _ = problem.bound(problem.per_layer(splits.double()), problem.per_layer(alphas.double()),
                                    problem.per_layer(betas.double()), lowers=problem.per_layer(lowers.double()),
                                    uppers=problem.per_layer(uppers.double()))
    return value.numpy()


def _split_betas(betas, rows, branch, coefs, alphas, sides):
    """Start values of the new split's beta that give each child its parent's bound (Wang et al. 2021, §3.2).

    The parent bounded ``h_j`` (coefficient ``a >= 0``) by its lower line ``alpha z_j``. In the child ``h_j`` is
    exact (``z_j`` when active, 0 when inactive) and the split enters through ``-s beta z_j``, so the coefficient
    on ``z_j`` is ``a - beta`` (active) or ``beta`` (inactive): ``beta = a (1 - alpha)`` resp. ``a alpha``
    reproduce the parent's coefficient, so the child starts at its parent's bound (at the parent's last
    parameters) instead of below it, where beta = 0 often leaves it. For ``a < 0`` no ``beta >= 0`` matches the
    parent's upper line; those start at 0. Any ``beta >= 0`` is valid: this only chooses the start."""
    a = coefs[rows, branch]
    alpha = alphas[rows, branch].clamp(0.0, 1.0)
    start = (a * (1.0 - alpha)).where(sides > 0, a * alpha).clamp(min=0.0)
    out = betas.clone()
    out[rows, branch] = start.to(out.dtype)
    return out


def _children_bounds(problem: _Problem, splits, lowers, uppers, branch):
    """The children's own pre-activation bounds: the layers after each child's split layer re-derived by
    :func:`_domain_bounds` (a split changes nothing before or in its own layer but the neuron itself, which
    the split clamps), one group per split layer. Rows (D, total_unstable), float64."""
    torch = problem.torch
    layer_of = torch.as_tensor(np.searchsorted(problem.offsets, branch.numpy(), side="right") - 1)
    lowers, uppers = lowers.clone(), uppers.clone()
    for j in torch.unique(layer_of).tolist():
        if j + 1 >= len(problem.n_unstable):
            continue  # a split in the last hidden layer has no layer after it
        rows = torch.nonzero(layer_of == j).flatten()
        lo_, hi_ = _domain_bounds(problem, problem.per_layer(splits[rows]), problem.per_layer(lowers[rows]),
                                  problem.per_layer(uppers[rows]), j + 1)
        lowers[rows], uppers[rows] = torch.cat(lo_, dim=1), torch.cat(hi_, dim=1)
    return lowers, uppers
