"""Soundness at scale (issue 19 item 3): a randomized campaign that checks every answer of the engine against
independent oracles written here (numpy / scipy only: no engine bounds, encodings or attacks). Prints; asserts
nothing.

    nice -n 10 .venv/bin/python bench/soundness.py [--seed 0] [--minutes 10] [--out DIR]

Random small networks (ReLU, GELU, sigmoid, tanh, SiLU; 2-8 inputs, 1-3 hidden layers of 2-8 neurons, 2-4
outputs), random centres in [0, 1]^d (domain [0, 1]), eps log-uniform from 1e-4 to 0.5, norms L-inf, L1, L2.
Engine answers checked (the method names printed):

* ``lp``, ``lp-bounds``, ``mip``, ``mip-bounds`` — :func:`formulations.cascade.certify_batch` (verdict and bounds
  answers); ``certify`` — :func:`formulations.robustness.certify`; ``minimum-margin`` — the MIP with refinement
  (:func:`formulations.robustness.minimum_margin`); ``segment-bab`` — branch and bound over segments
  (:func:`formulations.cascade.minimum_margin_bb`); ``relu-bab`` — :func:`formulations.relu_bab.relu_bab`;
  ``injectivity``, ``preimage``, ``invariance`` (decision invariance) — :mod:`formulations.invertibility`.

Oracles (all in this file):

* ``forward``: a plain numpy forward pass (its own activations, GELU via ``scipy.special.erf``).
* ``attack``: dense sampling of the ball ∩ domain plus PGD with restarts on every target's margin (own gradients,
  own feasibility step). Any point it finds is re-checked inside the set; a point whose margin is below a certified
  lower bound (beyond the slack) contradicts the engine.
* ``enumeration`` (ReLU, L-inf / L1): the exact minimum margin, by enumerating the activation patterns that
  the oracle's own interval bounds leave open and solving one ``scipy.optimize.linprog`` per pattern.
* ``grid`` (smooth, 1-2 inputs, L-inf): a certified interval for the minimum margin, ``[g - L h / 2, g]`` with ``g``
  the grid minimum, ``h`` the grid's L2 cell diameter and ``L`` a Lipschitz bound of the margin.
* invertibility: a witness pair re-checked (inside the ball, equal outputs, its distance); and lower bounds on the
  maximal distance ``p*`` — for ReLU, segments along a null direction of a linear region's Jacobian (exactly equal
  outputs); for any activation, sampled pairs with outputs within delta. A lower bound above the engine's upper
  bound contradicts it. Decision invariance: the witness re-checked (inside, still classified as the centre),
  and sampled points that keep the class, whose farthest distance must not exceed the engine's upper bound.

A disagreement beyond ``slack = stated tolerance + 1e-6 + 1e-5 |value|`` is written to ``--out`` as JSON (network,
input, eps, norm, method, engine answer, oracle evidence) and counted; the count must be 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

# bench/ holds queue.py: keep this folder off the import path, or it shadows the standard `queue`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.optimize import linprog  # noqa: E402
from scipy.special import erf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ACTIVATIONS = ("relu", "gelu", "sigmoid", "tanh", "silu")
NORMS = ("linf", "l1", "l2")
MEMBERSHIP_TOL = 1e-9  # a found point is inside the set up to this (absolute)
# Lipschitz constants of the activations (sup |f'|): GELU's derivative peaks at ~1.1289 (x ~ 1.4142), SiLU's at
# ~1.0998 (x ~ 2.3994); rounded up.
LIPSCHITZ = {"relu": 1.0, "gelu": 1.13, "sigmoid": 0.25, "tanh": 1.0, "silu": 1.1}


# -- the oracles' own network arithmetic ------------------------------------------------------------------


def act(name: str, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "gelu":
        return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "tanh":
        return np.tanh(z)
    if name == "silu":
        return z * 0.5 * (1.0 + np.tanh(0.5 * z))
    raise ValueError(name)


def act_grad(name: str, z):
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "gelu":
        return 0.5 * (1.0 + erf(z / np.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    s = 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "sigmoid":
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "silu":
        return s + z * s * (1.0 - s)
    raise ValueError(name)


class Net:
    """The oracle's view of a network: weights (out, in), biases, one hidden activation; last layer affine."""

    def __init__(self, weights, biases, activation: str) -> None:
        self.W = [np.asarray(w, dtype=np.float64) for w in weights]
        self.b = [np.asarray(b, dtype=np.float64) for b in biases]
        self.activation = activation

    @property
    def d(self) -> int:
        return self.W[0].shape[1]

    @property
    def n_out(self) -> int:
        return self.W[-1].shape[0]

    def forward(self, x):
        a = np.asarray(x, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.W, self.b)):
            z = a @ w.T + b
            a = z if i == len(self.W) - 1 else act(self.activation, z)
        return a

    def margins(self, x, label):
        """logit[label] - logit[k] for every k; ``label`` broadcast against x's leading dims."""
        y = self.forward(x)
        lab = np.broadcast_to(np.asarray(label), y.shape[:-1])
        return np.take_along_axis(y, lab[..., None], axis=-1) - y

    def margin_and_grad(self, x, label, target):
        """margin_target (...,) and its gradient (..., d); label, target broadcast to x's leading dims."""
        zs, a = [], np.asarray(x, dtype=np.float64)
        for w, b in zip(self.W[:-1], self.b[:-1]):
            z = a @ w.T + b
            zs.append(z)
            a = act(self.activation, z)
        y = a @ self.W[-1].T + self.b[-1]
        lab = np.broadcast_to(np.asarray(label), y.shape[:-1])
        tgt = np.broadcast_to(np.asarray(target), y.shape[:-1])
        m = np.take_along_axis(y, lab[..., None], -1)[..., 0] - np.take_along_axis(y, tgt[..., None], -1)[..., 0]
        g = self.W[-1][lab] - self.W[-1][tgt]  # d m / d a_last
        for w, z in zip(self.W[-2::-1], zs[::-1]):
            g = (g * act_grad(self.activation, z)) @ w
        return m, g

    def lipschitz_margin(self, label: int, target: int) -> float:
        """A Lipschitz constant (w.r.t. L2 on the input) of logit[label] - logit[target]."""
        out = np.linalg.norm(self.W[-1][label] - self.W[-1][target])
        for w in self.W[:-1]:
            out *= np.linalg.norm(w, 2) * LIPSCHITZ[self.activation]
        return float(out)

    def to_json(self) -> dict:
        return {"weights": [w.tolist() for w in self.W], "biases": [b.tolist() for b in self.b],
                "activation": self.activation}


