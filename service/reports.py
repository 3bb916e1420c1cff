"""Read-side reports: job progress, the LP-versus-MIP comparison, signatures per digit.

Verdict logic of the comparison: both LP and MIP are sound, so an LP *verified* with a MIP *falsified*
(or the reverse) is a contradiction — a soundness bug somewhere — and is reported as ``conflict``.
An LP *unknown* next to a decided MIP is the relaxation's looseness (``lp_inconclusive``).

Bounds: the LP certificate's ``lower`` is the relaxation's lower bound on the minimum margin, the MIP's
``[lower, upper]`` brackets the exact minimum to a tolerance, so ``mip.lower - lp.lower`` (the *relaxation gap*)
is what the relaxation loses; a gap below ``-GAP_TOLERANCE`` (relative + absolute) is flagged like a conflict.
An input that the network misclassifies (its centre falsifies the query) is counted apart from falsified ones.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from service.db import repositories as repo
from service.db.models import CertificateRow, JobRow, QueryRow


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


@dataclass
class Comparison:
    job_id: int
    rows: list[ComparisonRow]
    summary: dict[str, Any] = field(default_factory=dict)


def is_misclassified(cert: CertificateRow | None) -> bool:
    """The cascade's first stage evaluates the centre itself; a falsification there means the network
    misclassifies the input before any perturbation."""
    return cert is not None and cert.verdict == "falsified" and cert.stage == "center"


def relaxation_gap(lp_lower: float | None, mip_lower: float | None) -> float | None:
    return None if lp_lower is None or mip_lower is None else mip_lower - lp_lower


def is_negative_gap(lp_lower: float | None, mip_lower: float | None, tolerance: float = GAP_TOLERANCE) -> bool:
    return lp_lower is not None and mip_lower is not None and mip_lower < lp_lower - tolerance * (1.0 + abs(lp_lower))


def comparison_row(query: QueryRow, lp: CertificateRow | None, mip: CertificateRow | None) -> ComparisonRow:
    lp_lower = finite(lp.lower) if lp else None
    mip_lower = finite(mip.lower) if mip else None
    state = agreement(lp, mip)
    return ComparisonRow(
        item=query.item, source_index=query.source_index, label=query.label, eps=query.eps,
        lp_verdict=lp.verdict if lp else None, lp_lower=lp_lower,
        mip_verdict=mip.verdict if mip else None, mip_lower=mip_lower,
        mip_upper=finite(mip.upper) if mip else None, mip_gap=finite(mip.gap) if mip else None,
        relaxation_gap=relaxation_gap(lp_lower, mip_lower), agreement=state,
        differ=state not in ("agree", "pending"), misclassified=is_misclassified(lp) or is_misclassified(mip),
        negative_gap=is_negative_gap(lp_lower, mip_lower),
    )


def compare(session: Session, job_id: int) -> Comparison:
    rows = [comparison_row(query, lp, mip) for query, lp, mip in repo.comparison_pairs(session, job_id)]
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
              "mip_falsified", "mip_unknown", "negative_gaps")


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
    gaps = [r.relaxation_gap for r in rows if r.relaxation_gap is not None]
    out: dict[str, Any] = {k: int(c[k]) for k in TALLY_KEYS}
    out.update(gaps=len(gaps), gap_median=percentile(gaps, 50), gap_p90=percentile(gaps, 90),
               gap_max=max(gaps, default=None))
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
