"""Sound pre-activation bounds: interval (IBP) and symbolic back-substitution (DeepPoly / CROWN).

For a network ``z_j = W_j a_{j-1} + b_j``, ``a_j = f_j(z_j)`` (``a_{-1} = x``) and an input box
``lo <= x <= hi``, every function here returns, per layer, a :class:`LayerBounds` that contains the
pre-activation ``z_j`` of *every* input of the box (of ball ∩ box when a ball is given). Everything is
batched over input boxes (arrays of shape (n, d)); the single-input functions call the batched ones.

* :func:`interval_bounds` — interval bound propagation (Gowal et al. 2018): ``W+ l + W- u + b``; the
  activation's interval image is :meth:`Activation.image`, its exact extremes (never sampled endpoints:
  GELU's minimum -0.16997 at -0.75179 lies inside [-1, 0]).
* :func:`symbolic_bounds` — back-substitution (DeepPoly, Singh et al., POPL 2019; CROWN, Zhang et al.,
  NeurIPS 2018). Each hidden neuron with bounds [l, u] is relaxed by one certified lower and one upper
  line ``a_lo z + b_lo <= f(z) <= a_up z + b_up`` (:func:`formulations.envelopes.linear_bounds`). A
  linear function ``Λ a_j + c`` is bounded below by replacing ``a_j`` with the lower line where
  ``Λ >= 0`` and with the upper line where ``Λ < 0`` (Zhang et al., Thm 3.2), then ``z_j`` by its affine
  map, down to the input, where ``min_{lo<=x<=hi} Λ x = Λ+ lo + Λ- hi``. Upper bounds are lower bounds
  of ``-Λ``. Layer by layer the result is intersected with the IBP step from the previous layer's
  (already intersected) bounds, so it is never looser than :func:`interval_bounds`.
* :func:`margin_bounds` — bounds on ``logit[label] - logit[k]``, back-substituting the difference
  ``(e_label - e_k)^T z_L`` itself (tighter than subtracting logit bounds, with which it is intersected).

Balls. Bounds start from the box; for an L1/L2 (or L-inf) ball ``||x - c||_p <= eps`` the input step can
also use Hölder's inequality, ``min Λ x = Λ c - eps ||Λ||_q`` over the ball; since the set is ball ∩ box,
the larger of the two lower bounds is sound. ``ball=`` turns this on (every back-substituted row, not just
the first layer, is concretised both ways).

Outward rounding. Every returned bound accounts for float64 rounding: each matrix product, dot product
and sum carries the standard a-priori bound ``|fl(x.y) - x.y| <= γ_k |x|.|y|`` (Higham, *Accuracy and
Stability of Numerical Algorithms*, §3.1; γ_k = k u / (1 - k u), doubled here to cover the rounding of the
error terms themselves); in back-substitution the error of a rounded ``Λ`` is turned into a constant with
the magnitudes ``max(|l|, |u|)`` of the variables it multiplies. The result is moved one ulp outward.
Non-exact activations (erf, exp, tanh) get a relative+absolute widening of 16 u on their images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .activations import Activation
from .envelopes import linear_bounds
from .errors import InvalidInputError, UnsoundAnswerError
from .input_sets import InputSet, canonical_norm, dual_norm
from .network import Network

Array = np.ndarray

_U = np.finfo(np.float64).eps / 2.0  # unit roundoff 2^-53
# Activations whose value is computed exactly in float64 (max(z, 0) and z itself); others are widened.
_EXACT_VALUES = frozenset({"relu", "identity"})
# Rows x width x 8 bytes of one back-substitution matrix per chunk of a batch (keeps memory bounded).
_CHUNK_BYTES = 64 * 2**20


def _gamma(k: int) -> float:
    """2 γ_k: the bound on the relative error of a k-term dot product, doubled for the error terms."""
    return 2.0 * k * _U / (1.0 - k * _U)


@dataclass(frozen=True, eq=False)
class LayerBounds:
    """Bounds ``lower <= z <= upper`` on one layer's pre-activation: shape (n_out,) or, batched, (n, n_out)."""

    lower: Array
    upper: Array

    def __post_init__(self) -> None:
        lower = np.array(self.lower, dtype=np.float64, copy=True)
        upper = np.array(self.upper, dtype=np.float64, copy=True)
        if lower.shape != upper.shape:
            raise InvalidInputError(f"lower bounds of shape {lower.shape} do not match upper of shape {upper.shape}")
        if np.isnan(lower).any() or np.isnan(upper).any():
            raise InvalidInputError("layer bounds hold NaN")
        lower.setflags(write=False)
        upper.setflags(write=False)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def width(self) -> Array:
        return self.upper - self.lower

    def contains(self, z: Array, tol: float = 0.0) -> Array:
        """Whether ``lower - tol <= z <= upper + tol`` element-wise."""
        z = np.asarray(z, dtype=np.float64)
        return (self.lower - tol <= z) & (z <= self.upper + tol)

    def row(self, i: int) -> "LayerBounds":
        """The bounds of the i-th input of a batch."""
        return LayerBounds(self.lower[i], self.upper[i])


