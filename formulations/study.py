"""The original study's experiments as pure functions (issue 3, items 5-7), and its flawed envelope.

* :func:`logit_maxima` — the LP as a classifier (item 5): for each class ``c`` the sound maximum of
  ``logit[c]`` over the LP envelope polytope of an eps-ball; the predicted class is the argmax of these
  maxima (:func:`lp_prediction`).
* :func:`system_level` — the study's system-level problem (item 6)::

      max  logit[c] - t - lambda ||x - x0||_1
      s.t. t >= logit[k]  for all k != c,   (x, logits) in the network's polytope over the input set,

  with ``||x - x0||_1 = sum(p + n)``, ``x - x0 = p - n``, ``p, n >= 0`` (exact at the optimum since
  lambda >= 0). At the optimum ``t = max_{k != c} logit[k]``, so the objective is the classification margin
  of ``c`` minus the L1 cost of moving away from ``x0``. LP mode gives a sound upper bound; MIP mode with
  refinement brackets the true optimum to the tolerance.
* :func:`neuron_patterns` — first-layer weight images, activations per digit, second-layer weights (item 7).

The last section reconstructs the **study's unsound envelope** (seed README: "its tangent/secant choice
and its interval bounds miss the GELU minimum"). It is our reconstruction from that description, labelled
``flawed_*``, used only to measure how many of its "verified" answers the exact MIP or an attack refutes;
it never produces a certificate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .backends import default_lp_solver, default_mip_solver, solve
from .backends.base import SolveParameters, Termination
from .bounds import symbolic_bounds
from .encoding import LP, MIP, NetworkEncoding, encode_affine, encode_input_set, encode_network
from .bounds import LayerBounds
from .errors import InvalidInputError, SolverError, UnsoundAnswerError
from .input_sets import InputSet
from .model import INF, ConstraintTag, Model, Sense, VariableTag
from .network import Network
from .refinement import minimize_with_refinement, sound_lower
from .signatures import sound_upper

Array = np.ndarray


def _input_set(network: Network, x: Array, eps: float, domain) -> InputSet:
    x = network.check_input(x)
    if x.ndim != 1:
        raise InvalidInputError(f"expected one input of length {network.input_size}, got shape {x.shape}")
    if not np.isfinite(eps) or eps < 0:
        raise InvalidInputError(f"eps must be a finite number >= 0, got {eps!r}")
    return InputSet(x, float(eps), domain=domain)


# -- the LP as a classifier (item 5) -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LogitMaxima:
    """Per class c: ``upper[c]`` a sound upper bound on max logit[c] over the input set (LP dual bound),
    ``achieved[c]`` the real network's logit[c] at the LP optimum's input ``points[c]``."""

    upper: Array
    achieved: Array
    points: Array


def logit_maxima(network: Network, x: Array, eps: float, *, solver: str | None = None, n_lines: int = 3,
                 domain: tuple[float, float] = (0.0, 1.0)) -> LogitMaxima:
    """Maximise every logit over the LP envelope polytope of the L-inf eps-ball around ``x`` (one model).

    Raises SolverError when an LP has no optimum, UnsoundAnswerError when a bound is below a logit that
    the real network attains at that LP's own input.
    """
    input_set = _input_set(network, x, eps, domain)
    lo, hi = input_set.box()
    model = Model("lp-classifier")
    enc = encode_network(model, network, input_set, symbolic_bounds(network, lo, hi), mode=LP, n_lines=n_lines)
    solver = solver or default_lp_solver()
    n_out = network.output_size
    upper, achieved, points = np.empty(n_out), np.empty(n_out), np.empty((n_out, network.input_size))
    for c in range(n_out):
        model.set_objective({int(enc.outputs[c]): 1.0}, sense=Sense.MAXIMIZE)
        res = solve(model, solver, SolveParameters())
        if res.termination != Termination.OPTIMAL or res.dual_bound is None or res.primal is None:
            raise SolverError(f"LP for logit {c} ended with {res.termination.value}: {res.message}")
        upper[c] = sound_upper(res.dual_bound)
        points[c] = input_set.project(res.primal[enc.inputs])
        achieved[c] = float(network.forward(points[c])[c])
        if achieved[c] > upper[c] + 1e-6 * (1.0 + abs(upper[c])):
            raise UnsoundAnswerError(f"logit {c}: LP bound {upper[c]:.9g} is below {achieved[c]:.9g}, "
                                     "attained by the real network; answer rejected")
    return LogitMaxima(upper, achieved, points)


def lp_prediction(maxima: Array) -> Array:
    """The LP classifier's prediction: argmax over classes of the logit maxima, (n_out,) or (n, n_out)."""
    return np.argmax(np.asarray(maxima, dtype=np.float64), axis=-1)


