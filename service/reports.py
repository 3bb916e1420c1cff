"""Read-side reports: job progress, the LP-versus-MIP comparison, signatures per digit.

Verdict logic of the comparison: both LP and MIP are sound, so an LP *verified* with a MIP *falsified*
(or the reverse) is a contradiction — a soundness bug somewhere — and is reported as ``conflict``.
An LP *unknown* next to a decided MIP is the relaxation's looseness (``lp_inconclusive``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from service.db import repositories as repo
from service.db.models import CertificateRow, JobRow


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


@dataclass
class ComparisonRow:
    item: int
    source_index: int | None
    label: int
    eps: float
    lp_verdict: str | None
    lp_lower: float | None
    mip_verdict: str | None
    mip_lower: float | None
    mip_upper: float | None
    mip_gap: float | None
    relaxation_gap: float | None  # exact lower bound minus the LP bound: what the relaxation loses
    agreement: str


@dataclass
class Comparison:
    job_id: int
    rows: list[ComparisonRow]
    summary: dict[str, Any] = field(default_factory=dict)


def compare(session: Session, job_id: int) -> Comparison:
    rows = []
    for query, lp, mip in repo.comparison_pairs(session, job_id):
        rows.append(ComparisonRow(
            item=query.item, source_index=query.source_index, label=query.label, eps=query.eps,
            lp_verdict=lp.verdict if lp else None, lp_lower=finite(lp.lower) if lp else None,
            mip_verdict=mip.verdict if mip else None, mip_lower=finite(mip.lower) if mip else None,
            mip_upper=finite(mip.upper) if mip else None, mip_gap=finite(mip.gap) if mip else None,
            relaxation_gap=finite(mip.lower - lp.lower) if lp and mip else None,
            agreement=agreement(lp, mip),
        ))
    return Comparison(job_id, rows, summarise(rows))


def summarise(rows: list[ComparisonRow]) -> dict[str, Any]:
    """Verified counts each way and where they differ, overall and per eps."""
    def tally(subset: list[ComparisonRow]) -> dict[str, int]:
        c = Counter()
        for r in subset:
            c["pairs"] += 1
            c["answered"] += r.agreement != "pending"
            c["lp_verified"] += r.lp_verdict == "verified"
            c["mip_verified"] += r.mip_verdict == "verified"
            c["both_verified"] += r.lp_verdict == "verified" and r.mip_verdict == "verified"
            c["mip_only_verified"] += r.mip_verdict == "verified" and r.lp_verdict != "verified"
            c["lp_only_verified"] += r.lp_verdict == "verified" and r.mip_verdict not in ("verified", None)
            c["mip_falsified"] += r.mip_verdict == "falsified"
            c["mip_unknown"] += r.mip_verdict == "unknown"
            c["conflicts"] += r.agreement == "conflict"
        keys = ("pairs", "answered", "lp_verified", "mip_verified", "both_verified", "mip_only_verified",
                "lp_only_verified", "mip_falsified", "mip_unknown", "conflicts")
        return {k: int(c[k]) for k in keys}

    by_eps: dict[float, list[ComparisonRow]] = defaultdict(list)
    for r in rows:
        by_eps[r.eps].append(r)
    return dict(total=tally(rows), by_eps=[dict(eps=e, **tally(rs)) for e, rs in sorted(by_eps.items())])


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