def unstable(bounds: LayerBounds) -> Array:
    """Indices of the neurons whose pre-activation interval strictly contains 0 (ReLU's kink)."""
    return np.flatnonzero((bounds.lower < 0.0) & (bounds.upper > 0.0))


# -- validation ------------------------------------------------------------------------------------


def _check_boxes(network: Network, lo: Array, hi: Array, batched: bool) -> tuple[Array, Array]:
    try:
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"input box is not numeric: {exc}") from None
    want = 2 if batched else 1
    d = network.input_size
    for name, arr in (("lower", lo), ("upper", hi)):
        if arr.ndim != want or arr.shape[-1] != d:
            shape = "(n, %d)" % d if batched else "(%d,)" % d
            raise InvalidInputError(f"{name} input bounds have shape {arr.shape}; expected {shape}")
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"{name} input bounds hold NaN or infinite values")
    if lo.shape != hi.shape:
        raise InvalidInputError(f"lower input bounds {lo.shape} and upper {hi.shape} differ in shape")
    if (lo > hi).any():
        idx = np.argwhere(lo > hi)[0]
        raise InvalidInputError(f"input box is empty: lower {lo[tuple(idx)]} > upper {hi[tuple(idx)]} at {tuple(idx)}")
    return (lo, hi) if batched else (lo[None, :], hi[None, :])


def _check_ball(ball, lo: Array) -> tuple[Array, Array, str] | None:
    """``(centers (n,d), eps (n,), norm)`` from an InputSet or a tuple; None where no ball helps."""
    if ball is None:
        return None
    if isinstance(ball, InputSet):
        centers, eps, norm = ball.center[None, :], np.array([ball.eps]), ball.norm
    else:
        try:
            centers, eps, norm = ball
        except (TypeError, ValueError):
            raise InvalidInputError("ball must be an InputSet or a tuple (centers, eps, norm)") from None
        centers = np.asarray(centers, dtype=np.float64)
        eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), (lo.shape[0],))
        norm = canonical_norm(norm)
    if centers.shape != lo.shape:
        raise InvalidInputError(f"ball centres have shape {centers.shape}; the boxes have shape {lo.shape}")
    if not (np.isfinite(centers).all() and np.isfinite(eps).all()) or (eps < 0).any():
        raise InvalidInputError("ball centres must be finite and radii finite and >= 0")
    return centers, eps, norm


