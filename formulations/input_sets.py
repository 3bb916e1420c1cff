"""Input sets: a norm ball around an input, intersected with the input domain (design.md, "Queries").

The set of a robustness query is ``S = {x : ||x - c||_p <= eps} ∩ [lo, hi]^d`` for ``p`` in
{inf, 1, 2} and a domain box (pixels in [0, 1] by default). Everything here is a small pure function over
float64 arrays, batched over rows where the attack and the cascade need it; :class:`InputSet` is the
value object a query carries.

Decisions (documented because callers rely on them):

* A centre outside the domain is *allowed* (a pixel stored as 1.0000001 is common): the set is still
  ball ∩ domain, and it is only rejected when that intersection is empty.
* :meth:`InputSet.box` is the smallest box containing ``S``, rounded *outward* by one ulp so that it
  contains every real point of ``S`` (it is what sound bounds start from). For L1/L2 it is exact too:
  coordinate ``i`` can move by what the budget leaves after the other coordinates have moved into the
  domain (``eps - ||r_{-i}||_1`` or ``sqrt(eps^2 - ||r_{-i}||_2^2)`` with ``r = c - clip(c)``); with the
  centre inside the domain this is the L-inf box of radius eps clipped to the domain.
* :meth:`InputSet.project` is the *exact* Euclidean projection onto ``S`` for all three norms, rounded
  *inward*, so that its points pass ``contains(x, tol=0)``. L-inf: clipping to the box. L2 and L1: the
  KKT conditions of ``min ||y - x||^2`` over ball ∩ box give ``y(λ) = clip((x + λc)/(1 + λ))`` (L2) and
  ``y(λ) = clip(c + soft(x - c, λ))`` (L1; Duchi et al., ICML 2008, with the box folded in because the
  problem is separable once λ is fixed); ``||y(λ) - c||`` is non-increasing in λ, so λ is found by
  bisection and the feasible end of the bracket is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError

Array = np.ndarray

NORMS = ("linf", "l1", "l2")
_NORM_ALIASES = {
    "linf": "linf", "inf": "linf", "l_inf": "linf", "l-inf": "linf", "infinity": "linf",
    "l1": "l1", "1": "l1", "l_1": "l1",
    "l2": "l2", "2": "l2", "l_2": "l2",
}
# Bisection on the multiplier λ: 200 halvings of [0, λ_max] reach adjacent floats (the loop stops there).
_PROJECTION_ITERATIONS = 200


def canonical_norm(norm: str | float | int) -> str:
    """``"linf"``, ``"l1"`` or ``"l2"`` for any accepted spelling (also ``np.inf``, 1, 2)."""
    if isinstance(norm, (int, float, np.integer, np.floating)) and not isinstance(norm, bool):
        key = "inf" if np.isinf(norm) else str(int(norm)) if float(norm).is_integer() else str(norm)
    else:
        key = str(norm).strip().lower()
    try:
        return _NORM_ALIASES[key]
    except KeyError:
        raise InvalidInputError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}") from None


def distance(x: Array, center: Array, norm: str) -> Array:
    """``||x - c||_p`` along the last axis (broadcasting rows)."""
    diff = np.abs(np.asarray(x, dtype=np.float64) - np.asarray(center, dtype=np.float64))
    if norm == "linf":
        return diff.max(axis=-1, initial=0.0)
    if norm == "l1":
        return diff.sum(axis=-1)
    return np.sqrt(np.einsum("...i,...i->...", diff, diff))


def dual_norm(rows: Array, norm: str) -> Array:
    """``||w||_q`` along the last axis for the dual exponent q of ``norm`` (1/p + 1/q = 1).

    ``max_{||x - c||_p <= eps} w.x = w.c + eps * ||w||_q`` (Hölder), which is how bounds use a ball.
    """
    a = np.abs(np.asarray(rows, dtype=np.float64))
    if norm == "linf":
        return a.sum(axis=-1)
    if norm == "l1":
        return a.max(axis=-1, initial=0.0)
    return np.sqrt(np.einsum("...i,...i->...", a, a))


# -- validation ------------------------------------------------------------------------------------


def _as_domain(domain, d: int) -> tuple[Array, Array]:
    try:
        lo, hi = domain
    except (TypeError, ValueError):
        raise InvalidInputError(f"domain must be a pair (lo, hi), got {domain!r}") from None
    try:
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (d,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (d,)).copy()
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"domain bounds must be numbers or arrays of length {d}: {exc}") from None
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise InvalidInputError("domain bounds hold NaN")
    if (lo > hi).any():
        i = int(np.argmax(lo > hi))
        raise InvalidInputError(f"domain is empty: lower bound {lo[i]} > upper bound {hi[i]} (coordinate {i})")
    return lo, hi


def _as_centers(centers) -> Array:
    try:
        c = np.asarray(centers, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"centre is not numeric: {exc}") from None
    if c.size == 0:
        raise InvalidInputError("centre is empty")
    if not np.isfinite(c).all():
        raise InvalidInputError("centre holds NaN or infinite values")
    return c


def _as_eps(eps, n: int | None = None) -> Array:
    try:
        e = np.asarray(eps, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"eps is not numeric: {exc}") from None
    if np.isnan(e).any() or np.isinf(e).any():
        raise InvalidInputError(f"eps must be finite, got {eps!r}")
    if (e < 0).any():
        raise InvalidInputError(f"eps must be >= 0, got {float(e.min())}")
    if n is not None:
        if e.ndim > 1 or (e.ndim == 1 and e.shape[0] != n):
            raise InvalidInputError(f"eps must be a scalar or have one value per input ({n}), got shape {e.shape}")
        e = np.broadcast_to(e, (n,)).copy()
    return e


def validate_balls(centers, eps, norm, domain) -> tuple[Array, Array, str, Array, Array]:
    """Check a batch of balls and return ``(centers (n,d), eps (n,), norm, dlo (d,), dhi (d,))``.

    Raises :class:`InvalidInputError` naming the problem, including an empty ball ∩ domain.
    """
    c = _as_centers(centers)
    if c.ndim != 2:
        raise InvalidInputError(f"centres must have shape (n, d), got {c.shape}")
    e = _as_eps(eps, c.shape[0])
    norm = canonical_norm(norm)
    dlo, dhi = _as_domain(domain, c.shape[1])
    gap = distance(c, np.clip(c, dlo, dhi), norm)
    if (gap > e).any():
        i = int(np.argmax(gap > e))
        raise InvalidInputError(
            f"the {norm} ball of radius {e[i]} around input {i} does not meet the domain "
            f"(its centre is {gap[i]} away from it)")
    return c, e, norm, dlo, dhi


# -- batched geometry ------------------------------------------------------------------------------


def _radius_budget(centers: Array, eps: Array, norm: str, dlo: Array, dhi: Array) -> Array:
    """How far each coordinate can move from the centre inside ball ∩ domain, shape (n, d)."""
    e = eps[:, None]
    if norm == "linf":
        return np.broadcast_to(e, centers.shape)
    r = np.abs(centers - np.clip(centers, dlo, dhi))  # the move each coordinate must make anyway
    if norm == "l1":
        rest = r.sum(axis=1, keepdims=True) - r
        return np.maximum(e - rest, 0.0)
    r2 = r * r
    rest = r2.sum(axis=1, keepdims=True) - r2
    return np.sqrt(np.maximum(e * e - rest, 0.0))


def ball_boxes(centers: Array, eps: Array, norm: str, dlo: Array, dhi: Array) -> tuple[Array, Array]:
    """Smallest boxes containing each ball ∩ domain, rounded outward (sound start for bounds)."""
    budget = _radius_budget(centers, eps, norm, dlo, dhi)
    if norm != "linf":
        budget = budget * (1.0 + 8.0 * np.finfo(np.float64).eps)  # sqrt / sums rounded outward
    lo = np.nextafter(centers - budget, -np.inf)
    hi = np.nextafter(centers + budget, np.inf)
    return np.clip(lo, dlo, dhi), np.clip(hi, dlo, dhi)


def inner_boxes(centers: Array, eps: Array, dlo: Array, dhi: Array) -> tuple[Array, Array]:
    """The L-inf ball ∩ domain rounded *inward*: every float in it passes ``|x - c| <= eps`` in float."""
    e = eps[:, None]
    lo, hi = centers - e, centers + e
    for _ in range(4):  # fl(c - eps) can land one ulp outside; step inward until the float check holds
        bad_lo, bad_hi = centers - lo > e, hi - centers > e
        if not (bad_lo.any() or bad_hi.any()):
            break
        lo = np.where(bad_lo, np.nextafter(lo, np.inf), lo)
        hi = np.where(bad_hi, np.nextafter(hi, -np.inf), hi)
    lo = np.clip(lo, dlo, dhi)
    hi = np.clip(hi, dlo, dhi)
    # A centre outside the domain by exactly eps leaves one point: keep the box non-empty.
    return np.minimum(lo, hi), np.maximum(lo, hi)


def _bisect_multiplier(points_at, x: Array, centers: Array, eps: Array, norm: str, lam_hi: Array) -> Array:
    """Smallest λ in [0, lam_hi] (per row) with ``||y(λ) - c|| <= eps``; returns ``y`` at the feasible end."""
    lo = np.zeros_like(lam_hi)
    hi = lam_hi.copy()
    for _ in range(_PROJECTION_ITERATIONS):
        mid = 0.5 * (lo + hi)
        if not ((mid > lo) & (mid < hi)).any():
            break
        feasible = distance(points_at(mid), centers, norm) <= eps
        hi = np.where(feasible, mid, hi)
        lo = np.where(feasible, lo, mid)
    return points_at(hi)


def project_points(x: Array, centers: Array, eps: Array, norm: str, dlo: Array, dhi: Array) -> Array:
    """Exact Euclidean projection of each row of ``x`` onto its ball ∩ domain (rounded inward).

    ``x``, ``centers``: (n, d); ``eps``: (n,). See the module docstring for the KKT argument.
    """
    x = np.asarray(x, dtype=np.float64)
    if norm == "linf":
        lo, hi = inner_boxes(centers, eps, dlo, dhi)
        return np.clip(x, lo, hi)
    y0 = np.clip(x, dlo, dhi)
    inside = distance(y0, centers, norm) <= eps
    if inside.all():
        return y0
    xs, cs, es = x[~inside], centers[~inside], eps[~inside]
    anchor = np.clip(cs, dlo, dhi)  # y(λ -> inf); the nearest domain point to the centre
    if norm == "l2":
        def points_at(lam: Array) -> Array:
            t = lam[:, None]
            return np.clip((xs + t * cs) / (1.0 + t), dlo, dhi)

        # y(λ) - anchor shrinks like 1/(1+λ); when the centre lies on the sphere's edge of the domain the
        # root is at λ = inf, so the bracket grows until y(λ_hi) is feasible (and ends at the anchor).
        lam_hi = np.full(xs.shape[0], 1.0)
    else:
        def points_at(lam: Array) -> Array:
            d = xs - cs
            return np.clip(cs + np.sign(d) * np.maximum(np.abs(d) - lam[:, None], 0.0), dlo, dhi)

        lam_hi = np.abs(xs - cs).max(axis=1)  # at λ = max|x - c| the point is clip(c)
    for _ in range(64):  # 2**64 brings y(λ) within 1e-19 of the anchor; beyond that, the anchor itself
        ok = distance(points_at(lam_hi), cs, norm) <= es
        if ok.all():
            break
        lam_hi = np.where(ok, lam_hi, 2.0 * lam_hi)
    y = _bisect_multiplier(points_at, xs, cs, es, norm, lam_hi)
    still = distance(y, cs, norm) > es
    if still.any():  # only reachable through rounding at lam = inf: fall back to the anchor, which is in S
        y[still] = anchor[still]
    out = y0.copy()
    out[~inside] = y
    return out


def l1_ball_projection(delta: Array, eps: Array) -> Array:
    """Euclidean projection of each row of ``delta`` onto ``{||v||_1 <= eps}`` (Duchi et al., ICML 2008, Fig. 1).

    Sort |v| descending, find the largest ρ with ``u_ρ > (Σ_{j<=ρ} u_j - eps)/ρ``, shrink by that threshold.
    """
    mag = np.abs(delta)
    inside = mag.sum(axis=1) <= eps
    u = -np.sort(-mag, axis=1)
    css = np.cumsum(u, axis=1) - eps[:, None]
    ranks = np.arange(1, delta.shape[1] + 1)
    rho = np.maximum((u * ranks > css).sum(axis=1), 1)  # the condition holds exactly for j <= ρ
    theta = np.maximum(css[np.arange(delta.shape[0]), rho - 1] / rho, 0.0)
    out = np.sign(delta) * np.maximum(mag - theta[:, None], 0.0)
    return np.where(inside[:, None], delta, out)


def fast_project(x: Array, centers: Array, eps: Array, norm: str, dlo: Array, dhi: Array) -> Array:
    """A cheap projection for iterative attacks: onto the ball, then clipped to the domain.

    Exact for L-inf. For L1/L2 with the centre inside the domain the result is *in* the set (clipping
    moves each coordinate towards the centre, so the norm can only shrink) but not always the nearest
    point; rows whose centre lies outside the domain use :func:`project_points`. Not rounded inward:
    callers that need ``contains(tol=0)`` finish with :func:`project_points`.
    """
    x = np.asarray(x, dtype=np.float64)
    if norm == "linf":
        e = eps[:, None]
        return np.clip(np.clip(x, centers - e, centers + e), dlo, dhi)
    delta = x - centers
    if norm == "l2":
        size = np.sqrt(np.einsum("ij,ij->i", delta, delta))
        delta = delta * np.minimum(1.0, eps / np.where(size > 0, size, 1.0))[:, None]
    else:
        delta = l1_ball_projection(delta, eps)
    y = np.clip(centers + delta, dlo, dhi)
    outside = ((centers < dlo) | (centers > dhi)).any(axis=1)
    if outside.any():
        y[outside] = project_points(x[outside], centers[outside], eps[outside], norm, dlo, dhi)
    return y


def contains_points(x: Array, centers: Array, eps: Array, norm: str, dlo: Array, dhi: Array,
                    tol: float = 1e-9) -> Array:
    """Row-wise membership in ball ∩ domain, with absolute tolerance ``tol``; bool (n,)."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x).all(axis=-1)
    in_domain = ((x >= dlo - tol) & (x <= dhi + tol)).all(axis=-1)
    in_ball = distance(x, centers, norm) <= eps + tol
    return finite & in_domain & in_ball