# -- the system-level problem (item 6) -----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SystemSolution:
    """The optimum of the system-level problem for class ``cls`` from ``x0``.

    ``bound``: sound upper bound on the optimum (LP dual bound, or the refined MIP's bound);
    ``achieved``: the objective of the *real* network at ``point`` (margin minus lambda * L1 distance);
    ``margin``: ``logit[cls] - max_{k != cls} logit[k]`` of the real network at ``point``.
    ``primal`` and ``model`` are the last solve's point and model (for re-checking the constraints).
    """

    cls: int
    lam: float
    method: str
    bound: float
    achieved: float
    point: Array
    margin: float
    distance: float
    primal: Array
    model: Model
    encoding: NetworkEncoding
    t_variable: int


def system_objective(network: Network, x: Array, x0: Array, cls: int, lam: float) -> float:
    """``logit[cls] - max_{k != cls} logit[k] - lam ||x - x0||_1`` of the real network (float64)."""
    y = network.forward(x)
    others = np.delete(y, cls)
    return float(y[cls] - others.max() - lam * np.abs(np.asarray(x) - np.asarray(x0)).sum())


def add_system_objective(enc: NetworkEncoding, x0: Array, cls: int, lam: float, *,
                         sense: Sense = Sense.MAXIMIZE) -> int:
    """Add ``t``, the L1 split of ``x - x0`` and the rows ``t >= logit[k]``; set the objective.

    With ``sense=MINIMIZE`` the objective is negated (for :func:`minimize_with_refinement`). Returns the
    index of ``t``.
    """
    model, y, x = enc.model, enc.outputs, enc.inputs
    d = x.shape[0]
    t = model.add_variable(-INF, INF, tag=VariableTag("aux", index=0))
    pos = model.add_variables(d, 0.0, INF, tags=VariableTag("aux", index=1))
    neg = model.add_variables(d, 0.0, INF, tags=VariableTag("aux", index=2))
    for k in range(y.shape[0]):
        if k != cls:
            model.add_constraint({t: 1.0, int(y[k]): -1.0}, 0.0, INF, tag=ConstraintTag("objective", index=k))
    for i in range(d):
        model.add_constraint({int(x[i]): 1.0, int(pos[i]): -1.0, int(neg[i]): 1.0}, float(x0[i]), float(x0[i]),
                             tag=ConstraintTag("objective", neuron=i))
    sign = 1.0 if sense == Sense.MAXIMIZE else -1.0
    variables = np.concatenate([[int(y[cls]), t], pos, neg])
    coefs = sign * np.concatenate([[1.0, -1.0], np.full(2 * d, -float(lam))])
    model.set_objective((variables, coefs), sense=sense)
    return t


def system_level(network: Network, x0: Array, cls: int, lam: float, *, eps: float = 1.0, method: str = LP,
                 solver: str | None = None, n_lines: int = 3, tolerance: float = 1e-4,
                 domain: tuple[float, float] = (0.0, 1.0), time_limit: float | None = None) -> SystemSolution:
    """Solve the system-level problem over the eps-ball around ``x0`` (eps = 1: the whole domain).

    Raises InvalidInputError for a negative lambda or bad class, SolverError without an optimum, and
    UnsoundAnswerError when the bound is below the value the real network attains at the solution.
    """
    if not np.isfinite(lam) or lam < 0:
        raise InvalidInputError(f"lambda must be a finite number >= 0, got {lam!r}")
    if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 0 <= cls < network.output_size:
        raise InvalidInputError(f"class {cls!r} is out of range")
    cls = int(cls)
    input_set = _input_set(network, x0, eps, domain)
    x0 = input_set.center
    lo, hi = input_set.box()
    bounds = symbolic_bounds(network, lo, hi)
    if method == LP:
        model = Model("system-level-lp")
        enc = encode_network(model, network, input_set, bounds, mode=LP, n_lines=n_lines)
        t = add_system_objective(enc, x0, cls, lam)
        res = solve(model, solver or default_lp_solver(), SolveParameters(time_limit=time_limit))
        if res.termination != Termination.OPTIMAL or res.dual_bound is None or res.primal is None:
            raise SolverError(f"system-level LP (class {cls}) ended with {res.termination.value}: {res.message}")
        primal, bound = res.primal, sound_upper(res.dual_bound)
    elif method == MIP:
        holder: dict[str, int] = {}

        def objective(e: NetworkEncoding) -> None:
            holder["t"] = add_system_objective(e, x0, cls, lam, sense=Sense.MINIMIZE)

        out = minimize_with_refinement(
            network, input_set, bounds, objective, lambda p: -system_objective(network, p, x0, cls, lam),
            solver=solver or default_mip_solver(), tolerance=tolerance, stop_at_sign=False,
            deadline=None if time_limit is None else time.monotonic() + time_limit,
        )
        if out.primal is None or out.encoding is None or not np.isfinite(out.lower):
            raise SolverError(f"system-level MIP (class {cls}) ended with {out.termination.value}")
        enc, primal, bound, t = out.encoding, out.primal, -out.lower, holder["t"]
        model = enc.model
    else:
        raise InvalidInputError(f"method must be 'lp' or 'mip', got {method!r}")
    point = input_set.project(primal[enc.inputs])
    achieved = system_objective(network, point, x0, cls, lam)
    if achieved > bound + 1e-6 * (1.0 + abs(bound)):
        raise UnsoundAnswerError(f"system-level bound {bound:.9g} is below {achieved:.9g}, attained by the real "
                                 "network; answer rejected")
    return SystemSolution(cls=cls, lam=float(lam), method=method, bound=float(bound), achieved=achieved, point=point,
                          margin=system_objective(network, point, x0, cls, 0.0),
                          distance=float(np.abs(point - x0).sum()), primal=primal, model=model, encoding=enc,
                          t_variable=int(t))


