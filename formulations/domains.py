"""Input domains: the box a network's inputs live in, part of every question asked about the network.

A robustness query is about ``ball ∩ domain`` (:mod:`formulations.input_sets`); certifying the ball
clipped to some other box answers a different question, so the domain travels with the network (its
``metadata["input_domain"]``), with every job and with every certificate.

A :class:`Domain` is a box ``[lower, upper]``: each side a scalar (the same bound for every coordinate)
or a vector (one bound per coordinate); ``-inf`` / ``+inf`` leave a side open, so ``Domain.unbounded()``
is all of R^d and the query is the plain ball. Its JSON form (:meth:`Domain.to_json`) is
``{"lower": L, "upper": U}`` with ``null`` for an infinite bound (JSON has no infinity) and a scalar
where every coordinate agrees; :func:`parse_domain` reads that, a pair ``[L, U]`` and the text
``"LO,HI"`` of a form field.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError

Array = np.ndarray
METADATA_KEY = "input_domain"
_OPEN_WORDS = {"unbounded", "none"}  # form-field words for the plain ball


def _side(value: Any, name: str) -> Array:
    """One side of a box as a float64 array of shape () or (d,); None (JSON null) is an open side."""
    default = -math.inf if name == "lower" else math.inf
    if value is None:
        return np.array(default)
    if isinstance(value, (list, tuple, np.ndarray)):
        value = [default if v is None else v for v in value]
    try:
        side = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"the domain's {name} bound must be a number or a list of numbers, got {value!r}") from None
    if side.ndim > 1:
        raise InvalidInputError(f"the domain's {name} bound must be a number or a vector, got shape {side.shape}")
    if side.ndim == 1 and side.size == 0:
        raise InvalidInputError(f"the domain's {name} bound is an empty list")
    if np.isnan(side).any():
        raise InvalidInputError(f"the domain's {name} bound holds NaN")
    return side


def _number_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True, eq=False)
class Domain:
    """The box ``[lower, upper]`` (scalars or per-coordinate vectors, infinities allowed)."""

    lower: Any = -math.inf
    upper: Any = math.inf

    def __post_init__(self) -> None:
        lo, hi = _side(self.lower, "lower"), _side(self.upper, "upper")
        if lo.ndim == 1 and hi.ndim == 1 and lo.shape != hi.shape:
            raise InvalidInputError(f"the domain's bounds have {lo.size} and {hi.size} coordinates")
        blo, bhi = np.broadcast_arrays(lo, hi)
        if (blo > bhi).any():
            i = int(np.argmax(np.ravel(blo > bhi)))
            raise InvalidInputError(f"the domain is empty: lower bound {np.ravel(blo)[i]} > upper bound "
                                    f"{np.ravel(bhi)[i]} (coordinate {i})")
        if (lo == math.inf).any() or (hi == -math.inf).any():
            raise InvalidInputError("the domain's lower bound cannot be +inf nor its upper bound -inf")
        lo.setflags(write=False)
        hi.setflags(write=False)
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def unbounded(cls) -> "Domain":
        return cls(-math.inf, math.inf)

    @classmethod
    def unit(cls) -> "Domain":
        """[0, 1]: pixels scaled to the unit interval (the shipped image networks)."""
        return cls(0.0, 1.0)

    # -- shape -------------------------------------------------------------------------------------
    @property
    def size(self) -> int | None:
        """The number of coordinates the box names, or None when both sides are scalars."""
        sizes = {a.size for a in (self.lower, self.upper) if a.ndim == 1}
        return sizes.pop() if sizes else None

    def bounds(self, d: int) -> tuple[Array, Array]:
        """``(lo, hi)``, each of shape (d,), for inputs of length ``d``."""
        if self.size is not None and self.size != d:
            raise InvalidInputError(f"the domain has {self.size} coordinates; the inputs have {d}")
        return (np.broadcast_to(self.lower, (d,)).astype(np.float64),
                np.broadcast_to(self.upper, (d,)).astype(np.float64))

    def check_size(self, d: int) -> "Domain":
        self.bounds(d)
        return self

    @property
    def is_bounded(self) -> bool:
        return bool(np.isfinite(self.lower).all() and np.isfinite(self.upper).all())

    # -- relations ---------------------------------------------------------------------------------
    def contains(self, other: "Domain", d: int) -> bool:
        """Whether the box ``other`` lies inside this one (coordinate by coordinate, for inputs of length d)."""
        lo, hi = self.bounds(d)
        olo, ohi = other.bounds(d)
        return bool((olo >= lo).all() and (ohi <= hi).all())

    def extent(self, norm: str, d: int) -> float:
        """The box's diameter in ``norm`` (``inf`` when a side is open): a ball of a larger radius around a
        point of the box holds all of it, so no radius beyond this asks anything new."""
        from .input_sets import canonical_norm

        lo, hi = self.bounds(d)
        width = hi - lo
        norm = canonical_norm(norm)
        if not np.isfinite(width).all():
            return math.inf
        if norm == "linf":
            return float(width.max(initial=0.0))
        if norm == "l1":
            return float(width.sum())
        return float(np.sqrt(np.dot(width, width)))

    def pair(self, d: int | None = None) -> tuple[Any, Any]:
        """``(lo, hi)`` as the engine takes them (:class:`~formulations.input_sets.InputSet`'s ``domain``):
        scalars stay scalars; with ``d``, arrays of length ``d``."""
        if d is not None:
            return self.bounds(d)
        lo = float(self.lower) if self.lower.ndim == 0 else self.lower.copy()
        hi = float(self.upper) if self.upper.ndim == 0 else self.upper.copy()
        return lo, hi

    # -- JSON --------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``{"lower": L, "upper": U}``: null for an infinite bound, a scalar where every coordinate agrees."""
        def side(a: Array) -> Any:
            flat = np.ravel(a)
            if a.ndim == 0 or (flat.size and (flat == flat[0]).all()):
                return _number_or_none(flat[0])
            return [_number_or_none(v) for v in flat]

        return {"lower": side(self.lower), "upper": side(self.upper)}

    def digest(self) -> str:
        """SHA-256 of the JSON form: equal digests, equal boxes."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Domain) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.digest())

    def describe(self) -> str:
        """``[-1, 1]``, ``[0, 255]``, ``unbounded``, ``per-coordinate box (784 coordinates)``: for messages."""
        data = self.to_json()
        if data["lower"] is None and data["upper"] is None:
            return "unbounded"
        if isinstance(data["lower"], list) or isinstance(data["upper"], list):
            return f"a per-coordinate box ({self.size} coordinates)"

        def fmt(v: float | None, sign: str) -> str:
            return f"{sign}inf" if v is None else f"{v:g}"

        return f"[{fmt(data['lower'], '-')}, {fmt(data['upper'], '+')}]"

    def __repr__(self) -> str:
        return f"Domain({self.describe()})"


def _text_bound(text: str) -> float:
    word = text.strip().lower()
    try:
        value = float(word)
    except ValueError:
        raise InvalidInputError(f"the domain's bounds must be numbers (or -inf / inf), got {text.strip()!r}") from None
    if math.isnan(value):
        raise InvalidInputError("the domain's bounds cannot be NaN")
    return value


def parse_domain(value: Any) -> Domain:
    """A :class:`Domain` from any accepted spelling; raises :class:`InvalidInputError` naming the problem.

    Accepted: a :class:`Domain`; ``{"lower": L, "upper": U}``; a pair ``(L, U)`` (each a number, None for
    open, or a list of per-coordinate numbers); the text ``"LO,HI"`` (``"-1,1"``, ``"0,255"``,
    ``"-inf,inf"``), ``"unbounded"``, or any of the above as JSON text.
    """
    if isinstance(value, Domain):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _OPEN_WORDS:
            return Domain.unbounded()
        if text[:1] in "[{":
            try:
                return parse_domain(json.loads(text))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"cannot read the domain {text[:80]!r} as JSON: {exc.msg}") from None
        parts = text.split(",")
        if len(parts) != 2:
            raise InvalidInputError(f"a domain is written LO,HI (e.g. -1,1 or 0,255 or -inf,inf), got {text[:80]!r}")
        return Domain(_text_bound(parts[0]), _text_bound(parts[1]))
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"lower", "upper"})
        if unknown:
            raise InvalidInputError(f"a domain has the keys lower and upper; got {unknown}")
        return Domain(value.get("lower"), value.get("upper"))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return Domain(*(_text_bound(v) if isinstance(v, str) else v for v in value))
    raise InvalidInputError(f"a domain is a pair (lower, upper) or {{'lower': ..., 'upper': ...}}, got {value!r}"[:300])


def network_domain(network, default: Domain | None = None) -> Domain:
    """The domain a network's metadata names, else ``default`` (unbounded: the plain ball)."""
    stored = network.metadata.get(METADATA_KEY)
    if stored is None:
        return default if default is not None else Domain.unbounded()
    return parse_domain(stored).check_size(network.input_size)


def with_domain(network, domain: Domain):
    """The same network with ``domain`` in its metadata (checked against its input size)."""
    from .network import Network

    domain = parse_domain(domain).check_size(network.input_size)
    return Network(network.layers, name=network.name, metadata={**network.metadata, METADATA_KEY: domain.to_json()})


def check_radii(eps, domain: Domain, norm: str, d: int) -> None:
    """Every radius finite, >= 0 and no larger than the domain's extent in ``norm`` (:meth:`Domain.extent`).

    The extent, not 1, bounds a radius: a raw-pixel network in [0, 255] takes eps 5 or 12, an unbounded
    domain any finite eps."""
    values = [float(e) for e in np.ravel(np.asarray(eps, dtype=np.float64))]
    bad = [e for e in values if not math.isfinite(e)]
    if bad:
        raise InvalidInputError(f"eps must be finite; got {', '.join(str(e) for e in bad[:5])}")
    negative = [e for e in values if e < 0]
    if negative:
        raise InvalidInputError(f"eps must be >= 0; got {', '.join(f'{e:g}' for e in negative[:5])}")
    extent = domain.extent(norm, d)
    large = [e for e in values if e > extent]
    if large:
        raise InvalidInputError(
            f"eps {', '.join(f'{e:g}' for e in large[:5])} exceeds the {norm} extent {extent:g} of the input domain "
            f"{domain.describe()}: a larger ball holds the whole domain")


def center_digest(center) -> str:
    """SHA-256 of a centre's float64 bytes (little-endian, C order): names the exact point a certificate is about."""
    c = np.ascontiguousarray(np.asarray(center, dtype="<f8"))
    return hashlib.sha256(c.tobytes()).hexdigest()