def _check_initial(initial: Sequence[LayerBounds] | None, network: Network, n: int) -> list | None:
    if initial is None:
        return None
    if len(initial) != len(network.layers):
        raise InvalidInputError(f"initial bounds for {len(initial)} layers; the network has {len(network.layers)}")
    out = []
    for k, (b, layer) in enumerate(zip(initial, network.layers)):
        if b is None:
            out.append(None)
            continue
        try:
            out.append((np.broadcast_to(b.lower, (n, layer.n_out)), np.broadcast_to(b.upper, (n, layer.n_out))))
        except ValueError:
            raise InvalidInputError(f"initial bounds of layer {k} have shape {b.lower.shape}; "
                                    f"expected ({layer.n_out},) or ({n}, {layer.n_out})") from None
    return out


# -- rounding --------------------------------------------------------------------------------------


def _outward(lower: Array, upper: Array) -> tuple[Array, Array]:
    return np.nextafter(lower, -np.inf), np.nextafter(upper, np.inf)


def _abs_max(lower: Array, upper: Array) -> Array:
    return np.maximum(np.abs(lower), np.abs(upper))


def _matvec(mat: Array, vec: Array) -> Array:
    """``(n, r, m) x (n, m) -> (n, r)`` (one BLAS call per input)."""
    return np.matmul(mat, vec[:, :, None])[:, :, 0]


# -- interval steps --------------------------------------------------------------------------------


def affine_interval(weight: Array, bias: Array, lower: Array, upper: Array) -> tuple[Array, Array]:
    """Sound bounds of ``W a + b`` over the boxes ``lower <= a <= upper`` (n, m_in), rounded outward."""
    w_pos, w_neg = np.maximum(weight, 0.0), np.minimum(weight, 0.0)
    lo = lower @ w_pos.T + upper @ w_neg.T + bias
    hi = upper @ w_pos.T + lower @ w_neg.T + bias
    err = _gamma(weight.shape[1] + 2) * (_abs_max(lower, upper) @ np.abs(weight).T + np.abs(bias))
    return _outward(lo - err, hi + err)


def activation_interval(act: Activation, lower: Array, upper: Array) -> tuple[Array, Array]:
    """Sound bounds of ``f(z)`` for ``lower <= z <= upper``: the exact image, widened for rounding."""
    if act.name == "identity":
        return lower, upper
    f_lo, f_hi = act.image(lower, upper)
    if act.name in _EXACT_VALUES:
        return f_lo, f_hi
    # erf / exp / tanh are accurate to a few ulp of the result; GELU's 1 + erf(z/√2) cancels for z < 0,
    # leaving an absolute error of a few u·|z|. 16 u (|f| + |z|) covers both.
    scale = 16.0 * _U * (_abs_max(f_lo, f_hi) + _abs_max(lower, upper)) + np.finfo(np.float64).tiny
    return _outward(f_lo - scale, f_hi + scale)


def _ball_interval(weight: Array, bias: Array, ball: tuple[Array, Array, str]) -> tuple[Array, Array]:
    """Hölder bounds ``W c + b ± eps ||w_i||_q`` of the first layer over the balls, rounded outward."""
    centers, eps, norm = ball
    mid = centers @ weight.T + bias
    rad = eps[:, None] * dual_norm(weight, norm)[None, :]
    k = weight.shape[1] + 2
    err = _gamma(k) * (np.abs(centers) @ np.abs(weight).T + np.abs(bias) + rad)
    return _outward(mid - rad - err, mid + rad + err)


# -- the propagated state ----------------------------------------------------------------------------


@dataclass
class _Chain:
    """What back-substitution needs per layer j, all of shape (n, m_j): pre-activation bounds, the
    relaxation lines (non-identity layers), the post-activation bounds, and magnitudes for rounding."""

    lower: list
    upper: list
    lines: list  # (a_lo, b_lo, a_up, b_up) or None for identity layers
    post_lower: list
    post_upper: list

    def z_abs(self, j: int) -> Array:
        return _abs_max(self.lower[j], self.upper[j])

    def a_abs(self, j: int) -> Array:
        return _abs_max(self.post_lower[j], self.post_upper[j])

    def append(self, act: Activation, lower: Array, upper: Array, with_lines: bool) -> None:
        self.lower.append(lower)
        self.upper.append(upper)
        p_lo, p_hi = activation_interval(act, lower, upper)
        self.post_lower.append(p_lo)
        self.post_upper.append(p_hi)
        self.lines.append(_lines(act, lower, upper) if with_lines and act.name != "identity" else None)

    def layer_bounds(self) -> list[LayerBounds]:
        return [LayerBounds(lo, hi) for lo, hi in zip(self.lower, self.upper)]


