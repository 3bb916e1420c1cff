"""The LP envelope relaxation of a network, built once and re-targeted input by input (design.md §3).

One persistent HiGHS model (:class:`formulations.backends.highs_persistent.PersistentLP`) holds the structure
that never changes: the input variables, per layer the affine rows ``W a - z = -b`` and per hidden neuron
``n_lines + 1`` lower and upper envelope rows ``a - s z >= c`` / ``<= c`` (the rows of
:func:`formulations.encoding.encode_envelope`). For each input only numbers change: the box and the
pre-/post-activation bounds become variable bounds, and every envelope row gets the slope ``-s`` and
right-hand side ``c`` of the lines certified on *that* input's [l, u] (:func:`formulations.envelopes.envelope_arrays`
plus the symbolic bound's own line of :func:`formulations.envelopes.linear_bounds`, so every line the symbolic
stage used is a cut of the LP). The bound a caller may use is the safe bound re-derived from the LP's duals,
never HiGHS's objective value.

:class:`Relaxations` keeps, for a whole chunk, each input's layer bounds and certified lines (computed a
layer at a time in one vectorised call) and loads one input's into the LP.
"""

from __future__ import annotations

import numpy as np

from .activations import Activation, region_of
from .backends.base import SolveParameters, SolveResult
from .backends.highs_persistent import NAME, PersistentLP
from .bounds import LayerBounds
from .encoding import encode_affine, encode_envelope
from .envelopes import curvature_lines, envelope_arrays, linear_bounds
from .model import ConstraintTag, Model, Sense, VariableTag
from .network import Network

Array = np.ndarray
Lines = tuple[Array, Array, Array, Array]  # lower slopes, lower intercepts, upper slopes, upper intercepts: (m, K) each
PIXEL_TOLERANCE = 1e-6  # relative distance at which an input coordinate counts as sitting at its bound