def sample_points(centers: Array, eps: Array, norm: str, dlo: Array, dhi: Array, per_center: int,
                  rng: np.random.Generator) -> Array:
    """``per_center`` random points in each ball ∩ domain, shape (n, per_center, d).

    Uniform in the ball (L-inf: uniform box; L2: Gaussian direction with radius ``eps * U^(1/d)``; L1:
    signed Dirichlet(1,...,1) scaled by ``eps * U^(1/d)``), then projected onto the set, which for a
    centre inside the domain is just clipping. Meant for tests and attack restarts, not as a proof.
    """
    n, d = centers.shape
    shape = (n, per_center, d)
    e = eps[:, None, None]
    if norm == "linf":
        step = rng.uniform(-1.0, 1.0, size=shape)
    else:
        radius = rng.uniform(size=(n, per_center, 1)) ** (1.0 / d)
        if norm == "l2":
            g = rng.standard_normal(size=shape)
            direction = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-300)
        else:
            w = rng.exponential(size=shape)
            direction = rng.choice((-1.0, 1.0), size=shape) * w / np.maximum(w.sum(axis=-1, keepdims=True), 1e-300)
        step = radius * direction
    raw = centers[:, None, :] + e * step
    flat = project_points(raw.reshape(n * per_center, d), np.repeat(centers, per_center, axis=0),
                          np.repeat(eps, per_center), norm, dlo, dhi)
    return flat.reshape(shape)