def _lines(act: Activation, lower: Array, upper: Array) -> tuple[Array, Array, Array, Array]:
    shape = lower.shape
    return tuple(v.reshape(shape) for v in linear_bounds(act, lower.ravel(), upper.ravel()))


def _intersect(lo1: Array, hi1: Array, lo2: Array, hi2: Array, where: str) -> tuple[Array, Array]:
    lo, hi = np.maximum(lo1, lo2), np.minimum(hi1, hi2)
    if (lo > hi).any():
        idx = tuple(np.argwhere(lo > hi)[0])
        raise UnsoundAnswerError(
            f"{where}: bounds that should all contain the true range are disjoint at {idx}: "
            f"[{lo1[idx]}, {hi1[idx]}] vs [{lo2[idx]}, {hi2[idx]}]")
    return lo, hi


# -- back-substitution -------------------------------------------------------------------------------


def _back_substitute(network: Network, chain: _Chain, start: int, lam: Array, const: Array,
                     lo: Array, hi: Array, ball: tuple[Array, Array, str] | None,
                     err: Array | None = None) -> Array:
    """Sound lower bound of ``lam @ a_start + const`` over the input boxes (and balls), shape (n, r).

    ``lam`` (n, r, m_start) acts on the post-activation ``a_start``; ``start = -1`` means on ``x``.
    ``err`` collects the rounding of every step as a constant (module docstring, "Outward rounding").
    """
    err = np.zeros_like(const) if err is None else err
    for j in range(start, -1, -1):
        layer = network.layers[j]
        lines = chain.lines[j]
        if lines is not None:  # relax a_j = f(z_j) by the line matching the sign of each coefficient
            a_lo, b_lo, a_up, b_up = lines
            pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
            lam = pos * a_lo[:, None, :] + neg * a_up[:, None, :]
            const = const + _matvec(pos, b_lo) + _matvec(neg, b_up)
            m = lam.shape[2]
            err = err + _U * 2.0 * _matvec(np.abs(lam), chain.z_abs(j)) \
                + _gamma(m + 2) * (_matvec(pos, np.abs(b_lo)) - _matvec(neg, np.abs(b_up)) + np.abs(const))
        # z_j = W_j a_{j-1} + b_j
        weight, bias = layer.weight, layer.bias
        m, p = weight.shape
        prev_abs = chain.a_abs(j - 1) if j > 0 else _abs_max(lo, hi)
        abs_lam = np.abs(lam)
        const = const + lam @ bias
        err = err + _gamma(m + 2) * (abs_lam @ np.abs(bias) + np.abs(const)
                                     + _matvec(abs_lam, prev_abs @ np.abs(weight).T))
        n, r, _ = lam.shape
        lam = (lam.reshape(n * r, m) @ weight).reshape(n, r, p)
    return _concretise(lam, const, err, lo, hi, ball)


def _concretise(lam: Array, const: Array, err: Array, lo: Array, hi: Array,
                ball: tuple[Array, Array, str] | None) -> Array:
    """``min lam x + const`` over the box (and ball) minus the rounding collected so far, rounded down."""
    d = lam.shape[2]
    pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
    abs_lam = np.abs(lam)
    box = _matvec(pos, lo) + _matvec(neg, hi) + const
    box = box - _gamma(d + 2) * (_matvec(abs_lam, _abs_max(lo, hi)) + np.abs(const))
    if ball is not None:
        centers, eps, norm = ball
        rad = eps[:, None] * dual_norm(lam, norm)
        hold = _matvec(lam, centers) - rad + const
        hold = hold - _gamma(d + 2) * (_matvec(abs_lam, np.abs(centers)) + rad + np.abs(const))
        box = np.maximum(box, hold)
    return np.nextafter(box - err, -np.inf)