def ideal_indices(network: Network, x: Array, y: Array) -> Array:
    """Per digit, the index of its best-classified test image: the largest margin logit[y] - max other."""
    logits = network.forward(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.int64)
    rows = np.arange(len(y))
    other = logits.copy()
    other[rows, y] = -np.inf
    margin = logits[rows, y] - other.max(axis=1)
    out = np.full(network.output_size, -1, dtype=np.int64)
    for c in range(network.output_size):
        idx = np.flatnonzero(y == c)
        if idx.size:
            out[c] = idx[int(np.argmax(margin[idx]))]
    return out


# -- neuron patterns (item 7) --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NeuronPatterns:
    """``weight_images[j]``: first-layer neuron j's weights as an image; ``mean_post[l][c, j]`` /
    ``std_post[l][c, j]``: hidden layer l's activation j over the test images of digit c;
    ``combination``: second-layer weights (n2, n1); ``readout``: output weights (n_out, n2)."""

    weight_images: Array
    biases: Array
    mean_post: list[Array]
    std_post: list[Array]
    combination: Array
    readout: Array


def neuron_patterns(network: Network, x: Array, y: Array, *, image_shape: tuple[int, int] | None = None) -> NeuronPatterns:
    """Weight images and per-digit activation statistics of the hidden neurons (pure)."""
    if len(network.layers) < 3:
        raise InvalidInputError("neuron patterns need at least two hidden layers")
    first = network.layers[0]
    d = network.input_size
    if image_shape is None:
        side = int(round(np.sqrt(d)))
        if side * side != d:
            raise InvalidInputError(f"input size {d} is not a square image; give image_shape")
        image_shape = (side, side)
    y = np.asarray(y, dtype=np.int64)
    trace = network.trace(np.asarray(x, dtype=np.float64))
    means, stds = [], []
    for _, post in trace[:-1]:
        means.append(np.stack([post[y == c].mean(axis=0) if (y == c).any() else np.full(post.shape[1], np.nan)
                               for c in range(network.output_size)]))
        stds.append(np.stack([post[y == c].std(axis=0) if (y == c).any() else np.full(post.shape[1], np.nan)
                              for c in range(network.output_size)]))
    return NeuronPatterns(first.weight.reshape(first.n_out, *image_shape), first.bias.copy(), means, stds,
                          network.layers[1].weight.copy(), network.layers[-1].weight.copy())


# -- THE STUDY'S FLAWED ENVELOPE (our reconstruction; never used for certificates) ---------------------
#
# Seed README: the study's GELU envelope "is NOT sound on many intervals (its tangent/secant choice and its
# interval bounds miss the GELU minimum at -0.7518)". Reconstructed here as:
#   * interval bounds of f on [l, u] from the endpoints only: [min(f(l), f(u)), max(f(l), f(u))];
#   * one tangent (at the midpoint m) and the secant; the function is judged convex on [l, u] when the
#     secant lies above f at m, and then the secant is the upper line and the tangent the lower one,
#     otherwise the other way round — which is wrong whenever [l, u] straddles an inflection (+-sqrt 2).
# design.md lists both as known traps. The functions below exist to quantify the damage.


def flawed_image(act, lower: Array, upper: Array) -> tuple[Array, Array]:
    """FLAWED: the activation's range on [l, u] from its endpoints only (misses interior minima)."""
    f_l, f_u = act.value(np.asarray(lower, dtype=np.float64)), act.value(np.asarray(upper, dtype=np.float64))
    return np.minimum(f_l, f_u), np.maximum(f_l, f_u)