# -- the value object ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class InputSet:
    """``{x : ||x - center||_norm <= eps} ∩ [domain_lo, domain_hi]^d``.

    ``domain`` is a pair of scalars or of length-d arrays. Raises :class:`InvalidInputError` for a NaN or
    infinite centre, a negative / NaN eps, an unknown norm, an empty domain, or an empty intersection.
    """

    center: Array
    eps: float
    norm: str = "linf"
    domain: tuple = (0.0, 1.0)

    def __post_init__(self) -> None:
        c = _as_centers(self.center)
        if c.ndim != 1:
            raise InvalidInputError(f"centre must be a vector, got shape {c.shape}")
        e = _as_eps(self.eps)
        if e.ndim != 0:
            raise InvalidInputError(f"eps must be a scalar, got shape {e.shape}")
        c2, e2, norm, dlo, dhi = validate_balls(c[None, :], e.reshape(1), self.norm, self.domain)
        c.setflags(write=False)
        dlo.setflags(write=False)
        dhi.setflags(write=False)
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "eps", float(e))
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "domain", (dlo, dhi))

    # -- shape -------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    def _rows(self) -> tuple[Array, Array]:
        return self.center[None, :], np.array([self.eps])

    # -- geometry ----------------------------------------------------------------------------------
    def box(self) -> tuple[Array, Array]:
        """(lo, hi): the smallest box containing the set, rounded outward by one ulp (module docstring)."""
        c, e = self._rows()
        lo, hi = ball_boxes(c, e, self.norm, *self.domain)
        return lo[0], hi[0]

    def contains(self, x: Array, tol: float = 1e-9) -> bool | Array:
        """Whether ``x`` (d,) lies in the set up to ``tol``; for a batch (n, d) a bool array (n,)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim or x.ndim not in (1, 2):
            raise InvalidInputError(f"point has shape {x.shape}; the input set has dimension {self.dim}")
        rows = np.atleast_2d(x)
        n = rows.shape[0]
        out = contains_points(rows, np.broadcast_to(self.center, rows.shape), np.full(n, self.eps),
                              self.norm, *self.domain, tol=tol)
        return bool(out[0]) if x.ndim == 1 else out

    def project(self, x: Array) -> Array:
        """Exact Euclidean projection onto the set (rounded inward); (d,) or a batch (n, d)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim or x.ndim not in (1, 2):
            raise InvalidInputError(f"point has shape {x.shape}; the input set has dimension {self.dim}")
        if not np.isfinite(x).all():
            raise InvalidInputError("cannot project a point holding NaN or infinite values")
        rows = np.atleast_2d(x)
        n = rows.shape[0]
        out = project_points(rows, np.broadcast_to(self.center, rows.shape).copy(), np.full(n, self.eps),
                             self.norm, *self.domain)
        return out[0] if x.ndim == 1 else out

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> Array:
        """``n`` random points of the set, shape (n, d) (see :func:`sample_points`)."""
        if int(n) < 0:
            raise InvalidInputError(f"number of samples must be >= 0, got {n}")
        c, e = self._rows()
        return sample_points(c, e, self.norm, *self.domain, int(n), np.random.default_rng(rng))[0]

    def __repr__(self) -> str:
        return f"InputSet(dim={self.dim}, eps={self.eps}, norm={self.norm!r})"