# -- public: interval bounds -----------------------------------------------------------------------------


def _interval_chain(network: Network, lo: Array, hi: Array, ball) -> _Chain:
    chain = _Chain([], [], [], [], [])
    a_lo, a_hi = lo, hi
    for k, layer in enumerate(network.layers):
        l, u = affine_interval(layer.weight, layer.bias, a_lo, a_hi)
        if k == 0 and ball is not None and ball[2] != "linf":
            l, u = _intersect(l, u, *_ball_interval(layer.weight, layer.bias, ball), "interval bounds, layer 0")
        chain.append(layer.activation, l, u, with_lines=False)
        a_lo, a_hi = chain.post_lower[-1], chain.post_upper[-1]
    return chain


def interval_bounds_batch(network: Network, lo: Array, hi: Array, *, ball=None) -> list[LayerBounds]:
    """IBP pre-activation bounds for each box ``lo[i] <= x <= hi[i]`` (n, d); arrays of shape (n, n_out).

    ``ball=(centers, eps, norm)`` adds the Hölder bound on the first layer (module docstring, "Balls").
    """
    lo, hi = _check_boxes(network, lo, hi, batched=True)
    return _interval_chain(network, lo, hi, _check_ball(ball, lo)).layer_bounds()


def interval_bounds(network: Network, lo: Array, hi: Array, *, ball: InputSet | None = None) -> list[LayerBounds]:
    """IBP pre-activation bounds of every layer over the box ``lo <= x <= hi`` (Gowal et al. 2018)."""
    lo2, hi2 = _check_boxes(network, lo, hi, batched=False)
    return [b.row(0) for b in _interval_chain(network, lo2, hi2, _check_ball(ball, lo2)).layer_bounds()]


# -- public: symbolic bounds -----------------------------------------------------------------------------