def flawed_lines(act, lower: Array, upper: Array) -> tuple[Array, Array, Array, Array]:
    """FLAWED: (lower slope, lower intercept, upper slope, upper intercept) of the midpoint tangent/secant rule."""
    l, u = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    m = 0.5 * (l + u)
    f_l, f_u, f_m = act.value(l), act.value(u), act.value(m)
    width = np.where(u > l, u - l, 1.0)
    sec_s = np.where(u > l, (f_u - f_l) / width, act.slope(m))
    sec_c = f_l - sec_s * l
    tan_s = act.slope(m)
    tan_c = f_m - tan_s * m
    convex = sec_s * m + sec_c >= f_m
    return (np.where(convex, tan_s, sec_s), np.where(convex, tan_c, sec_c),
            np.where(convex, sec_s, tan_s), np.where(convex, sec_c, tan_c))


def flawed_interval_bounds(network: Network, lo: Array, hi: Array) -> list[LayerBounds]:
    """FLAWED: interval propagation with endpoint-sampled activation ranges (no rounding care either)."""
    out = []
    a_lo, a_hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    for layer in network.layers:
        w_pos, w_neg = np.maximum(layer.weight, 0.0), np.minimum(layer.weight, 0.0)
        z_lo = w_pos @ a_lo + w_neg @ a_hi + layer.bias
        z_hi = w_pos @ a_hi + w_neg @ a_lo + layer.bias
        out.append(LayerBounds(z_lo, z_hi))
        if layer.activation.name == "identity":
            a_lo, a_hi = z_lo, z_hi
        else:
            a_lo, a_hi = flawed_image(layer.activation, z_lo, z_hi)
    return out


def encode_flawed_network(model: Model, network: Network, input_set: InputSet) -> NetworkEncoding:
    """FLAWED: the study's LP — endpoint-sampled bounds, one tangent and one secant per neuron."""
    lo, hi = input_set.box()
    bounds = flawed_interval_bounds(network, lo, hi)
    x = encode_input_set(model, input_set)
    enc = NetworkEncoding(model, network, bounds, "flawed-lp", x)
    a = x
    last = len(network.layers) - 1
    for i, layer in enumerate(network.layers):
        z = encode_affine(model, layer.weight, layer.bias, a, bounds[i], layer=i)
        enc.pre.append(z)
        if i == last and layer.activation.name == "identity":
            break
        l, u = bounds[i].lower, bounds[i].upper
        f_lo, f_hi = flawed_image(layer.activation, l, u)
        a = model.add_variables(layer.n_out, f_lo, f_hi, tags=[VariableTag("post", i, j) for j in range(layer.n_out)])
        s_lo, c_lo, s_up, c_up = flawed_lines(layer.activation, l, u)
        for j in range(layer.n_out):
            model.add_constraint({int(a[j]): 1.0, int(z[j]): -s_lo[j]}, c_lo[j], INF,
                                 tag=ConstraintTag("envelope_lower", i, j, 0))
            model.add_constraint({int(a[j]): 1.0, int(z[j]): -s_up[j]}, -INF, c_up[j],
                                 tag=ConstraintTag("envelope_upper", i, j, 0))
        enc.post.append(a)
    return enc


@dataclass(frozen=True)
class FlawedAnswer:
    """The study's (unsound) claim for one robustness query: ``verified`` iff every target's LP minimum of
    the margin is > 0; ``infeasible`` when its LP had no feasible point at all (its envelope cut off the
    whole set); ``lower``: the smallest margin minimum it computed (it stops at the first target <= 0)."""

    verified: bool
    infeasible: bool
    lower: float


def flawed_verify(network: Network, x: Array, label: int, eps: float, *, solver: str | None = None,
                  target_order: Array | None = None, domain: tuple[float, float] = (0.0, 1.0)) -> FlawedAnswer:
    """FLAWED: the study's robustness verdict from its LP (the optimum's value, as the study used it).

    ``target_order``: targets to try first (e.g. by an attack's margins), since it stops at the first
    target whose LP minimum is <= 0.
    """
    input_set = _input_set(network, x, eps, domain)
    model = Model("flawed-study-lp")
    enc = encode_flawed_network(model, network, input_set)
    order = [int(k) for k in (target_order if target_order is not None else range(network.output_size)) if int(k) != label]
    lowest = np.inf
    for k in order:
        model.set_objective({int(enc.outputs[label]): 1.0, int(enc.outputs[k]): -1.0}, sense=Sense.MINIMIZE)
        res = solve(model, solver or default_lp_solver(), SolveParameters())
        if res.termination == Termination.INFEASIBLE:
            return FlawedAnswer(False, True, np.nan)
        if res.termination != Termination.OPTIMAL or res.objective_value is None:
            return FlawedAnswer(False, False, np.nan)
        lowest = min(lowest, float(res.objective_value))
        if lowest <= 0.0:
            return FlawedAnswer(False, False, lowest)
    return FlawedAnswer(True, False, float(lowest))
