"""Read-side reports: job progress, the LP-versus-MIP comparison, signatures per digit.

Verdict logic of the comparison: both LP and MIP are sound, so an LP *verified* with a MIP *falsified*
(or the reverse) is a contradiction — a soundness bug somewhere — and is reported as ``conflict``.
An LP *unknown* next to a decided MIP is the relaxation's looseness (``lp_inconclusive``).

Bounds: the LP certificate's ``lower`` is the relaxation's lower bound on the minimum margin, the MIP's
``[lower, upper]`` brackets the exact minimum to a tolerance, so ``mip.lower - lp.lower`` (the *relaxation gap*)
is what the relaxation loses; a gap below ``-GAP_TOLERANCE`` (relative + absolute) is flagged like a conflict.
An input that the network misclassifies (its centre falsifies the query) is counted apart from falsified ones.

A job that also asked for the k-neuron LP (``klp``, issue 20) gets its column beside them: its bound lies between
the LP's and the exact one (``klp_gain`` = klp - lp, ``klp_gap`` = mip - klp), and a k-LP *verified* next to a
MIP *falsified* is a conflict too.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from polycert.db import repositories as repo
from polycert.db.models import CertificateRow, JobRow, QueryRow


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def progress(session: Session, job: JobRow) -> dict[str, Any]:
    counts = repo.verdict_counts(session, job.id)
    by_method: dict[str, dict[str, int]] = defaultdict(dict)
    for (method, verdict), n in counts.items():
        by_method[method][verdict] = n
    return dict(total=job.total, done=job.done, errors=job.errors, remaining=job.total - job.done,
                fraction=(job.done / job.total if job.total else 1.0), verdicts=dict(by_method),
                chunks=repo.chunk_counts(session, job.id))


def agreement(lp: CertificateRow | None, mip: CertificateRow | None) -> str:
    if lp is None or mip is None:
        return "pending"
    if lp.verdict == mip.verdict:
        return "agree"
    if lp.verdict == "unknown":
        return "lp_inconclusive"
    if mip.verdict == "unknown":
        return "mip_inconclusive"
    return "conflict"


# The MIP's bracket is exact to the engine's tolerance (1e-4, relative + absolute), so its lower bound may sit
# that far below the true minimum, and hence below a tight LP bound; further below is a soundness problem.
GAP_TOLERANCE = 1e-4


@dataclass
class ComparisonRow:
    item: int
    source_index: int | None
    label: int
    eps: float
    lp_verdict: str | None
    lp_lower: float | None  # the LP relaxation's lower bound on the minimum margin
    mip_verdict: str | None
    mip_lower: float | None  # the exact minimum margin lies in [mip_lower, mip_upper]
    mip_upper: float | None
    mip_gap: float | None
    relaxation_gap: float | None  # exact lower bound minus the LP bound: what the relaxation loses
    agreement: str
    differ: bool = False  # both answered, with different verdicts
    misclassified: bool = False  # the input itself is misclassified: its centre falsifies the query
    negative_gap: bool = False  # the MIP lower bound lies below the LP bound beyond GAP_TOLERANCE
    klp_verdict: str | None = None  # the k-neuron LP's, when the job asked for it
    klp_lower: float | None = None
    klp_gain: float | None = None  # klp_lower - lp_lower: what the k-neuron constraints add to the LP
    klp_gap: float | None = None  # mip_lower - klp_lower: what the k-neuron relaxation still loses


@dataclass
class Comparison:
    job_id: int
    rows: list[ComparisonRow]
    summary: dict[str, Any] = field(default_factory=dict)


def is_misclassified(cert: CertificateRow | None) -> bool:
    """The network misclassifies the input itself, before any perturbation: the engine says so in the
    certificate (``extra["misclassified"]``, the centre's own margins); older certificates tell it by the
    stage that falsified them (the centre)."""
    if cert is None:
        return False
    flagged = (cert.extra or {}).get("misclassified")
    if flagged is not None:
        return bool(flagged)
    return cert.verdict == "falsified" and cert.stage == "center"


def relaxation_gap(lp_lower: float | None, mip_lower: float | None) -> float | None:
    return None if lp_lower is None or mip_lower is None else mip_lower - lp_lower


def is_negative_gap(lp_lower: float | None, mip_lower: float | None, tolerance: float = GAP_TOLERANCE) -> bool:
    return lp_lower is not None and mip_lower is not None and mip_lower < lp_lower - tolerance * (1.0 + abs(lp_lower))


def comparison_row(query: QueryRow, lp: CertificateRow | None, mip: CertificateRow | None,
                   klp: CertificateRow | None = None) -> ComparisonRow:
    lp_lower = finite(lp.lower) if lp else None
    mip_lower = finite(mip.lower) if mip else None
    klp_lower = finite(klp.lower) if klp else None
    state = agreement(lp, mip)
    if klp is not None and mip is not None and {klp.verdict, mip.verdict} == {"verified", "falsified"}:
        state = "conflict"  # the k-neuron LP is as sound as the others
    return ComparisonRow(
        item=query.item, source_index=query.source_index, label=query.label, eps=query.eps,
        lp_verdict=lp.verdict if lp else None, lp_lower=lp_lower,
        mip_verdict=mip.verdict if mip else None, mip_lower=mip_lower,
        mip_upper=finite(mip.upper) if mip else None, mip_gap=finite(mip.gap) if mip else None,
        relaxation_gap=relaxation_gap(lp_lower, mip_lower), agreement=state,
        differ=state not in ("agree", "pending"), misclassified=is_misclassified(lp) or is_misclassified(mip),
        negative_gap=is_negative_gap(lp_lower, mip_lower) or is_negative_gap(klp_lower, mip_lower),
        klp_verdict=klp.verdict if klp else None, klp_lower=klp_lower,
        klp_gain=relaxation_gap(lp_lower, klp_lower), klp_gap=relaxation_gap(klp_lower, mip_lower),
    )


def compare(session: Session, job_id: int) -> Comparison:
    rows = [comparison_row(query, lp, mip, klp) for query, lp, mip, klp in repo.comparison_pairs(session, job_id)]
    return Comparison(job_id, rows, summarise(rows))


def select_rows(rows: list[ComparisonRow], *, differ: bool | None = None, eps: float | None = None,
                digit: int | None = None) -> list[ComparisonRow]:
    """The rows a filter keeps; eps travels as text in URLs, so it matches to a relative 1e-9."""
    def keep(r: ComparisonRow) -> bool:
        return ((differ is None or r.differ == differ)
                and (eps is None or abs(r.eps - eps) <= 1e-9 * max(1.0, abs(eps)))
                and (digit is None or r.label == digit))
    return [r for r in rows if keep(r)]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between order statistics (NumPy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def outcome(r: ComparisonRow) -> str:
    """What a pair says about its query; both methods are sound, so either one's decision settles it.
    A misclassified input is its own outcome so that it never counts as a falsified robustness query."""
    if r.agreement == "pending":
        return "pending"
    if r.agreement == "conflict":
        return "conflict"
    if r.misclassified:
        return "misclassified"
    if "verified" in (r.lp_verdict, r.mip_verdict):
        return "verified"
    if "falsified" in (r.lp_verdict, r.mip_verdict):
        return "falsified"
    return "unknown"


TALLY_KEYS = ("pairs", "answered", "pending", "misclassified", "verified", "falsified", "unknown", "conflicts",
              "lp_verified", "mip_verified", "both_verified", "mip_only_verified", "lp_only_verified",
              "mip_falsified", "mip_unknown", "negative_gaps", "klp_pairs", "klp_verified", "klp_over_lp",
              "mip_over_klp")


def tally(rows: list[ComparisonRow]) -> dict[str, Any]:
    """Counts of a set of pairs. ``pending + misclassified + verified + falsified + unknown + conflicts`` is
    ``pairs``; the ``lp_*`` / ``mip_*`` counts are per method; the gap statistics are over the pairs whose
    relaxation gap is a number."""
    c: Counter[str] = Counter()
    for r in rows:
        c["pairs"] += 1
        c["answered"] += r.agreement != "pending"
        kind = outcome(r)
        c["conflicts" if kind == "conflict" else kind] += 1
        c["lp_verified"] += r.lp_verdict == "verified"
        c["mip_verified"] += r.mip_verdict == "verified"
        c["both_verified"] += r.lp_verdict == "verified" and r.mip_verdict == "verified"
        c["mip_only_verified"] += r.mip_verdict == "verified" and r.lp_verdict not in ("verified", None)
        c["lp_only_verified"] += r.lp_verdict == "verified" and r.mip_verdict not in ("verified", None)
        c["mip_falsified"] += r.mip_verdict == "falsified"
        c["mip_unknown"] += r.mip_verdict == "unknown"
        c["negative_gaps"] += r.negative_gap
        if r.klp_verdict is not None:
            c["klp_pairs"] += 1
            c["klp_verified"] += r.klp_verdict == "verified"
            c["klp_over_lp"] += r.klp_verdict == "verified" and r.lp_verdict != "verified"
            c["mip_over_klp"] += r.mip_verdict == "verified" and r.klp_verdict != "verified"
    gaps = [r.relaxation_gap for r in rows if r.relaxation_gap is not None]
    klp_gaps = [r.klp_gap for r in rows if r.klp_gap is not None]
    out: dict[str, Any] = {k: int(c[k]) for k in TALLY_KEYS}
    out.update(gaps=len(gaps), gap_median=percentile(gaps, 50), gap_p90=percentile(gaps, 90),
               gap_max=max(gaps, default=None), klp_gap_median=percentile(klp_gaps, 50),
               klp_gap_p90=percentile(klp_gaps, 90), klp_gap_max=max(klp_gaps, default=None))
    return out


def summarise(rows: list[ComparisonRow]) -> dict[str, Any]:
    """Counts and relaxation-gap statistics overall, per eps and per digit (the true label)."""
    def groups(key) -> list[tuple[Any, list[ComparisonRow]]]:
        by: dict[Any, list[ComparisonRow]] = defaultdict(list)
        for r in rows:
            by[key(r)].append(r)
        return sorted(by.items())

    return dict(tolerance=GAP_TOLERANCE, total=tally(rows),
                by_eps=[dict(eps=e, **tally(rs)) for e, rs in groups(lambda r: r.eps)],
                by_digit=[dict(digit=d, **tally(rs)) for d, rs in groups(lambda r: r.label)])


def pixel_maps(session: Session, digit: int, input_size: int | None, **scope: Any) -> dict[str, Any]:
    """Per-digit pixel frequency maps: the share of certificates in which each pixel sits at its lower /
    upper bound at the optimum."""
    n = repo.count_certificates_for_digit(session, digit, **scope)
    rows = repo.pixel_frequencies(session, digit, **scope)
    size = input_size or (max((p for _, p, _ in rows), default=-1) + 1)
    maps = {kind: [0.0] * size for kind in ("input_lower", "input_upper")}
    counts = {kind: [0] * size for kind in maps}
    for kind, pixel, count in rows:
        if kind in maps and 0 <= pixel < size:
            counts[kind][pixel] = count
            maps[kind][pixel] = count / n if n else 0.0
    return dict(digit=digit, certificates=n, input_size=size, frequency=maps, counts=counts)


def envelope_activity(session: Session, digit: int, **scope: Any) -> dict[str, Any]:
    n = repo.count_certificates_for_digit(session, digit, **scope)
    rows = [dict(kind=k, layer=l, neuron=u, index=i, count=c, frequency=(c / n if n else 0.0))
            for k, l, u, i, c in repo.envelope_activity(session, digit, **scope)]
    return dict(digit=digit, certificates=n, activity=rows)


# -- signatures by digit, per network (issue 16 item 4) ---------------------------------------------
SIGNATURE_SOURCES = {"signature": ("signature",), "robustness": ("robustness",)}  # source -> job kinds


@dataclass(frozen=True)
class SignatureScope:
    """What ``GET /signatures`` aggregates: one network's certificates of one digit, of the job kinds of
    ``source`` (None: signature and robustness jobs), optionally of one job, method and eps."""

    network: Any  # NetworkRow, or None when no certificate of these kinds is stored yet
    digit: int
    job_id: int | None
    method: str | None
    eps: float | None
    source: str | None
    verdict: str | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return SIGNATURE_SOURCES[self.source] if self.source else ("signature", "robustness")

    def filters(self) -> dict[str, Any]:
        return dict(job_id=self.job_id, method=self.method, eps=self.eps, verdict=self.verdict,
                    network_id=None if self.network is None else self.network.id, kinds=self.kinds)


def _network_by_key(session: Session, key: str):
    from polycert.errors import NotFoundError

    row = repo.get_network(session, int(key)) if key.strip().isdigit() else repo.get_network_by_name(session, key)
    if row is None:
        known = ", ".join(f"{n.id} ({n.name})" for n in repo.list_networks(session)) or "none"
        raise NotFoundError(f"no network {key!r}; registered: {known}")
    return row


def signature_scope(session: Session, digit: int, *, network: str | None = None, job_id: int | None = None,
                    method: str | None = None, eps: float | None = None, source: str | None = None,
                    verdict: str | None = None) -> SignatureScope:
    """Resolve and check a signature lookup. Raises NotFoundError (unknown network or job) and
    InvalidInputError (a job of another network; no network named while several have certificates; a
    digit that is not a class of the network; an unknown source)."""
    from polycert.formulations.errors import InvalidInputError
    from polycert.errors import NotFoundError

    if digit < 0:
        raise InvalidInputError(f"digit must be >= 0, got {digit}")
    if source is not None and source not in SIGNATURE_SOURCES:
        raise InvalidInputError(f"source must be one of {', '.join(SIGNATURE_SOURCES)}, got {source!r}")
    row = None if network is None else _network_by_key(session, network)
    if job_id is not None:
        job = repo.get_job(session, job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id}")
        if row is not None and job.network_id != row.id:
            raise InvalidInputError(f"job {job_id} is of network {job.network_id} ({job.network.name}), "
                                    f"not of network {row.id} ({row.name})")
        row = row or job.network
    scope = SignatureScope(row, int(digit), job_id, method, eps, source, verdict)
    if row is None:
        stored = repo.networks_with_certificates(session, scope.kinds)
        if len(stored) > 1:
            names = ", ".join(f"{n.id} ({n.name})" for n in stored)
            raise InvalidInputError(f"certificates of {len(stored)} networks are stored ({names}): name one with network=")
        scope = SignatureScope(stored[0] if stored else None, int(digit), job_id, method, eps, source, verdict)
    if scope.network is not None and not 0 <= scope.digit < scope.network.output_size:
        raise InvalidInputError(f"digit {digit} is not a class of {scope.network.name!r} (0..{scope.network.output_size - 1})")
    return scope


def region_names(network_row) -> list[list[str]]:
    """Per hidden layer, the names of ``formulations.signatures.region_of``'s regions."""
    from polycert.formulations.signatures import activation_regions
    from polycert.workers.networks import cached_network, stored_network

    network = cached_network(network_row.digest) or stored_network(network_row)
    return [list(activation_regions(layer.activation)[1]) for layer in network.hidden_layers]


def digit_signatures(session: Session, scope: SignatureScope) -> dict[str, Any]:
    """n, the per-pixel shares at the lower / upper bound (length ``input_size`` of the network, with
    the image side when the input is a square image), and the per-neuron shares of each tight kind
    (envelope line, segment, region, ReLU phase) grouped by (layer, neuron, kind, index)."""
    filters = scope.filters()
    n = repo.count_certificates_for_digit(session, scope.digit, **filters)
    size = scope.network.input_size if scope.network is not None else 0
    counts = {"input_lower": [0] * size, "input_upper": [0] * size}
    for kind, pixel, count in repo.pixel_frequencies(session, scope.digit, **filters):
        if kind in counts and 0 <= pixel < size:
            counts[kind][pixel] = count
    side = math.isqrt(size)
    neurons = [dict(layer=l, neuron=u, kind=k, index=i, count=c, share=c / n if n else 0.0)
               for k, l, u, i, c in repo.envelope_activity(session, scope.digit, **filters)]
    return dict(
        digit=scope.digit, n=n, source=scope.source or "all", job_id=scope.job_id, method=scope.method, eps=scope.eps,
        network=None if scope.network is None else dict(id=scope.network.id, name=scope.network.name,
                                                        input_size=scope.network.input_size,
                                                        output_size=scope.network.output_size),
        input_size=size, image_side=side if side * side == size and size else None,
        pixel_lower=[c / n if n else 0.0 for c in counts["input_lower"]],
        pixel_upper=[c / n if n else 0.0 for c in counts["input_upper"]],
        pixel_counts=counts, neurons=neurons,
        region_names=region_names(scope.network) if scope.network is not None else [],
    )


# -- the dashboard's read-side views (issue 18): a network's layers, its forward pass, robustness curves ----
def image_side(size: int) -> int | None:
    """The side of a square image of ``size`` pixels (7 for 49, 28 for 784), else None."""
    side = math.isqrt(size)
    return side if size and side * side == size else None


def network_of(row):
    """The ``Network`` of a stored row, through the loader the workers use (cached by digest)."""
    from polycert.workers.networks import stored_network

    return stored_network(row)


def network_layers(row) -> dict[str, Any]:
    """Per layer: weight matrix (n_out x n_in, ``z = W a + b``), bias, activation and the neurons' names
    where the study named them (verianet's Frame, Spine, Belt); with the input's image side where the input
    is a square image and the preprocessing the network's metadata names."""
    from polycert.study import NEURON_NAMES  # the study's names of verianet's first-layer neurons

    network = network_of(row)
    named = NEURON_NAMES.get(row.name)
    layers = [dict(index=i, n_in=layer.n_in, n_out=layer.n_out, activation=layer.activation.name,
                   weight=layer.weight.tolist(), bias=layer.bias.tolist(),
                   names=list(named) if i == 0 and named and len(named) == layer.n_out else None)
              for i, layer in enumerate(network.layers)]
    return dict(network_id=row.id, name=row.name, sizes=list(network.sizes), image_side=image_side(network.input_size),
                preprocessing=(network.metadata or {}).get("preprocessing"), layers=layers)


def forward(row, x) -> dict[str, Any]:
    """The network's own forward pass at ``x``: per layer the pre-activations ``z`` and activations, the
    logits (the last layer's activations) and the predicted class. Raises InvalidInputError on a bad input."""
    import numpy as np

    network = network_of(row)
    trace = network.trace(np.asarray(x, dtype=np.float64))
    logits = trace[-1][1]
    return dict(network_id=row.id, input=network.check_input(x).tolist(),
                layers=[dict(index=i, pre=z.tolist(), post=a.tolist()) for i, (z, a) in enumerate(trace)],
                logits=logits.tolist(), predicted=int(np.argmax(logits)))


#: stages that decide a query before any solver: the centre itself, or the cheap attack
ATTACK_STAGES = ("center", "attack")


def _attacked(pair: dict[str, tuple[str, str]]) -> bool:
    return any(v == "falsified" and s in ATTACK_STAGES for v, s in pair.values())


def _curve_points(eps_values: list[float], by_eps: dict[float, dict[int, dict[str, tuple[str, str]]]],
                  methods: tuple[str, ...]) -> list[dict[str, Any]]:
    """One point per eps (ascending). An input the attack falsified at a smaller eps counts as attacked at
    every larger one: the balls around one centre are nested, so the counterexample lies in the larger too."""
    points, attacked_before = [], set()
    for eps in eps_values:
        pairs = by_eps.get(eps, {})
        n = len(pairs)
        lp = sum(p.get("lp", ("", ""))[0] == "verified" for p in pairs.values())
        mip = sum(p.get("mip", ("", ""))[0] == "verified" for p in pairs.values())
        klp = sum(p.get("klp", ("", ""))[0] == "verified" for p in pairs.values())
        attacked_before |= {item for item, p in pairs.items() if _attacked(p)}
        attacked = sum(item in attacked_before for item in pairs)

        def share(count: int, method: str | None) -> float | None:
            return None if (method is not None and method not in methods) or not n else count / n

        points.append(dict(eps=eps, n=n, lp_verified=lp, mip_verified=mip, attack_falsified=attacked,
                           lp=share(lp, "lp"), mip=share(mip, "mip"), attack=share(n - attacked, None),
                           klp_verified=klp, klp=share(klp, "klp")))
    return points


def robustness_curves(session: Session, job: JobRow) -> dict[str, Any]:
    """Per digit (the true label) and eps, over the (item, eps) pairs with a stored certificate: the share
    verified by the LP relaxation (``lp``), by the exact MIP (``mip``), and the share that the attack (or the
    centre itself) does not falsify at this eps or a smaller one (``attack``: an upper bound on the robust
    share, as the study's attack curve; a pair falsified only by a solver's counterexample stays under it).
    Misclassified inputs count as not verified. A method the job did not run has share None."""
    from polycert.batches import method_list

    methods = method_list(job.parameters.get("methods"))
    by_digit: dict[int, dict[float, dict[int, dict[str, tuple[str, str]]]]] = defaultdict(lambda: defaultdict(dict))
    total: dict[float, dict[int, dict[str, tuple[str, str]]]] = defaultdict(dict)
    rows = repo.outcomes(session, job.id)
    for item, label, eps, method, verdict, stage in rows:
        by_digit[label][eps].setdefault(item, {})[method] = (verdict, stage)
        total[eps].setdefault(item, {})[method] = (verdict, stage)
    eps_values = sorted(float(e) for e in job.parameters.get("eps", [])) or sorted(total)
    return dict(
        job_id=job.id, methods=list(methods), eps=eps_values,
        total=_curve_points(eps_values, total, methods),
        digits=[dict(digit=d, points=_curve_points(eps_values, by_digit[d], methods)) for d in sorted(by_digit)],
    )