def _chunks(network: Network, n: int, rows: int) -> list[slice]:
    width = max(network.sizes)
    per = max(1, int(_CHUNK_BYTES // (8 * rows * width)))
    return [slice(i, min(i + per, n)) for i in range(0, n, per)]


def _slice_ball(ball, s: slice):
    return None if ball is None else (ball[0][s], ball[1][s], ball[2])


def _symbolic_chain(network: Network, lo: Array, hi: Array, initial, ball) -> _Chain:
    chain = _Chain([], [], [], [], [])
    last = len(network.layers) - 1
    for k, layer in enumerate(network.layers):
        a_lo, a_hi = (lo, hi) if k == 0 else (chain.post_lower[k - 1], chain.post_upper[k - 1])
        l, u = affine_interval(layer.weight, layer.bias, a_lo, a_hi)
        if k == 0:
            # Back-substituting W_0 to the box is IBP's first step; only the ball can add to it.
            if ball is not None and ball[2] != "linf":
                l, u = _intersect(l, u, *_ball_interval(layer.weight, layer.bias, ball), "symbolic bounds, layer 0")
        else:
            m = layer.n_out
            lam = np.broadcast_to(np.concatenate([layer.weight, -layer.weight]), (lo.shape[0], 2 * m, layer.n_in))
            const = np.broadcast_to(np.concatenate([layer.bias, -layer.bias]), (lo.shape[0], 2 * m))
            val = _back_substitute(network, chain, k - 1, lam, const, lo, hi, ball)
            l, u = _intersect(l, u, val[:, :m], -val[:, m:], f"symbolic bounds, layer {k}")
        if initial is not None and initial[k] is not None:
            l, u = _intersect(l, u, *initial[k], f"initial bounds, layer {k}")
        # The output layer is relaxed only when it is not affine (margin_bounds needs it then).
        chain.append(layer.activation, l, u, with_lines=(k < last or layer.activation.name != "identity"))
    return chain


def symbolic_bounds_batch(network: Network, lo: Array, hi: Array, *,
                          initial: Sequence[LayerBounds] | None = None, ball=None) -> list[LayerBounds]:
    """DeepPoly/CROWN bounds for each box ``lo[i] <= x <= hi[i]`` (n, d); arrays of shape (n, n_out).

    ``initial``: known sound bounds per layer (None entries allowed; shape (n_out,) or (n, n_out)), which
    are intersected in before each layer is relaxed. ``ball=(centers (n,d), eps (n,), norm)``: see
    "Balls". The batch is processed in chunks that keep each back-substitution matrix near 64 MiB.
    """
    lo, hi = _check_boxes(network, lo, hi, batched=True)
    ball = _check_ball(ball, lo)
    init = _check_initial(initial, network, lo.shape[0])
    parts = []
    for s in _chunks(network, lo.shape[0], 2 * max(network.sizes[1:])):
        init_s = None if init is None else [None if b is None else (b[0][s], b[1][s]) for b in init]
        parts.append(_symbolic_chain(network, lo[s], hi[s], init_s, _slice_ball(ball, s)).layer_bounds())
    return [LayerBounds(np.concatenate([p[k].lower for p in parts]), np.concatenate([p[k].upper for p in parts]))
            for k in range(len(network.layers))]


def symbolic_bounds(network: Network, lo: Array, hi: Array, *, initial: Sequence[LayerBounds] | None = None,
                    ball: InputSet | None = None) -> list[LayerBounds]:
    """DeepPoly/CROWN back-substitution bounds of every layer over ``lo <= x <= hi`` (module docstring)."""
    lo2, hi2 = _check_boxes(network, lo, hi, batched=False)
    ball2 = None if ball is None else (ball.center[None, :], np.array([ball.eps]), ball.norm)
    return [b.row(0) for b in symbolic_bounds_batch(network, lo2, hi2, initial=initial, ball=ball2)]


# -- public: margins ---------------------------------------------------------------------------------------


def check_labels(labels, n: int, n_out: int) -> Array:
    """Labels as int64 (n,), each in 0..n_out-1 (a scalar is repeated); :class:`InvalidInputError` otherwise."""
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer) and not (
            np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
        raise InvalidInputError(f"labels must be {n} integers, got {np.asarray(labels)!r}")
    arr = arr.astype(np.int64)
    if ((arr < 0) | (arr >= n_out)).any():
        raise InvalidInputError(f"label {int(arr[(arr < 0) | (arr >= n_out)][0])} is outside 0..{n_out - 1}")
    return arr


def _chain_from_bounds(network: Network, bounds: Sequence[LayerBounds], n: int) -> _Chain:
    init = _check_initial(bounds, network, n)
    if any(b is None for b in init):
        raise InvalidInputError("bounds must be given for every layer")
    chain = _Chain([], [], [], [], [])
    last = len(network.layers) - 1
    for k, (layer, (l, u)) in enumerate(zip(network.layers, init)):
        if (l > u).any():
            raise InvalidInputError(f"bounds of layer {k} have lower > upper")
        chain.append(layer.activation, np.array(l), np.array(u),
                     with_lines=(k < last or layer.activation.name != "identity"))
    return chain


def _margin_chunk(network: Network, chain: _Chain, lo: Array, hi: Array, labels: Array, ball) -> tuple[Array, Array]:
    n = lo.shape[0]
    n_out = network.output_size
    last = len(network.layers) - 1
    spec = np.eye(n_out)[labels][:, None, :] - np.eye(n_out)[None, :, :]  # (n, n_out, n_out): e_label - e_k
    spec = np.concatenate([spec, -spec], axis=1)  # lower bounds of the rows and of their negations
    out_layer = network.layers[last]
    if chain.lines[last] is None:  # affine output: start from C W_L over a_{L-1}
        lam = spec @ out_layer.weight
        const = spec @ out_layer.bias
        # Each entry is one difference w_label - w_k (rounded once): u |Λ| max|a| plus u |c|.
        prev_abs = chain.a_abs(last - 1) if last > 0 else _abs_max(lo, hi)
        err = _gamma(2) * (_matvec(np.abs(lam), prev_abs) + np.abs(const))
        val = _back_substitute(network, chain, last - 1, lam, const, lo, hi, ball, err)
    else:
        val = _back_substitute(network, chain, last, spec.copy(), np.zeros(spec.shape[:2]), lo, hi, ball)
    lower, upper = val[:, :n_out], -val[:, n_out:]
    # Intersect with the difference of the output bounds: l_label - u_k <= margin_k <= u_label - l_k.
    out_lo, out_hi = chain.post_lower[last], chain.post_upper[last]
    rows = np.arange(n)
    d_lo = np.nextafter(out_lo[rows, labels][:, None] - out_hi, -np.inf)
    d_hi = np.nextafter(out_hi[rows, labels][:, None] - out_lo, np.inf)
    lower, upper = _intersect(lower, upper, d_lo, d_hi, "margin bounds")
    lower[rows, labels] = 0.0
    upper[rows, labels] = 0.0
    return lower, upper


def margin_bounds_batch(network: Network, lo: Array, hi: Array, labels, *,
                        bounds: Sequence[LayerBounds] | None = None, ball=None) -> tuple[Array, Array]:
    """Bounds on ``logit[label_i] - logit[k]`` over each box, shapes (n, n_out) (0 where k == label).

    ``bounds``: per-layer bounds of shape (n, n_out) (e.g. from :func:`symbolic_bounds_batch`, or
    tightened by LP); computed symbolically when omitted.
    """
    lo, hi = _check_boxes(network, lo, hi, batched=True)
    ball = _check_ball(ball, lo)
    n = lo.shape[0]
    labels = check_labels(labels, n, network.output_size)
    lowers, uppers = [], []
    for s in _chunks(network, n, 2 * max(network.sizes[1:])):
        ball_s = _slice_ball(ball, s)
        if bounds is None:
            chain = _symbolic_chain(network, lo[s], hi[s], None, ball_s)
        else:
            sliced = [LayerBounds(*(np.broadcast_to(v, (n, b.lower.shape[-1]))[s] for v in (b.lower, b.upper)))
                      for b in bounds]
            chain = _chain_from_bounds(network, sliced, s.stop - s.start)
        lower, upper = _margin_chunk(network, chain, lo[s], hi[s], labels[s], ball_s)
        lowers.append(lower)
        uppers.append(upper)
    return np.concatenate(lowers), np.concatenate(uppers)


def margin_bounds(network: Network, lo: Array, hi: Array, label: int, *,
                  bounds: Sequence[LayerBounds] | None = None, ball: InputSet | None = None) -> tuple[Array, Array]:
    """Bounds (lower (n_out,), upper (n_out,)) on ``logit[label] - logit[k]`` over ``lo <= x <= hi``.

    The difference is back-substituted directly (CROWN's specification matrix), then intersected with
    the difference of the logit bounds; entry ``label`` is 0.
    """
    lo2, hi2 = _check_boxes(network, lo, hi, batched=False)
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool):
        raise InvalidInputError(f"label must be an integer, got {label!r}")
    ball2 = None if ball is None else (ball.center[None, :], np.array([ball.eps]), ball.norm)
    lower, upper = margin_bounds_batch(network, lo2, hi2, np.array([label]), bounds=bounds, ball=ball2)
    return lower[0], upper[0]