class EnvelopeLP:
    """The LP envelope relaxation of ``network`` over a box, built once and re-targeted per input."""

    def __init__(self, network: Network, n_lines: int, time_limit: float | None) -> None:
        self.network, self.n_lines = network, n_lines
        self.params = SolveParameters(time_limit=time_limit)
        model = Model(f"envelope-lp[{network.name}]")
        d = network.input_size
        self.inputs = model.add_variables(d, 0.0, 1.0, tags=[VariableTag("input", neuron=j) for j in range(d)])
        self.pre: list[Array] = []
        self.post: list[Array | None] = []
        self.rows: list[tuple[Array, Array] | None] = []  # per layer: (lower rows (m, K), upper rows (m, K))
        a = self.inputs
        last = len(network.layers) - 1
        for i, layer in enumerate(network.layers):
            m = layer.n_out
            # placeholder bounds, replaced per input; the envelope rows built on [-1, 1] give the structure
            placeholder = LayerBounds(-np.ones(m), np.ones(m))
            z = encode_affine(model, layer.weight, layer.bias, a, placeholder, layer=i)
            self.pre.append(z)
            if i == last or layer.activation.name == "identity":
                self.post.append(None)
                self.rows.append(None)
                a = z
                continue
            first = model.num_constraints
            a = encode_envelope(model, layer.activation, z, placeholder, layer=i, n_lines=n_lines)
            self.post.append(a)
            self.rows.append(self._envelope_rows(model, first, i, m))
        self.lp = PersistentLP(model)
        self.lp_name = NAME
        self.n_vars = model.num_variables
        self.row_tags = list(model.constraint_tags)
        self._box: tuple[Array, Array] = (np.zeros(d), np.ones(d))
        self._images: dict[int, tuple[Array, Array]] = {}  # per hidden layer, the image bounds loaded
        # per layer, the (lower, upper, lines) arrays of the branch-and-bound node last loaded into it by
        # segment_bab.load_node (None: something else wrote the layer since); the arrays are held, not their ids
        self.loaded: list[tuple | None] = [None] * len(self.pre)

    @staticmethod
    def _envelope_rows(model: Model, first: int, layer: int, m: int) -> tuple[Array, Array]:
        """Row indices of layer's envelope lines, read back from their tags: (m, K) per side."""
        lower, upper = {}, {}
        for row in range(first, model.num_constraints):
            tag = model.constraint_tags[row]
            side = lower if tag.kind == "envelope_lower" else upper
            side[(tag.neuron, tag.index)] = row
        k = len(lower) // m
        as_array = lambda side: np.array([[side[(j, q)] for q in range(k)] for j in range(m)], dtype=np.int64)
        return as_array(lower), as_array(upper)

    def lines(self, act: Activation, l: Array, u: Array) -> Lines:
        """The certified lines of :func:`encode_envelope` for many neurons at once, (n, K) each side.

        Intervals of one curvature sign (most of a branch and bound's narrow ones) take the closed form of
        :func:`~formulations.envelopes.curvature_lines`; the others the hull's lines certified by
        :func:`~formulations.envelopes.envelope_arrays` plus the symbolic bound's own line."""
        l, u = np.atleast_1d(np.asarray(l, dtype=np.float64)), np.atleast_1d(np.asarray(u, dtype=np.float64))
        out = curvature_lines(act, l, u, self.n_lines + 1)
        slow = np.isnan(out[0][:, 0])
        if slow.any():
            lo_s, lo_c, up_s, up_c = envelope_arrays(act, l[slow], u[slow], self.n_lines)
            a_lo, b_lo, a_up, b_up = linear_bounds(act, l[slow], u[slow])
            general = (np.column_stack([lo_s, a_lo]), np.column_stack([lo_c, b_lo]),
                       np.column_stack([up_s, a_up]), np.column_stack([up_c, b_up]))
            for store, v in zip(out, general):
                store[slow] = v
        return out

    def set_layer(self, i: int, l: Array, u: Array, lines: Lines | None = None) -> None:
        """Bounds [l, u] on layer i's pre-activations; the image bounds and envelope rows to match."""
        self.loaded[i] = None  # whatever node the layer held, it holds these bounds now
        if self.rows[i] is not None and lines is None:
            lines = self.lines(self.network.layers[i].activation, l, u)
        self._write(i, None, l, u, lines)

    def set_neurons(self, i: int, idx: Array, l: Array, u: Array, lines: Lines | None) -> None:
        """:meth:`set_layer` for neurons ``idx`` of layer i alone (``l``, ``u``, ``lines`` are theirs); the
        layer's other neurons keep what the LP holds. The branch and bound's children differ from the node
        loaded before them in one neuron, and writing a whole layer per node was most of a node's cost."""
        self._write(i, np.asarray(idx, dtype=np.int64), l, u, lines)

    def _write(self, i: int, idx: Array | None, l: Array, u: Array, lines: Lines | None) -> None:
        lp = self.lp
        pre = self.pre[i] if idx is None else self.pre[i][idx]
        lp.set_variable_bounds(pre, l, u)
        if self.rows[i] is None:
            return
        act = self.network.layers[i].activation
        f_min, f_max = act.image(l, u)
        lp.set_variable_bounds(self.post[i] if idx is None else self.post[i][idx], f_min, f_max)
        if idx is None:
            self._images[i] = (np.array(f_min, dtype=np.float64), np.array(f_max, dtype=np.float64))
        else:
            self._images[i][0][idx], self._images[i][1][idx] = f_min, f_max
        lo_s, lo_c, up_s, up_c = lines
        lower_rows, upper_rows = self.rows[i] if idx is None else (self.rows[i][0][idx], self.rows[i][1][idx])
        z_cols = np.broadcast_to(pre[:, None], lower_rows.shape)
        lp.set_coefficients(np.concatenate([lower_rows.ravel(), upper_rows.ravel()]),
                            np.concatenate([z_cols.ravel(), z_cols.ravel()]),
                            -np.concatenate([lo_s.ravel(), up_s.ravel()]))
        lp.set_row_bounds(lower_rows.ravel(), lo_c.ravel(), np.inf)
        lp.set_row_bounds(upper_rows.ravel(), -np.inf, up_c.ravel())

    def set_box(self, lo: Array, hi: Array) -> None:
        lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)  # copies: compared next time
        if np.array_equal(lo, self._box[0]) and np.array_equal(hi, self._box[1]):
            return  # the branch and bound loads every node of one input's search in the same box
        self._box = (lo, hi)
        self.lp.set_variable_bounds(self.inputs, lo, hi)

    def minimize(self, variables: Array, coefficients: Array) -> SolveResult:
        c = np.zeros(self.n_vars)
        np.add.at(c, variables, coefficients)
        self.lp.set_objective(c, sense=Sense.MINIMIZE)
        return self.lp.solve(self.params)

    def minimize_outputs(self, c: Array) -> SolveResult:
        """Minimise ``c . z_last`` (a linear function of the logits) over the relaxation as loaded."""
        c = np.asarray(c, dtype=np.float64)
        nz = np.flatnonzero(c)
        return self.minimize(self.pre[-1][nz], c[nz])

    def tight_tags(self, result: SolveResult) -> tuple[ConstraintTag, ...]:
        """The signature of an LP optimum (design.md §5): pixels at a bound of the box, the envelope lines
        whose rows are tight, and the region of the activation each hidden pre-activation lies in."""
        if result.primal is None:
            return ()
        x = result.primal[self.inputs]
        lo, hi = self._box
        tags = pixel_tags(x, lo, hi)
        for row in result.tight_rows:
            tag = self.row_tags[int(row)]
            if tag is not None and tag.kind in ("envelope_lower", "envelope_upper"):
                tags.append(tag)
        for i, post in enumerate(self.post):
            if post is None:
                continue
            tags.extend(image_tags(i, result.primal[post], *self._images[i]))
            tags.extend(region_tags(self.network.layers[i].activation, i, result.primal[self.pre[i]]))
        return tuple(dict.fromkeys(tags))


