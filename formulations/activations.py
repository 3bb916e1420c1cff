"""Element-wise activations, as a registry.

Each activation carries what the sound encoders need and nothing they must special-case:

* ``value`` and ``slope`` (first derivative), vectorised over NumPy arrays, float64;
* ``inflections``: the sorted points where the curvature changes sign, and ``curvature``: the sign of
  the second derivative on each region between them (+1 convex, -1 concave, 0 affine). Between two
  consecutive inflections the slope is monotone, which is what makes :meth:`Activation.slope_solutions`
  (where does the slope equal s?) a bisection;
* ``kinks``: points where the activation is not differentiable (ReLU's 0);
* ``stationary``: points where the slope is zero (GELU's minimum at -0.75179...), so that
  :meth:`Activation.image` is the *exact* minimum and maximum on an interval. Sampling the endpoints and
  the midpoint is not sound: it misses GELU's minimum -0.16997 on [-1, 0].

Adding an activation is adding one :class:`Activation` to :data:`REGISTRY`; the envelope, piecewise and
bound code reads only these fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import erf, expit

from .errors import UnsupportedOperatorError

Array = np.ndarray
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _bisect(fun: Callable[[Array], Array], lo: Array, hi: Array, iterations: int = 64) -> Array:
    """Vectorised bisection for a root of ``fun`` that changes sign between ``lo`` and ``hi``.

    64 halvings of a float64 interval reach adjacent floats; the caller guarantees a sign change.
    """
    lo = np.array(lo, dtype=np.float64, copy=True)
    hi = np.array(hi, dtype=np.float64, copy=True)
    f_lo = fun(lo)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        f_mid = fun(mid)
        same = np.sign(f_mid) == np.sign(f_lo)
        lo = np.where(same, mid, lo)
        f_lo = np.where(same, f_mid, f_lo)
        hi = np.where(same, hi, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Activation:
    """An element-wise activation with the analytic facts the sound encoders need."""

    name: str
    value: Callable[[Array], Array]
    slope: Callable[[Array], Array]
    inflections: tuple[float, ...] = ()
    curvature: tuple[int, ...] = (0,)
    kinks: tuple[float, ...] = ()
    stationary: tuple[float, ...] = ()
    piecewise_linear: bool = False
    description: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if len(self.curvature) != len(self.inflections) + 1:
            raise ValueError(f"{self.name}: one curvature sign per region between inflections")

    def __call__(self, x: Array) -> Array:
        return self.value(np.asarray(x, dtype=np.float64))

    # -- regions -------------------------------------------------------------------------------
    def region_edges(self) -> Array:
        """Edges of the curvature regions, -inf and +inf included."""
        return np.array((-np.inf, *self.inflections, np.inf), dtype=np.float64)

    def curvature_regions(self, lower: float, upper: float) -> list[tuple[float, float, int]]:
        """The pieces of [lower, upper] on which the curvature has one sign, as (lo, hi, sign)."""
        edges = self.region_edges()
        if lower == upper:
            k = int(np.searchsorted(edges, lower, side="right")) - 1
            return [(float(lower), float(upper), int(self.curvature[k]))]
        out = []
        for k, sign in enumerate(self.curvature):
            lo, hi = max(lower, edges[k]), min(upper, edges[k + 1])
            if lo < hi:
                out.append((float(lo), float(hi), int(sign)))
        return out

    # -- exact image -----------------------------------------------------------------------------
    def image(self, lower: Array, upper: Array) -> tuple[Array, Array]:
        """Exact minimum and maximum of the activation on [lower, upper], element-wise.

        A continuous function attains its extremes at the endpoints, at kinks or at stationary points
        inside the interval; we evaluate exactly those (no sampling).
        """
        lower = np.asarray(lower, dtype=np.float64)
        upper = np.asarray(upper, dtype=np.float64)
        f_l, f_u = self.value(lower), self.value(upper)
        lo, hi = np.minimum(f_l, f_u), np.maximum(f_l, f_u)
        for p in (*self.stationary, *self.kinks):
            inside = (lower <= p) & (p <= upper)
            fp = float(self.value(np.float64(p)))
            lo = np.where(inside, np.minimum(lo, fp), lo)
            hi = np.where(inside, np.maximum(hi, fp), hi)
        return lo, hi

    # -- where the slope equals s ----------------------------------------------------------------
    def slope_solutions(self, s: Array, lower: Array, upper: Array) -> Array:
        """Points x in [lower, upper] with slope(x) == s, one column per curvature region.

        Inside one curvature region the slope is monotone, so each region holds at most one solution
        (for strictly curved regions); columns are NaN where a region holds none. These, with the
        endpoints and kinks, are the only candidates for the extremes of ``f(x) - s*x`` on the interval,
        which is how envelope lines are certified (design.md, "Envelopes").
        """
        s, lower, upper = np.broadcast_arrays(
            np.asarray(s, dtype=np.float64),
            np.asarray(lower, dtype=np.float64),
            np.asarray(upper, dtype=np.float64),
        )
        edges = self.region_edges()
        out = np.full(s.shape + (len(self.curvature),), np.nan)
        for k, sign in enumerate(self.curvature):
            if sign == 0:
                continue  # affine piece: residual is affine there, extremes at its ends
            lo = np.maximum(lower, edges[k])
            hi = np.minimum(upper, edges[k + 1])
            ok = lo < hi
            g_lo = np.where(ok, self.slope(np.where(ok, lo, 0.0)) - s, 0.0)
            g_hi = np.where(ok, self.slope(np.where(ok, hi, 0.0)) - s, 0.0)
            ok &= g_lo * g_hi <= 0.0
            if not ok.any():
                continue
            root = _bisect(lambda x, s=s[ok]: self.slope(x) - s, lo[ok], hi[ok])
            col = out[..., k]
            col[ok] = root
        return out

    def residual_extremes(self, s: Array, c: Array, lower: Array, upper: Array) -> tuple[Array, Array]:
        """Exact min and max of ``f(x) - (s*x + c)`` over [lower, upper], element-wise.

        The residual is differentiable except at kinks, so its extremes lie at the endpoints, the kinks
        inside, or where ``slope(x) == s``.
        """
        s, c, lower, upper = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (s, c, lower, upper)))

        def residual(x: Array) -> Array:
            return self.value(x) - (s * x + c)

        r_l, r_u = residual(lower), residual(upper)
        r_min, r_max = np.minimum(r_l, r_u), np.maximum(r_l, r_u)
        for p in self.kinks:
            inside = (lower <= p) & (p <= upper)
            r_p = residual(np.full_like(lower, p))
            r_min = np.where(inside, np.minimum(r_min, r_p), r_min)
            r_max = np.where(inside, np.maximum(r_max, r_p), r_max)
        sols = self.slope_solutions(s, lower, upper)
        for k in range(sols.shape[-1]):
            x = sols[..., k]
            have = ~np.isnan(x)
            r_x = residual(np.where(have, x, lower))
            r_min = np.where(have, np.minimum(r_min, r_x), r_min)
            r_max = np.where(have, np.maximum(r_max, r_x), r_max)
        return r_min, r_max


# -- the activations -----------------------------------------------------------------------------


def _gelu(x: Array) -> Array:
    return 0.5 * x * (1.0 + erf(x / _SQRT2))


def _gelu_slope(x: Array) -> Array:
    return 0.5 * (1.0 + erf(x / _SQRT2)) + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def _sigmoid_slope(x: Array) -> Array:
    s = expit(x)
    return s * (1.0 - s)


def _silu(x: Array) -> Array:
    return x * expit(x)


def _silu_slope(x: Array) -> Array:
    s = expit(x)
    return s * (1.0 + x * (1.0 - s))


def _tanh_slope(x: Array) -> Array:
    t = np.tanh(x)
    return 1.0 - t * t


def _root(fun: Callable[[float], float], lo: float, hi: float) -> float:
    return float(_bisect(lambda x: fun(x), np.float64(lo), np.float64(hi), iterations=200))


# GELU: f''(x) = phi(x) (2 - x^2), so the curvature changes sign at +-sqrt(2): concave, convex, concave.
# Its minimum solves Phi(x) + x phi(x) = 0 on [-1, -0.5]; bisection to adjacent floats gives
# -0.7517915247..., where GELU = -0.1699684..., matching the design's -0.75179 / -0.16997.
GELU_ARGMIN = _root(lambda x: _gelu_slope(x), -1.0, -0.5)
GELU_MIN = float(_gelu(np.float64(GELU_ARGMIN)))

# SiLU: f''(x) = s(1-s)(2 - x tanh(x/2)), zero where x tanh(x/2) = 2 (x = +-2.39936...);
# its minimum solves 1 + x(1 - s(x)) = 0 (x = -1.27846...).
_SILU_INFLECTION = _root(lambda x: 2.0 - x * math.tanh(x / 2.0), 1.0, 4.0)
SILU_ARGMIN = _root(lambda x: _silu_slope(x), -2.0, -1.0)

GELU = Activation(
    name="gelu",
    value=_gelu,
    slope=_gelu_slope,
    inflections=(-_SQRT2, _SQRT2),
    curvature=(-1, 1, -1),
    stationary=(GELU_ARGMIN,),
    description="exact GELU x*Phi(x) (erf form)",
)
RELU = Activation(
    name="relu",
    value=lambda x: np.maximum(x, 0.0),
    slope=lambda x: (np.asarray(x) > 0).astype(np.float64),
    curvature=(0,),
    kinks=(0.0,),
    piecewise_linear=True,
    description="max(0, x)",
)
SIGMOID = Activation(
    name="sigmoid",
    value=expit,
    slope=_sigmoid_slope,
    inflections=(0.0,),
    curvature=(1, -1),
    description="1 / (1 + exp(-x))",
)
TANH = Activation(
    name="tanh",
    value=np.tanh,
    slope=_tanh_slope,
    inflections=(0.0,),
    curvature=(1, -1),
    description="tanh(x)",
)
SILU = Activation(
    name="silu",
    value=_silu,
    slope=_silu_slope,
    inflections=(-_SILU_INFLECTION, _SILU_INFLECTION),
    curvature=(-1, 1, -1),
    stationary=(SILU_ARGMIN,),
    description="x * sigmoid(x) (swish)",
    aliases=("swish",),
)
IDENTITY = Activation(
    name="identity",
    value=lambda x: np.asarray(x, dtype=np.float64),
    slope=lambda x: np.ones_like(np.asarray(x, dtype=np.float64)),
    curvature=(0,),
    piecewise_linear=True,
    description="linear (no activation), used for output layers",
    aliases=("linear", "none"),
)

REGISTRY: dict[str, Activation] = {}


def register(activation: Activation) -> Activation:
    """Add an activation to the registry (under its name and its aliases)."""
    for key in (activation.name, *activation.aliases):
        REGISTRY[key.lower()] = activation
    return activation


for _act in (GELU, RELU, SIGMOID, TANH, SILU, IDENTITY):
    register(_act)


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up by name; an unknown name is a clear error listing the known ones."""
    if isinstance(name, Activation):
        return name
    try:
        return REGISTRY[str(name).lower()]
    except KeyError:
        known = ", ".join(sorted({a.name for a in REGISTRY.values()}))
        raise UnsupportedOperatorError(f"unknown activation {name!r}; known: {known}") from None


def names() -> list[str]:
    """Canonical names of the registered activations."""
    return sorted({a.name for a in REGISTRY.values()})


# -- regions (where a neuron operates) ---------------------------------------------------------------


def activation_regions(act: Activation) -> tuple[Array, tuple[str, ...]]:
    """Edges (inner, sorted) and names of the regions used to describe where a neuron operates.

    The edges are the inflection points and stationary points: between two of them the activation is
    monotone with one curvature sign. GELU: ``-sqrt 2`` (inflection), -0.7518 (minimum), ``sqrt 2``.
    """
    edges = np.array(sorted({*act.inflections, *act.stationary, *act.kinks}), dtype=np.float64)
    if act.name == "gelu" and edges.size == 3:
        names = ("tail", "dip", "rise", "linear")
    else:
        bounds = ["-inf", *(f"{e:.3g}" for e in edges), "inf"]
        names = tuple(f"[{a}, {b})" for a, b in zip(bounds[:-1], bounds[1:]))
    return edges, names


def region_of(act: Activation, z: Array) -> Array:
    """Index of the region (:func:`activation_regions`) holding each pre-activation value."""
    edges, _ = activation_regions(act)
    return np.searchsorted(edges, np.asarray(z, dtype=np.float64), side="right")