def random_net(rng: np.random.Generator, activation: str, d: int | None = None) -> Net:
    d = int(rng.integers(2, 9)) if d is None else d
    hidden = [int(rng.integers(2, 9)) for _ in range(int(rng.integers(1, 4)))]
    sizes = [d, *hidden, int(rng.integers(2, 5))]
    scale = float(rng.choice([0.5, 1.0, 2.0]))
    weights = [rng.normal(0.0, scale / np.sqrt(a), size=(b, a)) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.normal(0.0, 0.3, size=b) for b in sizes[1:]]
    return Net(weights, biases, activation)


# -- the oracles' own input sets ----------------------------------------------------------------------------


def dist(x, c, norm: str):
    r = np.abs(np.asarray(x) - np.asarray(c))
    return r.max(-1) if norm == "linf" else r.sum(-1) if norm == "l1" else np.sqrt((r * r).sum(-1))


def inside(x, c, eps, norm: str, lo: float = 0.0, hi: float = 1.0, tol: float = MEMBERSHIP_TOL):
    x = np.asarray(x, dtype=np.float64)
    return (np.isfinite(x).all(-1) & (x >= lo - tol).all(-1) & (x <= hi + tol).all(-1)
            & (dist(x, c, norm) <= np.asarray(eps) + tol))


def feasible(x, c, eps, norm: str):
    """A point of ball(c, eps) ∩ [0, 1]^d near x: clip to the box, then pull towards c (c is in the box, which
    is convex, so the segment stays in it) until inside the ball. Not a projection; always feasible."""
    x = np.clip(x, 0.0, 1.0)
    if norm == "linf":
        e = np.asarray(eps)[..., None]
        return np.clip(x, c - e, c + e)
    r = dist(x, c, norm)
    f = np.minimum(1.0, np.asarray(eps) * (1.0 - 1e-12) / np.maximum(r, 1e-300))
    return c + (x - c) * f[..., None]