def pixel_tags(x: Array, lo: Array, hi: Array, tolerance: float = PIXEL_TOLERANCE) -> list[ConstraintTag]:
    """``input_lower`` / ``input_upper`` tags of the coordinates of ``x`` at a bound of the box [lo, hi]."""
    free = (hi - lo) > 1e-9 * (1 + np.abs(lo))  # a coordinate the set fixes (eps 0) is at no bound of its own
    at_lo = (np.abs(x - lo) <= tolerance * (1 + np.abs(lo))) & free
    at_hi = (np.abs(x - hi) <= tolerance * (1 + np.abs(hi))) & free
    return ([ConstraintTag("input_lower", neuron=int(j)) for j in np.flatnonzero(at_lo)]
            + [ConstraintTag("input_upper", neuron=int(j)) for j in np.flatnonzero(at_hi)])


IMAGE_LINE = -1  # the "line" index of a post-activation resting on its exact image bound (a constant line)


def image_tags(layer: int, a: Array, f_min: Array, f_max: Array, tolerance: float = PIXEL_TOLERANCE) -> list[ConstraintTag]:
    """Neurons whose post-activation sits at its image bound ``min/max f`` on [l, u]: the constant envelope
    lines, which an LP optimum may rest on rather than on a sloped line (those carry an outward margin)."""
    at_min = np.abs(a - f_min) <= tolerance * (1 + np.abs(f_min))
    at_max = (np.abs(a - f_max) <= tolerance * (1 + np.abs(f_max))) & (f_max > f_min)
    return ([ConstraintTag("envelope_lower", layer, int(j), IMAGE_LINE) for j in np.flatnonzero(at_min)]
            + [ConstraintTag("envelope_upper", layer, int(j), IMAGE_LINE) for j in np.flatnonzero(at_max)])


def region_tags(act: Activation, layer: int, z: Array) -> list[ConstraintTag]:
    """One ``region`` tag per neuron: where its pre-activation lies (GELU: tail / dip / rise / linear; ReLU:
    the phase, 0 inactive and 1 active), :func:`formulations.activations.region_of`."""
    return [ConstraintTag("region", layer, int(j), int(r)) for j, r in enumerate(region_of(act, z))]


def point_tags(network: Network, x: Array, lo: Array, hi: Array, tolerance: float) -> tuple[ConstraintTag, ...]:
    """The signature of an exact optimum read off the real network at its input ``x``: the pixels within
    ``tolerance`` of a bound of the box and each hidden neuron's region (its ReLU phase, its GELU region)."""
    tags = pixel_tags(x, lo, hi, tolerance)
    pre = network.pre_activations(x)
    for i, layer in enumerate(network.hidden_layers):
        tags.extend(region_tags(layer.activation, i, pre[i]))
    return tuple(tags)


class Relaxations:
    """Per-input layer bounds of the LP inputs and their certified lines, computed a whole layer at a time."""

    def __init__(self, env: EnvelopeLP, bounds: list[LayerBounds]) -> None:
        self.env = env
        self.lower = [b.lower.copy() for b in bounds]
        self.upper = [b.upper.copy() for b in bounds]
        self.lines: list = [None] * len(bounds)
        for i in range(len(bounds)):
            self.recompute(i, np.arange(self.lower[i].shape[0]))

    def recompute(self, i: int, rows: Array) -> None:
        """Certify layer i's lines for ``rows`` (one vectorised call) on their current [l, u]."""
        if self.env.rows[i] is None or rows.size == 0:
            return
        m = self.lower[i].shape[1]
        act = self.env.network.layers[i].activation
        fresh = self.env.lines(act, self.lower[i][rows].ravel(), self.upper[i][rows].ravel())
        if self.lines[i] is None:
            self.lines[i] = tuple(np.empty((self.lower[i].shape[0], m, v.shape[1])) for v in fresh)
        for store, v in zip(self.lines[i], fresh):
            store[rows] = v.reshape(rows.size, m, -1)

    def load(self, r: int, lo: Array, hi: Array) -> None:
        """Put input r's box, bounds and lines into the persistent LP."""
        self.env.set_box(lo, hi)
        for i in range(len(self.lower)):
            lines = None if self.lines[i] is None else tuple(v[r] for v in self.lines[i])
            self.env.set_layer(i, self.lower[i][r], self.upper[i][r], lines)

    def bounds(self) -> list[LayerBounds]:
        return [LayerBounds(lo, up) for lo, up in zip(self.lower, self.upper)]

    def bounds_of(self, r: int) -> list[LayerBounds]:
        return [LayerBounds(lo[r], up[r]) for lo, up in zip(self.lower, self.upper)]
