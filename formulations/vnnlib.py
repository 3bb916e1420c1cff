"""VNN-LIB properties and the VNN-COMP answer and counterexample formats.

A VNN-LIB file (www.vnnlib.org; the SMT-LIB subset used by VNN-COMP) declares real constants ``X_i``
(the network's inputs, flattened in C order) and ``Y_j`` (its outputs) and asserts constraints on them.
The assertions state the *counterexample* condition: the property is violated iff some ``x`` satisfying
the input assertions has outputs ``y = f(x)`` satisfying the output assertions. VNN-COMP calls that
``sat`` (violated) and its absence ``unsat`` (the property holds).

The subset read here is the one the competition's own reference reader (``read_vnnlib_simple``) and the
``mnist_fc`` benchmark use:

- ``(declare-const X_i Real)`` and ``(declare-const Y_j Real)``;
- an input *box*: single-variable bounds ``(<= X_i c)``, ``(>= X_i c)`` (either operand order, also
  ``<``, ``>`` and ``=``), conjoined at top level or inside ``(and ...)``;
- output constraints: linear (in)equalities over ``Y`` and constants, combined with ``and`` and ``or``
  (normalised to a disjunction of polytopes ``C y <= d``).

Everything else (other sorts, products of variables, quantifiers, ``let``, ``not``, unknown functions,
an ``or`` over inputs, inputs and outputs in one constraint) raises
:class:`~formulations.errors.UnsupportedOperatorError` naming the construct and its line; malformed text
raises :class:`~formulations.errors.InvalidInputError`.

Result files (VNN-COMP 2022 rules): the first line is one of :data:`ANSWER_WORDS`; after ``sat`` comes the
counterexample as ``((X_0 v) (X_1 v) ... (Y_0 v) ...)``, one pair a line. The benchmark's ``answers.csv``
uses the 2021 words: ``holds`` (= ``unsat``), ``violated`` (= ``sat``), ``unknown``.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Union

import numpy as np

from .certificate import Verdict
from .errors import InvalidInputError, UnsupportedOperatorError

Array = np.ndarray

# -- answer words ---------------------------------------------------------------------------------

#: First line of a VNN-COMP (2022 on) result file.
ANSWER_WORDS: tuple[str, ...] = ("sat", "unsat", "timeout", "error", "unknown")
#: Words of the benchmark's answers.csv (and of VNN-COMP 2021 result files).
EXPECTED_WORDS: tuple[str, ...] = ("holds", "violated", "unknown")

_WORD_TO_EXPECTED = {"unsat": "holds", "sat": "violated", "timeout": "unknown", "error": "unknown", "unknown": "unknown"}
_EXPECTED_TO_WORD = {"holds": "unsat", "violated": "sat", "unknown": "unknown"}
_VERDICT_TO_WORD = {Verdict.VERIFIED: "unsat", Verdict.FALSIFIED: "sat", Verdict.UNKNOWN: "unknown"}

#: A property file with more disjuncts than this after normalising to DNF is refused (an ``and`` of
#: many ``or``s multiplies out); VNN-COMP files have at most a few hundred.
MAX_DISJUNCTS = 10_000
#: Deepest s-expression nesting accepted; real files nest three or four levels.
MAX_DEPTH = 64


def answer_word(verdict: Verdict | str) -> str:
    """The result-file word for an engine verdict: verified -> ``unsat``, falsified -> ``sat``, else ``unknown``."""
    try:
        return _VERDICT_TO_WORD[Verdict(verdict)]
    except ValueError:
        raise InvalidInputError(f"unknown verdict {verdict!r}; expected one of {[v.value for v in Verdict]}") from None


def normalise_answer_word(word: str) -> str:
    """A result word in the 2022 vocabulary; accepts the 2021 words ``holds`` / ``violated`` too."""
    w = str(word).strip().lower()
    if w in _WORD_TO_EXPECTED:
        return w
    if w in _EXPECTED_TO_WORD:
        return _EXPECTED_TO_WORD[w]
    raise InvalidInputError(f"unknown answer word {word!r}; expected one of {ANSWER_WORDS + EXPECTED_WORDS}")


def expected_word(word: str) -> str:
    """The answers.csv word for a result word: ``unsat`` -> ``holds``, ``sat`` -> ``violated``, else ``unknown``."""
    return _WORD_TO_EXPECTED[normalise_answer_word(word)]


def answer_is_correct(word: str, expected: str) -> bool | None:
    """Whether a decided answer agrees with the known one; ``None`` when either side is undecided."""
    got, want = expected_word(word), expected_word(expected)
    if got == "unknown" or want == "unknown":
        return None
    return got == want


# -- the property ---------------------------------------------------------------------------------


def _frozen(array, dtype=np.float64) -> Array:
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class OutputPolytope:
    """A conjunction of linear constraints ``C y <= d`` on the outputs (``<`` on rows marked ``strict``).

    ``C`` has shape ``(m, n_outputs)``; ``m == 0`` is the whole output space.
    """

    C: Array
    d: Array
    strict: Array | None = None

    def __post_init__(self) -> None:
        C, d = _frozen(self.C), _frozen(self.d).reshape(-1)
        if C.ndim != 2 or C.shape[0] != d.shape[0]:
            raise InvalidInputError(f"an output polytope needs C of shape (m, n) and d of shape (m,), got {C.shape} and {d.shape}")
        strict = np.zeros(d.shape[0], dtype=bool) if self.strict is None else np.asarray(self.strict, dtype=bool).reshape(-1)
        if strict.shape != d.shape:
            raise InvalidInputError(f"strict mask of shape {strict.shape} does not match d of shape {d.shape}")
        object.__setattr__(self, "C", C)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "strict", _frozen(strict, bool))

    @property
    def n_constraints(self) -> int:
        return int(self.d.shape[0])

    def slack(self, y: Array) -> Array:
        """``d - C y`` per row: non-negative (positive on strict rows) where ``y`` satisfies the row."""
        return self.d - self.C @ np.asarray(y, dtype=np.float64)

    def contains(self, y: Array) -> bool:
        """Whether ``y`` satisfies every row exactly (float64, no tolerance)."""
        s = self.slack(y)
        return bool(np.all(np.where(self.strict, s > 0.0, s >= 0.0)))


@dataclass(frozen=True)
class VnnlibProperty:
    """A VNN-LIB property: an input box and a disjunction of output polytopes (the counterexample condition).

    The property is *violated* iff some ``x`` with ``lower <= x <= upper`` (strict where marked) has
    ``f(x)`` in some disjunct.
    """

    lower: Array
    upper: Array
    disjuncts: tuple[OutputPolytope, ...]
    n_outputs: int = 0
    lower_strict: Array | None = None
    upper_strict: Array | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        lower, upper = _frozen(self.lower).reshape(-1), _frozen(self.upper).reshape(-1)
        if lower.shape != upper.shape:
            raise InvalidInputError(f"lower bounds of shape {lower.shape} but upper bounds of shape {upper.shape}")
        n = lower.shape[0]
        for attr in ("lower_strict", "upper_strict"):
            mask = getattr(self, attr)
            mask = np.zeros(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
            if mask.shape != (n,):
                raise InvalidInputError(f"{attr} has shape {mask.shape}, expected ({n},)")
            object.__setattr__(self, attr, _frozen(mask, bool))
        disjuncts = tuple(self.disjuncts)
        widths = {p.C.shape[1] for p in disjuncts if p.n_constraints}
        if len(widths) > 1 or (widths and widths != {self.n_outputs}):
            raise InvalidInputError(f"output constraints over {sorted(widths)} outputs, but the property has {self.n_outputs}")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "disjuncts", disjuncts)

    @property
    def n_inputs(self) -> int:
        return int(self.lower.shape[0])

    @property
    def center(self) -> Array:
        return 0.5 * (self.lower + self.upper)

    def contains_input(self, x: Array) -> bool:
        """Whether ``x`` lies in the input box exactly (float64, tolerance 0)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape != self.lower.shape or not np.isfinite(x).all():
            return False
        above = np.where(self.lower_strict, x > self.lower, x >= self.lower)
        below = np.where(self.upper_strict, x < self.upper, x <= self.upper)
        return bool(np.all(above & below))

    def output_violates(self, y: Array) -> bool:
        """Whether outputs ``y`` satisfy some disjunct (the counterexample condition on the outputs)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.shape != (self.n_outputs,):
            raise InvalidInputError(f"outputs have shape {y.shape}; the property speaks of {self.n_outputs} outputs")
        return any(p.contains(y) for p in self.disjuncts)


def robustness_view(prop: VnnlibProperty) -> tuple[int, tuple[int, ...]] | None:
    """``(label, targets)`` when the property is local robustness, else ``None``.

    Recognised form: every disjunct is the single non-strict row ``Y_j >= Y_label`` (any positive
    scaling, right-hand side 0) with one ``label`` shared by all disjuncts. The property then holds iff
    ``min_j min_{x in box} (y_label - y_j) > 0`` over the returned targets, and a point with
    ``y_label - y_j <= 0`` for some target is a counterexample.
    """
    if not prop.disjuncts:
        return None
    label, targets = None, []
    for p in prop.disjuncts:
        if p.n_constraints != 1 or p.strict[0] or p.d[0] != 0.0:
            return None
        row = p.C[0]
        nonzero = np.flatnonzero(row)
        if nonzero.size != 2 or row[nonzero[0]] != -row[nonzero[1]]:
            return None
        pos, neg = (nonzero[0], nonzero[1]) if row[nonzero[0]] > 0 else (nonzero[1], nonzero[0])
        # row . y <= 0  is  s (y_pos - y_neg) <= 0  is  y_neg >= y_pos: pos is the label, neg the target
        if label is None:
            label = int(pos)
        elif label != pos:
            return None
        targets.append(int(neg))
    return label, tuple(sorted(set(targets)))


# -- reading --------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_TOKEN = re.compile(r";[^\n]*|\n|[()]|[^\s();]+")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_VARIABLE = re.compile(r"([XY])_(\d+)")
_IGNORED_COMMANDS = frozenset({"check-sat", "get-model", "exit", "set-info"})
_COMPARISONS = frozenset({"<=", ">=", "<", ">", "="})


class _Atom(NamedTuple):
    text: str
    line: int


class _List(NamedTuple):
    items: tuple
    line: int


def _read_text(source: Union[str, bytes, os.PathLike]) -> tuple[str, str]:
    """``(text, name)`` from a path, raw bytes or the text itself; gzip is detected by its magic bytes."""
    if isinstance(source, (bytes, bytearray)):
        raw, name = bytes(source), "<bytes>"
    elif isinstance(source, os.PathLike) or (isinstance(source, str) and "(" not in source):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"VNN-LIB file {str(path)!r} does not exist")
        raw, name = path.read_bytes(), path.name
    elif isinstance(source, str):
        return source, "<text>"
    else:
        raise InvalidInputError(f"read_vnnlib takes a path, bytes or text, got {type(source).__name__}")
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InvalidInputError(f"{name}: corrupt gzip data ({exc})") from None
    try:
        return raw.decode("utf-8"), name
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{name}: not UTF-8 text ({exc})") from None


def _parse_sexprs(text: str) -> list:
    """Top-level s-expressions of ``text`` (comments dropped), each node carrying its line number."""
    line, stack, top = 1, [], []
    for tok in _TOKEN.findall(text):  # findall: the 784-input files have ~25,000 tokens
        if tok == "\n":
            line += 1
        elif tok[0] == ";":
            continue
        elif tok == "(":
            if len(stack) >= MAX_DEPTH:
                raise UnsupportedOperatorError(f"line {line}: s-expressions nested deeper than {MAX_DEPTH} levels")
            stack.append((line, []))
        elif tok == ")":
            if not stack:
                raise InvalidInputError(f"line {line}: unbalanced ')'")
            start, items = stack.pop()
            node = _List(tuple(items), start)
            (stack[-1][1] if stack else top).append(node)
        else:
            (stack[-1][1] if stack else top).append(_Atom(tok, line))
    if stack:
        raise InvalidInputError(f"line {stack[-1][0]}: '(' is never closed")
    return top


# A linear expression: ({("X"|"Y", index): coefficient}, constant).
_Linear = tuple[dict, float]
# An atomic constraint  expr (<= | <) 0  with its line: (coefficients, constant, strict, line).
_Constraint = tuple[dict, float, bool, int]


def _head(node: _List) -> str:
    if not node.items:
        raise InvalidInputError(f"line {node.line}: empty expression '()'")
    head = node.items[0]
    if not isinstance(head, _Atom):
        raise UnsupportedOperatorError(f"line {node.line}: an expression in operator position")
    return head.text


def _number(atom: _Atom) -> float:
    if not _NUMBER.fullmatch(atom.text):
        raise InvalidInputError(f"line {atom.line}: {atom.text!r} is neither a number nor a declared X_i / Y_j")
    value = float(atom.text)
    if not math.isfinite(value):
        raise InvalidInputError(f"line {atom.line}: constant {atom.text!r} is not finite")
    return value


class _Reader:
    """Turns parsed s-expressions into declarations, box bounds and a DNF over output constraints."""

    def __init__(self) -> None:
        self.declared: dict[tuple[str, int], int] = {}
        self.bounds: list[_Constraint] = []  # single-input constraints, conjoined
        self.outputs: list[list[_Constraint]] = [[]]  # DNF: OR of ANDs

    # -- commands -----------------------------------------------------------------------------
    def command(self, node) -> None:
        if not isinstance(node, _List):
            raise InvalidInputError(f"line {node.line}: stray token {node.text!r} outside an expression")
        head = _head(node)
        if head == "declare-const":
            self.declare(node)
        elif head == "assert":
            if len(node.items) != 2:
                raise InvalidInputError(f"line {node.line}: assert takes one formula, got {len(node.items) - 1}")
            self.assertion(node.items[1])
        elif head in _IGNORED_COMMANDS:
            return
        else:
            raise UnsupportedOperatorError(f"line {node.line}: command {head!r} is not supported (only declare-const and assert)")

    def declare(self, node: _List) -> None:
        if len(node.items) != 3 or not all(isinstance(i, _Atom) for i in node.items[1:]):
            raise InvalidInputError(f"line {node.line}: declare-const takes a name and a sort")
        name, sort = node.items[1].text, node.items[2].text
        match = _VARIABLE.fullmatch(name)
        if match is None:
            raise UnsupportedOperatorError(f"line {node.line}: constant {name!r}: only inputs X_i and outputs Y_j are supported")
        if sort != "Real":
            raise UnsupportedOperatorError(f"line {node.line}: {name} has sort {sort!r}; only Real is supported")
        key = (match.group(1), int(match.group(2)))
        if key in self.declared:
            raise InvalidInputError(f"line {node.line}: {name} is declared twice (first on line {self.declared[key]})")
        self.declared[key] = node.line

    # -- formulas -----------------------------------------------------------------------------
    def assertion(self, formula) -> None:
        dnf = self.formula(formula)
        if len(dnf) == 1:  # a conjunction: its input bounds join the box, its output rows every disjunct
            inputs = [c for c in dnf[0] if "X" in _kinds(c[0])]
            outputs = [c for c in dnf[0] if "X" not in _kinds(c[0])]
            self.bounds.extend(inputs)
            self.outputs = [conj + outputs for conj in self.outputs]
            return
        for conj in dnf:
            for c in conj:
                if "X" in _kinds(c[0]):
                    raise UnsupportedOperatorError(
                        f"line {c[3]}: a disjunction (or ...) over input constraints; only one input box is supported"
                    )
        self.outputs = _conjoin(self.outputs, dnf, getattr(formula, "line", 0))

    def formula(self, node) -> list[list[_Constraint]]:
        """The formula as a DNF: a list of conjunctions of atomic constraints."""
        if isinstance(node, _Atom):
            raise UnsupportedOperatorError(f"line {node.line}: {node.text!r} used as a formula; expected a comparison, and or or")
        head = _head(node)
        args = node.items[1:]
        if head == "and":
            dnf: list[list[_Constraint]] = [[]]
            for arg in args:
                dnf = _conjoin(dnf, self.formula(arg), node.line)
            return dnf
        if head == "or":
            if not args:
                raise InvalidInputError(f"line {node.line}: empty (or)")
            out = [conj for arg in args for conj in self.formula(arg)]
            if len(out) > MAX_DISJUNCTS:
                raise UnsupportedOperatorError(f"line {node.line}: more than {MAX_DISJUNCTS} disjuncts")
            return out
        if head in _COMPARISONS:
            return [self.comparison(node, head, args)]
        raise UnsupportedOperatorError(f"line {node.line}: operator {head!r} is not supported in a formula (only and, or, <=, >=, <, >, =)")

    def comparison(self, node: _List, op: str, args: tuple) -> list[_Constraint]:
        if len(args) != 2:
            raise UnsupportedOperatorError(f"line {node.line}: {op} with {len(args)} operands; only binary comparisons are supported")
        left, right = self.term(args[0]), self.term(args[1])
        coeffs = dict(left[0])
        for key, value in right[0].items():
            coeffs[key] = coeffs.get(key, 0.0) - value
        coeffs = {k: v for k, v in coeffs.items() if v != 0.0}
        const = left[1] - right[1]  # the comparison reads  coeffs . v + const  op  0
        if not coeffs:
            raise UnsupportedOperatorError(f"line {node.line}: comparison without variables")
        kinds = _kinds(coeffs)
        if kinds == {"X", "Y"}:
            raise UnsupportedOperatorError(f"line {node.line}: a constraint mixing inputs X and outputs Y")
        if kinds == {"X"} and len(coeffs) > 1:
            raise UnsupportedOperatorError(f"line {node.line}: a linear constraint over several inputs; only box bounds are supported")
        negated = ({k: -v for k, v in coeffs.items()}, -const)
        if op in ("<=", "<"):
            return [(coeffs, const, op == "<", node.line)]
        if op in (">=", ">"):
            return [(*negated, op == ">", node.line)]
        return [(coeffs, const, False, node.line), (*negated, False, node.line)]  # "=": both directions

    def term(self, node) -> _Linear:
        """A linear term: a number, a declared variable, or +, -, * (by a constant), / (by a constant)."""
        if isinstance(node, _Atom):
            match = _VARIABLE.fullmatch(node.text)
            if match is None:
                return {}, _number(node)
            key = (match.group(1), int(match.group(2)))
            if key not in self.declared:
                raise InvalidInputError(f"line {node.line}: {node.text} is used but never declared")
            return {key: 1.0}, 0.0
        head = _head(node)
        parts = [self.term(arg) for arg in node.items[1:]]
        if not parts:
            raise InvalidInputError(f"line {node.line}: {head!r} without operands")
        if head == "+":
            return _combine(parts, [1.0] * len(parts))
        if head == "-":
            signs = [-1.0] if len(parts) == 1 else [1.0] + [-1.0] * (len(parts) - 1)
            return _combine(parts, signs)
        if head == "*":
            variable_parts = [p for p in parts if p[0]]
            if len(variable_parts) > 1:
                raise UnsupportedOperatorError(f"line {node.line}: product of variables (non-linear term)")
            factor = math.prod(p[1] for p in parts if not p[0])
            base = variable_parts[0] if variable_parts else ({}, 1.0)
            return _combine([base], [factor])
        if head == "/":
            if len(parts) != 2 or parts[1][0]:
                raise UnsupportedOperatorError(f"line {node.line}: division by a variable (non-linear term)")
            if parts[1][1] == 0.0:
                raise InvalidInputError(f"line {node.line}: division by zero")
            return _combine([parts[0]], [1.0 / parts[1][1]])
        raise UnsupportedOperatorError(f"line {node.line}: function {head!r} is not supported in a term (only +, -, * and / by constants)")


def _kinds(coeffs: dict) -> set[str]:
    return {kind for kind, _ in coeffs}


def _combine(parts: list[_Linear], weights: list[float]) -> _Linear:
    coeffs: dict = {}
    for (c, _), w in zip(parts, weights):
        for key, value in c.items():
            coeffs[key] = coeffs.get(key, 0.0) + w * value
    return coeffs, sum(w * k for (_, k), w in zip(parts, weights))


def _conjoin(a: list[list[_Constraint]], b: list[list[_Constraint]], line: int) -> list[list[_Constraint]]:
    """(OR of ANDs) AND (OR of ANDs), multiplied out."""
    if len(a) * len(b) > MAX_DISJUNCTS:
        raise UnsupportedOperatorError(f"line {line}: the output constraints multiply out to more than {MAX_DISJUNCTS} disjuncts")
    return [x + y for x in a for y in b]


def _indices(declared: Iterable[tuple[str, int]], kind: str) -> int:
    """Number of variables of one kind; they must be numbered 0 .. n-1."""
    idx = sorted(i for k, i in declared if k == kind)
    if idx != list(range(len(idx))):
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise InvalidInputError(f"{kind}_{idx[-1]} is declared but {kind}_{missing[0]} is not; variables must be numbered from 0")
    return len(idx)


def _box(bounds: list[_Constraint], n_inputs: int):
    lower = np.full(n_inputs, -np.inf)
    upper = np.full(n_inputs, np.inf)
    lower_strict = np.zeros(n_inputs, dtype=bool)
    upper_strict = np.zeros(n_inputs, dtype=bool)
    for coeffs, const, strict, line in bounds:
        ((_, i), a), = coeffs.items()  # a x_i + const (<|<=) 0
        value = -const / a + 0.0  # + 0.0 turns -0.0 into 0.0
        if a > 0 and (value < upper[i] or (value == upper[i] and strict)):
            upper[i], upper_strict[i] = value, strict
        elif a < 0 and (value > lower[i] or (value == lower[i] and strict)):
            lower[i], lower_strict[i] = value, strict
    unbounded = [f"X_{i}" for i in range(n_inputs) if not (np.isfinite(lower[i]) and np.isfinite(upper[i]))]
    if unbounded:
        shown = ", ".join(unbounded[:5]) + (f" and {len(unbounded) - 5} more" if len(unbounded) > 5 else "")
        raise InvalidInputError(f"inputs without both a lower and an upper bound: {shown}")
    empty = np.flatnonzero((lower > upper) | ((lower == upper) & (lower_strict | upper_strict)))
    if empty.size:
        i = int(empty[0])
        raise InvalidInputError(f"the input box is empty: X_{i} in [{lower[i]}, {upper[i]}]")
    return lower, upper, lower_strict, upper_strict


def _polytope(conj: list[_Constraint], n_outputs: int) -> OutputPolytope:
    C = np.zeros((len(conj), n_outputs))
    d = np.zeros(len(conj))
    strict = np.zeros(len(conj), dtype=bool)
    for r, (coeffs, const, s, _) in enumerate(conj):
        for (_, j), a in coeffs.items():
            C[r, j] = a
        d[r], strict[r] = -const + 0.0, s
    return OutputPolytope(C, d, strict)


def read_vnnlib(
    path_or_text: Union[str, bytes, os.PathLike],
    *,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
) -> VnnlibProperty:
    """Read a VNN-LIB property (plain or gzip, told apart by the gzip magic bytes).

    Args:
        path_or_text: a path, the file's bytes, or its text (a string containing ``(`` is taken as text).
        n_inputs, n_outputs: when given, the declared ``X`` / ``Y`` counts must equal them.

    Returns:
        The box ``[lower, upper]`` and the output disjunction in ``C y <= d`` form (module docstring).

    Raises:
        InvalidInputError: malformed text, undeclared or misnumbered variables, an input without both
            bounds, an empty box, or counts that differ from ``n_inputs`` / ``n_outputs``.
        UnsupportedOperatorError: a construct outside the supported subset, named with its line.
    """
    text, name = _read_text(path_or_text)
    reader = _Reader()
    for node in _parse_sexprs(text):
        reader.command(node)
    n_in = _indices(reader.declared, "X")
    n_out = _indices(reader.declared, "Y")
    for expected, got, kind in ((n_inputs, n_in, "inputs X_i"), (n_outputs, n_out, "outputs Y_j")):
        if expected is not None and expected != got:
            raise InvalidInputError(f"{name}: declares {got} {kind}, expected {expected}")
    if n_in == 0:
        raise InvalidInputError(f"{name}: declares no inputs X_i")
    lower, upper, lower_strict, upper_strict = _box(reader.bounds, n_in)
    disjuncts = tuple(_polytope(conj, n_out) for conj in reader.outputs)
    return VnnlibProperty(lower, upper, disjuncts, n_outputs=n_out,
                          lower_strict=lower_strict, upper_strict=upper_strict, name=name)


# -- counterexamples ------------------------------------------------------------------------------


def _vector(values, what: str) -> Array:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"counterexample {what} holds NaN or infinite values")
    return arr


def format_counterexample(x: Array, y: Array) -> str:
    """A ``sat`` result file: the word, then ``((X_0 v)`` ... ``(Y_m v))``, one pair a line.

    Values are written with Python's shortest round-trip ``repr``, so reading them back gives the same
    float64 numbers (:func:`parse_result`).
    """
    x, y = _vector(x, "input"), _vector(y, "output")
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(x)] + [f"(Y_{j} {float(v)!r})" for j, v in enumerate(y)]
    return "sat\n(" + "\n ".join(pairs) + ")\n"


def format_result(word: str, x: Array | None = None, y: Array | None = None) -> str:
    """A result file for any answer word; ``sat`` needs the counterexample ``x`` and its outputs ``y``."""
    w = normalise_answer_word(word)
    if w == "sat":
        if x is None or y is None:
            raise InvalidInputError("a sat result needs the counterexample input x and its outputs y")
        return format_counterexample(x, y)
    return w + "\n"


def parse_result(text: str) -> tuple[str, Array | None, Array | None]:
    """``(word, x, y)`` from a result file; ``x`` and ``y`` are ``None`` without a counterexample.

    Also reads a bare counterexample (no first word), as VNN-COMP's ``.counterexample`` files hold.
    """
    body = text.strip()
    word = "sat"
    if body and body[0] != "(":
        first, _, body = body.partition("\n")
        word = normalise_answer_word(first)
        body = body.strip()
    if not body:
        return word, None, None
    nodes = _parse_sexprs(body)
    if len(nodes) != 1 or not isinstance(nodes[0], _List):
        raise InvalidInputError("a counterexample is one parenthesised list of (name value) pairs")
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for pair in nodes[0].items:
        if not (isinstance(pair, _List) and len(pair.items) == 2 and all(isinstance(a, _Atom) for a in pair.items)):
            raise InvalidInputError(f"line {pair.line}: expected a pair (X_i value) or (Y_j value)")
        match = _VARIABLE.fullmatch(pair.items[0].text)
        if match is None:
            raise InvalidInputError(f"line {pair.line}: {pair.items[0].text!r} is neither X_i nor Y_j")
        values[match.group(1)][int(match.group(2))] = _number(pair.items[1])
    arrays = []
    for kind in ("X", "Y"):
        got = values[kind]
        if sorted(got) != list(range(len(got))):
            raise InvalidInputError(f"counterexample {kind} values are not numbered 0 .. {len(got) - 1}")
        arrays.append(np.array([got[i] for i in range(len(got))], dtype=np.float64))
    return word, arrays[0], arrays[1]


def check_counterexample(prop: VnnlibProperty, network_forward: Callable[[Array], Array], x: Array) -> bool:
    """Whether ``x`` is a real counterexample: in the box (tolerance 0) and ``f(x)`` in some disjunct.

    ``network_forward`` is evaluated here, in float64 (a :class:`~formulations.network.Network` or any
    callable); the outputs a solver or attack reported are never trusted (design.md, Soundness rules).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape != (prop.n_inputs,):
        raise InvalidInputError(f"counterexample has {x.size} values; the property has {prop.n_inputs} inputs")
    if not prop.contains_input(x):
        return False
    y = np.asarray(network_forward(x), dtype=np.float64).reshape(-1)
    if not np.isfinite(y).all():
        return False
    return prop.output_violates(y)