def sample(rng, c, eps, norm: str, k: int):
    """k points of each ball ∩ domain: (n, k, d); corners of the L-inf box and vertices of the L1 ball included."""
    n, d = c.shape
    e = eps[:, None, None]
    if norm == "linf":
        u = rng.uniform(-1.0, 1.0, size=(n, k, d))
        u[:, : k // 4] = np.sign(u[:, : k // 4])  # corners
        x = c[:, None] + e * u
    elif norm == "l2":
        g = rng.normal(size=(n, k, d))
        g /= np.linalg.norm(g, axis=-1, keepdims=True)
        x = c[:, None] + e * g * rng.uniform(size=(n, k, 1)) ** (1.0 / d)
    else:
        g = rng.exponential(size=(n, k, d + 1))
        g = g[..., :d] / g.sum(-1, keepdims=True) * rng.choice([-1.0, 1.0], size=(n, k, d))
        vert = rng.integers(0, d, size=(n, k // 4))
        g[:, : k // 4] = 0.0
        np.put_along_axis(g[:, : k // 4], vert[..., None], rng.choice([-1.0, 1.0], size=(n, k // 4, 1)), axis=-1)
        x = c[:, None] + e * g
    return feasible(x, c[:, None], eps[:, None], norm)


def attack(net: Net, c, labels, eps, norm: str, rng, *, samples: int = 256, restarts: int = 4, steps: int = 40):
    """Per input and target, the smallest margin found (n, n_out) (inf at the label) and its point (n, n_out, d)."""
    n, d = c.shape
    best = np.full((n, net.n_out), np.inf)
    where = np.full((n, net.n_out, d), np.nan)
    pts = sample(rng, c, eps, norm, samples)
    allm = net.margins(pts, labels[:, None])  # (n, k, n_out)
    idx = np.argmin(np.where(np.arange(net.n_out) == labels[:, None, None], np.inf, allm), axis=1)  # (n, n_out)
    for t in range(net.n_out):
        m = allm[np.arange(n), idx[:, t], t]
        best[:, t], where[:, t] = m, pts[np.arange(n), idx[:, t]]
    best[np.arange(n), labels] = np.inf
    for t in range(net.n_out):
        rows = np.flatnonzero(labels != t)
        if not len(rows):
            continue
        cc, ee, ll = c[rows], eps[rows], labels[rows]
        starts = [c[rows][:, None], where[rows, t][:, None], sample(rng, cc, ee, norm, restarts)]
        x = np.concatenate(starts, axis=1)  # (r, R, d)
        cr, er = cc[:, None], ee[:, None]
        for s in range(steps):
            step = er[..., None] * (0.5 * (1.0 - s / steps) + 0.01)
            _, g = net.margin_and_grad(x, ll[:, None], t)
            if norm == "linf":
                dx = np.sign(g)
            else:
                dx = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-300)
            x = feasible(x - step * dx, cr, er, norm)
        m = net.margins(x, ll[:, None])[..., t]
        j = np.argmin(m, axis=1)
        mm = m[np.arange(len(rows)), j]
        better = mm < best[rows, t]
        best[rows[better], t] = mm[better]
        where[rows[better], t] = x[np.arange(len(rows)), j][better]
    return best, where


def interval_bounds(net: Net, lo, hi):
    """The oracle's own interval arithmetic: pre-activation bounds of every hidden layer."""
    out = []
    for w, b in zip(net.W[:-1], net.b[:-1]):
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        zl, zu = wp @ lo + wn @ hi + b, wp @ hi + wn @ lo + b
        out.append((zl - 1e-9, zu + 1e-9))
        lo, hi = act(net.activation, zl), act(net.activation, zu)  # monotone only for relu: used for relu
    return out


def relu_exact_min(net: Net, c, label: int, eps: float, norm: str, max_patterns: int = 256):
    """The exact minimum of every target's margin over ball ∩ [0, 1]^d for a ReLU network (L-inf or L1), by
    enumerating activation patterns (those left open by interval bounds) with one LP per pattern and target.
    Returns (n_out,) minima (inf at the label) and the number of patterns, or None if there are too many."""
    d = net.d
    lo, hi = np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1)
    ib = interval_bounds(net, lo, hi)
    free = [np.flatnonzero((zl < 0) & (zu > 0)) for zl, zu in ib]
    n_free = sum(len(f) for f in free)
    if 2 ** n_free > max_patterns:
        return None
    # variables: x (d), plus t (d) for L1 with |x - c| <= t, sum t <= eps
    nv = d if norm == "linf" else 2 * d
    bounds = list(zip(lo, hi)) + ([(0, None)] * d if norm == "l1" else [])
    base_rows, base_rhs = [], []
    if norm == "l1":
        eye = np.eye(d)
        base_rows += [np.hstack([eye, -eye]), np.hstack([-eye, -eye]), np.hstack([np.zeros(d), np.ones(d)])[None]]
        base_rhs += [c, -c, [eps]]
    best = np.full(net.n_out, np.inf)
    for bits in itertools.product([0, 1], repeat=n_free):
        A, a0 = np.eye(d), np.zeros(d)
        rows, rhs, pos = list(base_rows), list(base_rhs), 0
        for (zl, zu), f, w, b in zip(ib, free, net.W[:-1], net.b[:-1]):
            on = zl >= 0
            on[f] = np.array(bits[pos:pos + len(f)], dtype=bool)
            pos += len(f)
            zA, z0 = w @ A, w @ a0 + b
            # on: z >= 0 -> -zA x <= z0; off: z <= 0 -> zA x <= -z0 (stable neurons too: region exactness)
            sgn = np.where(on, -1.0, 1.0)
            rows.append(np.hstack([sgn[:, None] * zA, np.zeros((len(on), nv - d))]))
            rhs.append(np.where(on, z0, -z0))
            A, a0 = zA * on[:, None], z0 * on
        yA, y0 = net.W[-1] @ A, net.W[-1] @ a0 + net.b[-1]
        Aub, bub = np.vstack(rows), np.concatenate([np.ravel(r) for r in rhs])
        for t in range(net.n_out):
            if t == label:
                continue
            obj = np.concatenate([yA[label] - yA[t], np.zeros(nv - d)])
            res = linprog(obj, A_ub=Aub, b_ub=bub, bounds=bounds, method="highs")
            if res.status == 0:
                best[t] = min(best[t], res.fun + y0[label] - y0[t])
            elif res.status != 2:  # not infeasible: the oracle cannot vouch for this pattern
                return None
    return best, 2 ** n_free


def grid_bracket(net: Net, c, label: int, eps: float, points_per_axis: int):
    """Certified bracket of every target's minimum margin over the L-inf box ∩ [0, 1]^d (d <= 2), from a grid
    whose cells' centres are evaluated: true min in [g - L h / 2, g] (h the cell's L2 diameter)."""
    d = net.d
    lo, hi = np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1)
    h_axis = (hi - lo) / points_per_axis
    axes = [lo[i] + h_axis[i] * (np.arange(points_per_axis) + 0.5) for i in range(d)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
    m = net.margins(pts, label)
    g = m.min(0)
    half = 0.5 * float(np.linalg.norm(h_axis))
    lower = np.array([g[t] - net.lipschitz_margin(label, t) * half if t != label else np.inf for t in range(net.n_out)])
    g[label] = np.inf
    return lower, g


def relu_null_segments(net: Net, c, eps: float, norm: str, starts):
    """Lower bounds on p* = max ||x - y|| over pairs of ball ∩ domain with f(x) = f(y) (ReLU): from each start,
    the segment through it along a null direction of its linear region's output map, kept inside the region and
    the set (f is affine on the region, so it is constant along the segment). Returns (best distance, x, y)."""
    best, pair = 0.0, None
    lo, hi = np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1)  # the ball's box ∩ domain; the ball is checked below
    for x in starts:
        A, a0, G, g0 = np.eye(net.d), np.zeros(net.d), [], []
        for w, b in zip(net.W[:-1], net.b[:-1]):
            zA, z0 = w @ A, w @ a0 + b
            z = zA @ x + z0
            on = z > 0
            G.append(np.where(on[:, None], zA, -zA))  # region: sign-kept rows, s * (zA x + z0) >= 0
            g0.append(np.where(on, z0, -z0))
            A, a0 = zA * on[:, None], z0 * on
        out = net.W[-1] @ A
        _, sv, vt = np.linalg.svd(out)
        rank = int((sv > 1e-10 * max(1.0, sv.max(initial=0.0))).sum())
        if rank >= net.d:
            continue
        G, g0 = np.vstack(G), np.concatenate(g0)
        for v in vt[rank:]:
            # t range: G (x + t v) + g0 >= 0, box, ball
            gv, gx = G @ v, G @ x + g0
            tmin, tmax = -np.inf, np.inf
            for coef, slack in ((gv, gx), (v, x - lo), (-v, hi - x)):
                pos, neg = coef > 1e-14, coef < -1e-14
                if neg.any():
                    tmax = min(tmax, np.min(slack[neg] / -coef[neg]))
                if pos.any():
                    tmin = max(tmin, np.max(-slack[pos] / coef[pos]))
            if not (np.isfinite(tmin) and np.isfinite(tmax)) or tmax <= tmin:
                continue
            tmin, tmax = tmin * (1 - 1e-9), tmax * (1 - 1e-9)
            # the ball: shrink the segment until both ends are inside
            for _ in range(60):
                xa, xb = x + tmin * v, x + tmax * v
                if dist(xa, c, norm) <= eps and dist(xb, c, norm) <= eps:
                    break
                if dist(xa, c, norm) > eps:
                    tmin *= 0.9
                if dist(xb, c, norm) > eps:
                    tmax *= 0.9
            else:
                continue
            xa, xb = x + tmin * v, x + tmax * v
            if not (inside(xa, c, eps, norm) and inside(xb, c, eps, norm)):
                continue
            if np.abs(net.forward(xa) - net.forward(xb)).max() > 1e-9 * (1 + np.abs(net.forward(xa)).max()):
                continue
            dd = float(dist(xa, xb, norm))
            if dd > best:
                best, pair = dd, (xa, xb)
    return best, pair


def sampled_pairs(net: Net, c, eps: float, norm: str, delta: float, rng, k: int = 600, fixed=None):
    """Lower bound on p*(delta) from sampled pairs with ||f(x) - f(y)||_inf <= delta (y = ``fixed`` if given)."""
    pts = sample(rng, c[None], np.array([eps]), norm, k)[0]
    ys = net.forward(pts)
    if fixed is not None:
        ok = np.abs(ys - net.forward(fixed)).max(-1) <= delta
        dd = dist(pts, fixed, norm)
        return float(np.max(np.where(ok, dd, 0.0)))
    diff = np.abs(ys[:, None] - ys[None]).max(-1)
    dd = dist(pts[:, None], pts[None], norm)
    return float(np.max(np.where(diff <= delta, dd, 0.0)))


# -- the campaign ---------------------------------------------------------------------------------------------


def slack(value: float, stated: float = 0.0) -> float:
    return stated + 1e-6 + 1e-5 * abs(value if np.isfinite(value) else 0.0)


class Campaign:
    def __init__(self, seed: int, out: Path | None) -> None:
        self.rng = np.random.default_rng(seed)
        self.out = out
        self.checked: Counter = Counter()
        self.by_oracle: Counter = Counter()
        self.disagreements: list[dict] = []
        self.errors: Counter = Counter()
        self.seconds: defaultdict = defaultdict(float)
        self.info: Counter = Counter()

    def disagree(self, net: Net, method: str, norm: str, x, label, eps, answer, evidence: dict) -> None:
        case = {"method": method, "norm": norm, "network": net.to_json(), "input": np.asarray(x).tolist(),
                "label": None if label is None else int(label), "eps": float(eps), "answer": answer,
                "evidence": {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in evidence.items()}}
        self.disagreements.append(case)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"case-{len(self.disagreements):04d}-{net.activation}-{method}.json").write_text(
                json.dumps(case, indent=1, default=float))
        print(f"!! DISAGREEMENT {method} {net.activation} {norm}: {evidence.get('what')}", flush=True)

    # -- checks of one robustness certificate -------------------------------------------------------

    def check_certificate(self, net: Net, engine_net, method: str, norm: str, x, label: int, eps: float, cert,
                          oracle_min, oracle_pts, exact=None, stated: float = 0.0) -> None:
        """Every certificate: its counterexample (falsified), its target lower bounds and overall lower bound
        against the attack's points, its upper bound and bracket against the exact minimum (if known)."""
        self.checked[(net.activation, method)] += 1
        ans = {"verdict": cert.verdict.value, "lower": cert.lower, "upper": cert.upper, "stage": cert.stage,
               "targets": [[t.target, t.lower, t.upper] for t in cert.targets]}
        v = cert.verdict.value
        if v == "falsified":
            cx = cert.counterexample
            ok = cx is not None and bool(inside(cx, x, eps, norm))
            m = net.margins(cx, label) if cx is not None else None
            worst = float(np.min(np.delete(m, label))) if m is not None else np.inf
            if not ok or worst > 1e-9 * (1 + abs(worst)):
                self.disagree(net, method, norm, x, label, eps, ans, {"what": "counterexample outside the set or "
                              "correctly classified", "counterexample": cx, "margin": worst, "inside": ok})
        if v == "verified" and not cert.lower > 0:
            self.disagree(net, method, norm, x, label, eps, ans, {"what": "verified with lower <= 0"})
        found = np.delete(oracle_min, label)
        fmin = float(found.min())
        if fmin < cert.lower - slack(cert.lower):
            t = int(np.argmin(np.where(np.arange(net.n_out) == label, np.inf, oracle_min)))
            self.disagree(net, method, norm, x, label, eps, ans, {"what": f"{'verified but ' if v == 'verified' else ''}"
                          "attack point below the certified lower bound", "point": oracle_pts[t], "margin": fmin,
                          "target": t})
        for tb in cert.targets:
            if oracle_min[tb.target] < tb.lower - slack(tb.lower):
                self.disagree(net, method, norm, x, label, eps, ans, {"what": "attack point below a target's lower "
                              "bound", "point": oracle_pts[tb.target], "margin": float(oracle_min[tb.target]),
                              "target": tb.target})
        self.by_oracle["attack"] += 1
        if exact is not None:
            lo_ex, hi_ex, kind = exact  # true min of min over targets in [lo_ex, hi_ex]
            self.by_oracle[kind] += 1
            if lo_ex > cert.upper + slack(cert.upper, stated) or hi_ex < cert.lower - slack(cert.lower, stated):
                self.disagree(net, method, norm, x, label, eps, ans, {"what": f"{kind}: true minimum outside the "
                              "engine's bracket", "oracle_lower": lo_ex, "oracle_upper": hi_ex})

    def check_bracket(self, net: Net, method: str, norm: str, x, label: int, target: int, eps: float, lower, upper,
                      point, oracle_min, oracle_pt, exact=None, stated: float = 0.0) -> None:
        """A bracket (lower, upper, point) of one target's minimum margin."""
        self.checked[(net.activation, method)] += 1
        ans = {"lower": lower, "upper": upper, "target": target, "point": None if point is None else np.asarray(point).tolist()}
        if point is not None:
            ok = bool(inside(point, x, eps, norm))
            m = float(net.margins(point, label)[target])
            if not ok or m > upper + slack(upper) or m < lower - slack(lower):
                self.disagree(net, method, norm, x, label, eps, ans, {"what": "the bracket's point is outside the set "
                              "or does not attain a margin inside the bracket", "margin": m, "inside": ok})
        if oracle_min < lower - slack(lower):
            self.disagree(net, method, norm, x, label, eps, ans, {"what": "attack point below the lower bound",
                          "point": oracle_pt, "margin": float(oracle_min)})
        self.by_oracle["attack"] += 1
        if exact is not None:
            lo_ex, hi_ex, kind = exact
            self.by_oracle[kind] += 1
            if lo_ex > upper + slack(upper, stated) or hi_ex < lower - slack(lower, stated):
                self.disagree(net, method, norm, x, label, eps, ans, {"what": f"{kind}: true minimum outside the "
                              "bracket", "oracle_lower": lo_ex, "oracle_upper": hi_ex})

    # -- one network's worth of queries ------------------------------------------------------------------

    def exact_for(self, net: Net, x, label: int, eps: float, norm: str, target: int | None = None):
        """(lower, upper, kind) on the minimum margin (over all targets, or one), from enumeration or the grid."""
        if net.activation == "relu" and norm in ("linf", "l1"):
            t0 = time.perf_counter()
            got = relu_exact_min(net, x, label, eps, norm)
            self.seconds["oracle:enumeration"] += time.perf_counter() - t0
            if got is None:
                return None
            best = got[0]
            v = float(best.min() if target is None else best[target])
            return v, v, "enumeration"
        if net.activation != "relu" and net.d <= 2 and norm == "linf":
            t0 = time.perf_counter()
            lo, hi = grid_bracket(net, x, label, eps, 1500 if net.d == 1 else 160)
            self.seconds["oracle:grid"] += time.perf_counter() - t0
            if target is None:
                return float(np.min(np.delete(lo, label))), float(np.min(np.delete(hi, label))), "grid"
            return float(lo[target]), float(hi[target]), "grid"
        return None

    def run_network(self, activation: str, deadline: float) -> None:
        from polycert.formulations import Network
        from polycert.formulations.cascade import CascadeSettings, certify_batch, minimum_margin_bb
        from polycert.formulations.robustness import certify, minimum_margin

        rng = self.rng
        small = rng.uniform() < 0.35 and activation != "relu"
        net = random_net(rng, activation, d=int(rng.integers(1, 3)) if small else None)
        engine_net = Network.from_arrays(net.W, net.b, activation, name=f"campaign-{activation}")
        norm = str(rng.choice(NORMS))
        n = 320  # inputs per network: the LP verdicts of all, the costlier methods on a few
        xs = rng.uniform(0.0, 1.0, size=(n, net.d))
        labels = np.argmax(net.forward(xs), axis=1)
        wrong = rng.uniform(size=n) < 0.05
        labels[wrong] = (labels[wrong] + 1) % net.n_out
        eps = np.exp(rng.uniform(np.log(1e-4), np.log(0.5), size=n))
        eps[: n // 10] = rng.choice([0.0, 1e-6, 1.0], size=n // 10)
        t0 = time.perf_counter()
        omin, opts = attack(net, xs, labels, eps, norm, rng)
        self.seconds["oracle:attack"] += time.perf_counter() - t0

        def engine(method, fn):
            t = time.perf_counter()
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - an engine error is reported, not fatal
                self.errors[f"{method}: {type(exc).__name__}: {str(exc)[:100]}"] += 1
                return None
            finally:
                self.seconds[method] += time.perf_counter() - t

        quick = dict(mip_time_limit=3.0, query_time_limit=4.0, lp_time_limit=2.0)
        # (name, method, answer, rows, extra settings): the cascade's stages and methods, the k-neuron LP (issue 20)
        # alone and as a stage with input branch and bound over it, and "both" (its LP and MIP answers of one run)
        plan = [("lp", "lp", "verdict", slice(0, n), {}), ("lp-bounds", "lp", "bounds", slice(0, 12), {}),
                ("mip", "mip", "verdict", slice(12, 44), {}), ("mip-bounds", "mip", "bounds", slice(44, 50), {}),
                ("klp", "klp", "verdict", slice(60, 84), {}), ("klp-bounds", "klp", "bounds", slice(84, 90), {}),
                ("mip+klp", "mip", "verdict", slice(90, 100), dict(klp=True, input_bab_nodes=8)),
                ("both", "both", "bounds", slice(100, 106), {})]
        for name, method, answer, rows, extra in plan:
            if time.monotonic() > deadline:
                return
            settings = CascadeSettings(answer=answer, seed=int(rng.integers(1 << 30)), **quick, **extra)
            certs = engine(name, lambda: certify_batch(engine_net, xs[rows], labels[rows], eps[rows], method=method,
                                                       settings=settings, norm=norm))
            if certs is None:
                continue
            for j, cert in zip(range(rows.start, rows.stop), certs):
                exact = None
                if name in ("mip-bounds", "lp-bounds", "klp-bounds", "both") or (name in ("mip", "klp") and j < rows.start + 4):
                    exact = self.exact_for(net, xs[j], labels[j], eps[j], norm)
                for label_name, one in ((("both:lp", cert[0]), ("both:mip", cert[1])) if method == "both" else ((name, cert),)):
                    self.check_certificate(net, engine_net, label_name, norm, xs[j], int(labels[j]), float(eps[j]), one,
                                           omin[j], opts[j], exact, stated=1e-4 if one.method == "mip" else 0.0)
        # one query alone, through robustness.certify
        j = 50
        cert = engine("certify", lambda: certify(engine_net, xs[j], int(labels[j]), float(eps[j]), method="mip",
                                                 norm=norm, time_limit=4.0))
        if cert is not None:
            self.check_certificate(net, engine_net, "certify", norm, xs[j], int(labels[j]), float(eps[j]), cert,
                                   omin[j], opts[j], self.exact_for(net, xs[j], labels[j], eps[j], norm), stated=1e-4)
        # single-target brackets: the MIP with refinement and branch and bound over segments
        for j, name in ((51, "minimum-margin"), (52, "segment-bab")):
            if time.monotonic() > deadline:
                return
            t = int((labels[j] + 1 + rng.integers(net.n_out - 1)) % net.n_out)
            if name == "minimum-margin":
                got = engine(name, lambda: minimum_margin(engine_net, xs[j], int(labels[j]), t, float(eps[j]),
                                                          norm=norm, time_limit=4.0))
            else:
                got = engine(name, lambda: minimum_margin_bb(engine_net, xs[j], int(labels[j]), t, float(eps[j]),
                                                             norm=norm, node_limit=500))
            if got is not None:
                self.check_bracket(net, name, norm, xs[j], int(labels[j]), t, float(eps[j]), *got, omin[j, t],
                                   opts[j, t], self.exact_for(net, xs[j], labels[j], eps[j], norm, target=t), stated=1e-4)
        if activation == "relu" and norm == "linf":
            self.relu_bab_queries(net, engine_net, xs[54:58], labels[54:58], eps[54:58], omin[54:58], opts[54:58])
        if time.monotonic() < deadline:
            self.invertibility(net, engine_net, norm, xs[58], float(eps[58]))
        if time.monotonic() < deadline and (activation == "relu" or net.d <= 2):
            self.invariance(net, engine_net, norm, xs[59], float(eps[59]))

    def relu_bab_queries(self, net, engine_net, xs, labels, eps, omin, opts) -> None:
        from polycert.formulations.bounds import symbolic_bounds
        from polycert.formulations.relu_bab import relu_bab

        for x, label, e, om, op in zip(xs, labels, eps, omin, opts):
            t = int((label + 1) % net.n_out)
            lo, hi = np.clip(x - e, 0, 1), np.clip(x + e, 0, 1)

            def go():
                return relu_bab(engine_net, lo, hi, symbolic_bounds(engine_net, lo, hi), int(label), t, time_limit=3.0)

            res = None
            t0 = time.perf_counter()
            try:
                res = go()
            except Exception as exc:  # noqa: BLE001
                self.errors[f"relu-bab: {type(exc).__name__}: {str(exc)[:100]}"] += 1
            self.seconds["relu-bab"] += time.perf_counter() - t0
            if res is None:
                continue
            self.checked[(net.activation, "relu-bab")] += 1
            ans = {"status": res.status, "lower": res.lower, "target": t}
            if res.status == "falsified":
                m = float(net.margins(res.x, label)[t]) if res.x is not None else np.inf
                if res.x is None or not inside(res.x, x, e, "linf") or m > 1e-9:
                    self.disagree(net, "relu-bab", "linf", x, label, e, ans, {"what": "bad counterexample",
                                  "point": res.x, "margin": m})
            if om[t] < res.lower - slack(res.lower):
                self.disagree(net, "relu-bab", "linf", x, label, e, ans, {"what": "attack point below the lower bound",
                              "point": op[t], "margin": float(om[t])})
            if res.status == "verified" and om[t] <= 0:
                self.disagree(net, "relu-bab", "linf", x, label, e, ans, {"what": "verified but attack finds margin <= 0",
                              "point": op[t], "margin": float(om[t])})
            self.by_oracle["attack"] += 1
            exact = self.exact_for(net, x, label, e, "linf", target=t)
            if exact is not None:
                self.by_oracle["enumeration"] += 1
                if exact[0] < res.lower - slack(res.lower) or (res.status == "verified" and exact[0] <= 0):
                    self.disagree(net, "relu-bab", "linf", x, label, e, ans, {"what": "exact minimum below the bound",
                                  "exact": exact[0]})

    def invertibility(self, net: Net, engine_net, norm: str, c, radius: float) -> None:
        from polycert.formulations.invertibility import injectivity, preimage

        relu = net.activation == "relu"
        if not relu and net.d > 2:
            return
        delta = 0.0 if relu else 1e-3
        kind = str(self.rng.choice(["injectivity", "preimage"]))
        fn = injectivity if kind == "injectivity" else preimage
        t0 = time.perf_counter()
        try:
            cert = fn(engine_net, c, radius, norm=norm, domain=(0.0, 1.0), delta=None if relu else delta,
                      time_limit=4.0, max_rounds=8)
        except Exception as exc:  # noqa: BLE001
            self.errors[f"{kind}: {type(exc).__name__}: {str(exc)[:100]}"] += 1
            return
        finally:
            self.seconds[kind] += time.perf_counter() - t0
        self.checked[(net.activation, kind)] += 1
        ans = {"verdict": cert.verdict.value, "lower": cert.lower, "upper": cert.upper, "delta": delta}
        w = cert.extra.get("witness")
        if w is not None and w.get("valid"):
            x, y = np.asarray(w["x"], float), np.asarray(w["y"], float)
            yc = c if kind == "preimage" else y
            ok = bool(inside(x, c, radius, norm)) and (kind == "preimage" and np.allclose(y, c, atol=1e-12)
                                                      or bool(inside(y, c, radius, norm)))
            diff = float(np.abs(net.forward(x) - net.forward(yc)).max())
            dd = float(dist(x, yc, norm))
            if not ok or diff > delta + 1e-6 + 1e-6 or dd < cert.lower - slack(cert.lower):
                self.disagree(net, kind, norm, c, None, radius, ans, {"what": "witness pair outside the ball, outputs "
                              "differ, or its distance is below the stated lower bound", "x": x, "y": yc,
                              "output_difference": diff, "distance": dd, "inside": ok})
        if cert.verdict.value == "falsified" and not cert.lower > 1e-4:
            self.disagree(net, kind, norm, c, None, radius, ans, {"what": "falsified without a lower bound > tolerance"})
        t0 = time.perf_counter()
        starts = [c] + list(sample(self.rng, c[None], np.array([radius]), norm, 40)[0]) if kind == "injectivity" else [c]
        if relu:
            best, pair = relu_null_segments(net, c, radius, norm, starts)
            if kind == "preimage" and pair is not None:  # y = c: the farther end from c
                xa, xb = pair
                best = float(max(dist(xa, c, norm), dist(xb, c, norm)))
                pair = (xa if dist(xa, c, norm) >= dist(xb, c, norm) else xb, c)
            what = "null-direction segment"
        else:
            best = sampled_pairs(net, c, radius, norm, delta, self.rng, fixed=c if kind == "preimage" else None)
            pair, what = None, "sampled pair"
        self.seconds["oracle:invertibility"] += time.perf_counter() - t0
        self.by_oracle["invertibility"] += 1
        if best > cert.upper + slack(cert.upper, 1e-4):
            self.disagree(net, kind, norm, c, None, radius, ans, {"what": f"{what} with equal outputs farther apart "
                          "than the upper bound", "distance": best, "pair": None if pair is None else [p.tolist() for p in pair]})


    def invariance(self, net: Net, engine_net, norm: str, c, radius: float) -> None:
        """Decision invariance: the farthest x of ball(c, radius) ∩ domain whose predicted class stays c's.
        Its witness is re-checked (inside, margin > 0, its distance); sampled points of the ball that keep the
        class give lower bounds on the farthest distance, which must not exceed the engine's upper bound."""
        from polycert.formulations.invertibility import decision_invariance

        label = int(np.argmax(net.forward(c)))
        t0 = time.perf_counter()
        try:
            cert = decision_invariance(engine_net, c, radius=radius, norm=norm, domain=(0.0, 1.0), time_limit=4.0,
                                       max_rounds=8)
        except Exception as exc:  # noqa: BLE001
            self.errors[f"invariance: {type(exc).__name__}: {str(exc)[:100]}"] += 1
            return
        finally:
            self.seconds["invariance"] += time.perf_counter() - t0
        self.checked[(net.activation, "invariance")] += 1
        ans = {"verdict": cert.verdict.value, "lower": cert.lower, "upper": cert.upper, "label": label}
        w = cert.extra.get("witness")
        if w is not None and w.get("valid"):
            x = np.asarray(w["x"], float)
            m = net.margins(x, label)
            worst = float(np.min(np.delete(m, label)))
            dd = float(dist(x, c, norm))
            if not inside(x, c, radius, norm) or worst < -1e-9 or dd < cert.lower - slack(cert.lower):
                self.disagree(net, "invariance", norm, c, label, radius, ans, {"what": "witness outside the ball, "
                              "its class changed, or its distance below the stated lower bound", "x": x,
                              "margin": worst, "distance": dd})
        t0 = time.perf_counter()
        pts = sample(self.rng, c[None], np.array([radius]), norm, 2000)[0]
        keep = np.argmax(net.forward(pts), axis=1) == label
        m = net.margins(pts, label)
        m[:, label] = np.inf
        keep &= m.min(1) > 1e-9  # strictly first, as the engine's witness must be
        best = float(dist(pts[keep], c, norm).max()) if keep.any() else 0.0
        self.seconds["oracle:invariance"] += time.perf_counter() - t0
        self.by_oracle["invariance"] += 1
        if best > cert.upper + slack(cert.upper, 1e-4):
            far = pts[keep][np.argmax(dist(pts[keep], c, norm))]
            self.disagree(net, "invariance", norm, c, label, radius, ans, {"what": "a sampled point keeps the class "
                          "farther from the centre than the upper bound", "point": far, "distance": best})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="folder for disagreement cases (JSON)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import polycert.formulations  # noqa: F401  (import time not counted)

    camp = Campaign(args.seed, args.out)
    print(f"# bench/soundness.py  seed {args.seed}  budget {args.minutes} min  {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    start = time.monotonic()
    deadline = start + 60.0 * args.minutes
    networks = 0
    while time.monotonic() < deadline:
        camp.run_network(ACTIVATIONS[networks % len(ACTIVATIONS)], deadline)
        networks += 1
    wall = time.monotonic() - start
    total = sum(camp.checked.values())
    methods = sorted({m for _, m in camp.checked})
    print(f"{'activation':<10}" + "".join(f"{m:>15}" for m in methods) + f"{'total':>9}")
    for a in ACTIVATIONS:
        row = [camp.checked[(a, m)] for m in methods]
        print(f"{a:<10}" + "".join(f"{v:>15}" for v in row) + f"{sum(row):>9}")
    print(f"{'all':<10}" + "".join(f"{sum(camp.checked[(a, m)] for a in ACTIVATIONS):>15}" for m in methods) + f"{total:>9}")
    print(f"# networks {networks}; checked queries {total} in {wall:.0f} s = {total / wall:.1f}/s"
          f" (~{3600 * total / wall:.0f} per hour); oracle checks {dict(camp.by_oracle)}")
    print("# seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(camp.seconds.items(), key=lambda kv: -kv[1])))
    if camp.errors:
        print("# engine errors (not disagreements):")
        for k, v in camp.errors.most_common():
            print(f"#   {v} x {k}")
    print(f"DISAGREEMENTS: {len(camp.disagreements)}" + (f" (cases in {args.out})" if args.out and camp.disagreements else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
