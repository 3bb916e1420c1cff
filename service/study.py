"""``polycert study``: the original study's experiments with sound certificates (issue 3, items 3-8).

Runs, on one network and its test data (:mod:`service.zoo`, :mod:`service.datasets`):

1. signatures (item 3): LP and MIP maximisation of logit d over the eps-ball of test samples of digit d,
   pixel frequency maps and tight-line / region frequencies, exact binomial tests with Benjamini–Hochberg
   against the rate pooled over the *other* digits (:mod:`formulations.signatures`);
2. robustness rates (item 4) per digit and eps over the first N test images of each digit: symbolic bounds
   and a batched PGD attack decide most queries; the rest go to :func:`formulations.robustness.certify`
   (LP then refined MIP). Symbolic-verified counts as LP-verified (the LP contains the symbolic lines).
   Intervals are Wilson score intervals (95 %). Beside them, the study's flawed envelope
   (:func:`formulations.study.flawed_verify`, our reconstruction) and how many of its "verified" answers
   an attack or the exact MIP refutes;
3. the LP as a classifier (item 5), 4. the system-level problem from each digit's best-classified image
   (item 6), 5. neuron patterns (item 7);

and writes ``README.md``, ``results.json`` and small PNG figures into the output folder (item 8).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from polycert.formulations.attack import pgd_attack
from polycert.formulations.bounds import margin_bounds_batch
from polycert.formulations.certificate import Verdict
from polycert.formulations.errors import InvalidInputError, PolyCertError, UnsoundAnswerError
from polycert.formulations.network import Network
from polycert.formulations.robustness import certify
from polycert.formulations.signatures import (SIDE_NAMES, Signature, SignatureSummary, activation_regions, aggregate,
                                              maximize_logit, significant)
from polycert.formulations.study import (flawed_verify, ideal_indices, logit_maxima, lp_prediction, neuron_patterns,
                                system_level)

Array = np.ndarray

STUDY_EPS = (0.005, 0.01, 0.02, 0.05, 0.1)
NEURON_NAMES = {"verianet": ("Frame", "Spine", "Belt")}


@dataclass
class StudyOptions:
    """What to run; the defaults are the study's design where it fits the time budget."""

    per_digit: int = 600
    eps: tuple[float, ...] = STUDY_EPS
    signature_per_digit: int = 50
    signature_eps: float = 0.05
    signature_tolerance: float = 1e-3  # MIP: stop refining when bound - achieved <= this
    classifier_per_digit: int = 20
    lambdas: tuple[float, ...] = (0.0, 0.1)
    flawed_per_digit: int | None = None  # default: per_digit
    mip_time_limit: float = 30.0
    attack_steps: int = 50
    attack_restarts: int = 3
    seed: int = 0
    solver: str | None = None
    lp_solver: str | None = None
    progress: bool = True
    dpi: int = 80


# -- small pure helpers --------------------------------------------------------------------------------


def wilson_interval(k: Array | int, n: Array | int, z: float = 1.959963984540054) -> tuple[Array, Array]:
    """Wilson score interval of a binomial proportion k/n (Wilson 1927), 95 % by default; (0, 1) when n = 0."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    safe = np.where(n > 0, n, 1.0)
    p = k / safe
    denom = 1.0 + z * z / safe
    centre = (p + z * z / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / denom
    lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return lo, hi


def first_per_digit(y: Array, count: int, n_classes: int = 10) -> Array:
    """Indices of the first ``count`` test images of each digit, digit by digit (the study's design)."""
    if count < 1:
        raise InvalidInputError(f"per-digit count must be >= 1, got {count}")
    y = np.asarray(y)
    return np.concatenate([np.flatnonzero(y == c)[:count] for c in range(n_classes)])


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=True, dynamic_ncols=True)


def load_study_network(name: str) -> tuple[Network, Array, Array]:
    """A built-in network (or a network file with a 7x7 preprocessing in its metadata) and its test set."""
    from polycert import zoo
    from polycert.datasets import load_preprocessed

    path = Path(name)
    if path.suffix and path.exists():
        from polycert.formulations.loaders import load_network

        network = load_network(path)
    else:
        network = zoo.load_builtin(name)
    preprocessing = network.metadata.get("preprocessing", "mnist7-area")
    x, y = load_preprocessed(preprocessing, "test")
    if x.shape[1] != network.input_size:
        raise InvalidInputError(f"network {network.name} takes {network.input_size} inputs; {preprocessing} has {x.shape[1]}")
    return network, x, y


# -- item 4: robustness rates ----------------------------------------------------------------------------


@dataclass
class QueryOutcome:
    """Per query: codes, so the tables can be recomputed. status: verified / falsified / unknown / error."""

    index: Array
    label: Array
    eps: float
    symbolic: Array
    lp_verified: Array
    status: Array
    attack_found: Array
    flawed_checked: Array
    flawed_verified: Array
    flawed_infeasible: Array


def robustness_queries(network: Network, x: Array, y: Array, index: Array, eps: float, opts: StudyOptions,
                       flawed_mask: Array, bar) -> QueryOutcome:
    """Decide every query of one eps: symbolic -> attack -> certify (LP, MIP) for the rest; flawed LP too."""
    n = len(index)
    xs, ys = x[index], y[index]
    lo = np.nextafter(np.clip(xs - eps, 0.0, 1.0), -np.inf)
    hi = np.nextafter(np.clip(xs + eps, 0.0, 1.0), np.inf)
    m_lo, _ = margin_bounds_batch(network, np.maximum(lo, 0.0), np.minimum(hi, 1.0), ys)
    m_lo[np.arange(n), ys] = np.inf
    symbolic = m_lo.min(axis=1) > 0.0
    attack = pgd_attack(network, xs, ys, eps, steps=opts.attack_steps, restarts=opts.attack_restarts, seed=opts.seed)
    found = np.asarray(attack.found, dtype=bool)
    if (symbolic & found).any():
        raise UnsoundAnswerError(f"eps {eps}: symbolic bounds verified a query the attack falsified")
    status = np.where(symbolic, "verified", np.where(found, "falsified", "unknown")).astype(object)
    lp_verified = symbolic.copy()
    bar.update(int((symbolic | found).sum()))
    for i in np.flatnonzero(~symbolic & ~found):
        try:
            # the sign is all the rate tables need; lp_solver is the flawed baseline's below
            cert = certify(network, xs[i], int(ys[i]), eps, method="mip", solver=opts.solver, answer="verdict",
                           attack=False, time_limit=opts.mip_time_limit, seed=opts.seed)
        except UnsoundAnswerError:
            status[i] = "error"
        else:
            status[i] = cert.verdict.value
            lp_verified[i] = cert.verdict == Verdict.VERIFIED and cert.stage in ("symbolic", "lp")
        bar.update(1)
    flawed_v = np.zeros(n, dtype=bool)
    flawed_inf = np.zeros(n, dtype=bool)
    order = np.argsort(attack.per_target_margins, axis=1)
    for i in np.flatnonzero(flawed_mask):
        ans = flawed_verify(network, xs[i], int(ys[i]), eps, solver=opts.lp_solver, target_order=order[i])
        flawed_v[i], flawed_inf[i] = ans.verified, ans.infeasible
        bar.update(1)
    return QueryOutcome(index, ys, eps, symbolic, lp_verified, status, found, flawed_mask.copy(), flawed_v, flawed_inf)


def rate_rows(outcomes: Sequence[QueryOutcome], n_classes: int = 10) -> list[dict]:
    """Per digit and eps: counts and rates with Wilson intervals (pure)."""
    rows = []
    for out in outcomes:
        for c in [*range(n_classes), None]:
            sel = np.ones(len(out.label), bool) if c is None else out.label == c
            n = int(sel.sum())
            counts = dict(
                lp_verified=int((out.lp_verified & sel).sum()),
                mip_verified=int(((out.status == "verified") & sel).sum()),
                falsified=int(((out.status == "falsified") & sel).sum()),
                unknown=int(((out.status == "unknown") & sel).sum()),
                errors=int(((out.status == "error") & sel).sum()),
                attack_falsified=int((out.attack_found & sel).sum()),
                symbolic_verified=int((out.symbolic & sel).sum()),
            )
            fsel = sel & out.flawed_checked
            nf = int(fsel.sum())
            flawed = dict(
                flawed_n=nf,
                flawed_verified=int((out.flawed_verified & fsel).sum()),
                flawed_refuted=int((out.flawed_verified & fsel & (out.status == "falsified")).sum()),
                flawed_unconfirmed=int((out.flawed_verified & fsel & (out.status == "unknown")).sum()),
                flawed_infeasible=int((out.flawed_infeasible & fsel).sum()),
            )
            row = dict(digit="all" if c is None else c, eps=out.eps, n=n, **counts, **flawed)
            for key in ("lp_verified", "mip_verified", "falsified", "unknown"):
                lo, hi = wilson_interval(counts[key], n)
                row[f"{key}_rate"] = counts[key] / n if n else float("nan")
                row[f"{key}_ci"] = (float(lo), float(hi))
            lo, hi = wilson_interval(flawed["flawed_verified"], nf)
            row["flawed_verified_rate"] = flawed["flawed_verified"] / nf if nf else float("nan")
            row["flawed_verified_ci"] = (float(lo), float(hi))
            rows.append(row)
    return rows


# -- item 3: signatures -------------------------------------------------------------------------------------


def signature_study(network: Network, x: Array, y: Array, opts: StudyOptions, bar) -> dict:
    idx = first_per_digit(y, opts.signature_per_digit, network.output_size)
    sigs: dict[str, dict[int, list[Signature]]] = {"lp": {}, "mip": {}}
    failures = {"lp": 0, "mip": 0}
    for i in idx:
        c = int(y[i])
        for method in ("lp", "mip"):
            try:
                sig = maximize_logit(network, x[i], c, opts.signature_eps, method=method,
                                     solver=opts.lp_solver if method == "lp" else opts.solver,
                                     time_limit=opts.mip_time_limit, tolerance=opts.signature_tolerance)
            except PolyCertError:
                failures[method] += 1
            else:
                sigs[method].setdefault(c, []).append(sig)
            bar.update(1)
    n_hidden = [layer.n_out for layer in network.hidden_layers]
    _, region_names = activation_regions(network.layers[0].activation)
    summaries = {m: {c: aggregate(v, n_hidden, len(region_names)) for c, v in by.items()} for m, by in sigs.items()}
    bounds = {m: {c: [sg.bound for sg in v] for c, v in by.items()} for m, by in sigs.items()}
    return dict(summaries=summaries, bounds=bounds, failures=failures, region_names=region_names, n_hidden=n_hidden)


def stored_signature_study(session, job_id: int, network: Network) -> dict:
    """:func:`signature_study`'s result from a signature job's stored certificates (issue 16: the study's
    signature design through the queue, at any size): the same counts, read off the tight constraints each
    certificate stored (pixels at a bound, LP line sides, the MIP optimum's regions)."""
    from polycert.db import repositories as repo

    n_hidden = [layer.n_out for layer in network.hidden_layers]
    offsets = np.concatenate([[0], np.cumsum(n_hidden)]).astype(int)
    _, region_names = activation_regions(network.layers[0].activation)
    units, d = int(offsets[-1]), network.input_size
    counts: dict[tuple[str, int], dict[str, Array | int]] = {}

    def blank() -> dict:
        return dict(n=0, pixel_lower=np.zeros(d, np.int64), pixel_upper=np.zeros(d, np.int64),
                    sides=np.zeros((units, len(SIDE_NAMES)), np.int64), regions=np.zeros((units, len(region_names)), np.int64))

    def close(key, sides: Array, regions: dict) -> None:
        acc = counts.setdefault(key, blank())
        acc["n"] += 1
        acc["sides"][np.arange(units), sides] += 1
        for unit, r in regions.items():
            acc["regions"][unit, r] += 1

    current, key, sides, regions = None, None, np.zeros(units, np.int64), {}
    for cert_id, label, method, kind, layer, neuron, index, pixel in repo.job_signature_tags(session, job_id):
        if cert_id != current:
            if current is not None:
                close(key, sides, regions)
            current, key, sides, regions = cert_id, (method, int(label)), np.zeros(units, np.int64), {}
            counts.setdefault(key, blank())
        acc = counts[key]
        if kind in ("input_lower", "input_upper") and pixel is not None and 0 <= pixel < d:
            acc["pixel_" + kind.split("_")[1]][pixel] += 1
        elif kind in ("envelope_lower", "envelope_upper") and layer is not None:
            sides[offsets[layer] + neuron] |= 1 if kind == "envelope_lower" else 2
        elif kind == "region" and layer is not None:
            regions[int(offsets[layer] + neuron)] = int(index)
    if current is not None:
        close(key, sides, regions)
    summaries: dict[str, dict] = {"lp": {}, "mip": {}}
    for (method, c), acc in counts.items():
        if acc["n"]:
            summaries.setdefault(method, {})[c] = SignatureSummary(acc["n"], acc["pixel_lower"], acc["pixel_upper"],
                                                                   acc["sides"], acc["regions"])
    bounds: dict[str, dict] = {"lp": {}, "mip": {}}
    failures = {"lp": 0, "mip": 0}
    for label, method, _verdict, upper, failed in repo.job_certificate_bounds(session, job_id):
        if failed or upper is None or not np.isfinite(upper):
            failures[method] = failures.get(method, 0) + 1
        else:
            bounds.setdefault(method, {}).setdefault(int(label), []).append(float(upper))
    return dict(summaries=summaries, bounds=bounds, failures=failures, region_names=region_names, n_hidden=n_hidden)


def pooled_significance(summaries: dict, c: int, field_name: str, *, alpha: float = 0.05) -> tuple[Array, Array, Array]:
    """q-values and mask of digit c's counts of ``field_name`` against the rate pooled over the other digits."""
    own = summaries[c]
    others = [s for k, s in summaries.items() if k != c]
    if not others:
        counts = getattr(own, field_name)
        return np.ones(counts.shape), np.zeros(counts.shape, bool), np.full(counts.shape, np.nan)
    pooled = sum(getattr(s, field_name) for s in others) / sum(s.n for s in others)
    q, mask = significant(getattr(own, field_name), own.n, pooled, alpha=alpha)
    return q, mask, pooled


# -- items 5-7 -----------------------------------------------------------------------------------------------


def classifier_study(network: Network, x: Array, y: Array, opts: StudyOptions, bar) -> list[dict]:
    idx = first_per_digit(y, opts.classifier_per_digit, network.output_size)
    net_pred = network.predict(x[idx])
    rows = []
    for eps in opts.eps:
        preds = []
        for i in idx:
            preds.append(int(lp_prediction(logit_maxima(network, x[i], eps, solver=opts.lp_solver).upper)))
            bar.update(1)
        preds = np.array(preds)
        n = len(idx)
        acc, agree = int((preds == y[idx]).sum()), int((preds == net_pred).sum())
        rows.append(dict(eps=eps, n=n, lp_accuracy=acc / n, lp_accuracy_ci=tuple(map(float, wilson_interval(acc, n))),
                         network_accuracy=float((net_pred == y[idx]).mean()), agreement=agree / n,
                         agreement_ci=tuple(map(float, wilson_interval(agree, n)))))
    return rows


def system_study(network: Network, x: Array, y: Array, opts: StudyOptions, bar) -> tuple[list[dict], dict]:
    ideal = ideal_indices(network, x, y)
    rows, images = [], {}
    for c, i in enumerate(ideal):
        if i < 0:
            continue
        for lam in opts.lambdas:
            row = dict(digit=c, index=int(i), lam=lam)
            row["x0_margin"] = float(np.sort(network.forward(x[i]))[-1] - np.sort(network.forward(x[i]))[-2]) \
                if network.predict(x[i][None])[0] == c else float("nan")
            for method in ("lp", "mip"):
                try:
                    sol = system_level(network, x[i], c, lam, eps=1.0, method=method,
                                       solver=opts.lp_solver if method == "lp" else opts.solver,
                                       time_limit=opts.mip_time_limit)
                except PolyCertError as exc:
                    row[f"{method}_error"] = str(exc)
                else:
                    row.update({f"{method}_bound": sol.bound, f"{method}_achieved": sol.achieved,
                                f"{method}_margin": sol.margin, f"{method}_l1": sol.distance,
                                f"{method}_class": int(network.predict(sol.point[None])[0]),
                                f"{method}_violation": float(sol.model.max_violation(sol.primal))})
                    images[(c, lam, method)] = sol.point
                bar.update(1)
            rows.append(row)
    return rows, dict(ideal=ideal, images=images)


# -- figures -------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_signatures(sig: dict, side: int, path: Path, dpi: int) -> None:
    plt = _plt()
    rows = [(m, f) for m in ("lp", "mip") for f in ("pixel_lower", "pixel_upper")]
    fig, axes = plt.subplots(len(rows), 10, figsize=(12, 1.35 * len(rows) + 0.4))
    for r, (method, fld) in enumerate(rows):
        for c in range(10):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            summ = sig["summaries"][method].get(c)
            if summ is None:
                continue
            ax.imshow(summ.frequency(getattr(summ, fld)).reshape(side, side), cmap="magma", vmin=0, vmax=1)
            _, mask, _ = pooled_significance(sig["summaries"][method], c, fld)
            yy, xx = np.divmod(np.flatnonzero(mask), side)
            ax.scatter(xx, yy, s=4, c="cyan", marker="o")
            if r == 0:
                ax.set_title(str(c), fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{method.upper()} {fld.split('_')[1]}", fontsize=8)
    fig.suptitle("share of optima with the pixel at its bound (dots: differs from other digits, BH q<=0.05)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def figure_activity(sig: dict, names: Sequence[str], path: Path, dpi: int) -> None:
    plt = _plt()
    units = len(names)
    fig, axes = plt.subplots(2, units, figsize=(2.1 * units, 4.2), sharey=True)
    digits = np.arange(10)
    for j in range(units):
        for r, (method, fld, labels) in enumerate((("lp", "sides", SIDE_NAMES), ("mip", "regions", sig["region_names"]))):
            ax = axes[r, j]
            bottom = np.zeros(10)
            for k, lab in enumerate(labels):
                vals = np.array([sig["summaries"][method][c].frequency(getattr(sig["summaries"][method][c], fld))[j, k]
                                 if c in sig["summaries"][method] else 0.0 for c in digits])
                ax.bar(digits, vals, bottom=bottom, label=lab, width=0.8)
                bottom += vals
            ax.set_xticks(digits)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(names[j], fontsize=8)
            if j == 0:
                ax.set_ylabel("LP: tight line side" if r == 0 else "MIP: GELU region", fontsize=7)
            if j == units - 1:
                ax.legend(fontsize=5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def figure_robustness(rows: list[dict], path: Path, dpi: int) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 5, figsize=(12, 5), sharey=True)
    for c in range(10):
        ax = axes[c // 5, c % 5]
        sel = sorted((r for r in rows if r["digit"] == c), key=lambda r: r["eps"])
        eps = [r["eps"] for r in sel]
        for key, label, style in (("lp_verified", "LP verified", "-o"), ("mip_verified", "exact (MIP) verified", "-s"),
                                  ("falsified", "1 - falsified (attack/MIP)", "--^"), ("flawed_verified", "study's flawed LP", ":x")):
            if key == "falsified":
                vals = [1 - r["falsified_rate"] for r in sel]
                ci = [(1 - r["falsified_ci"][1], 1 - r["falsified_ci"][0]) for r in sel]
            else:
                vals = [r[f"{key}_rate"] for r in sel]
                ci = [r[f"{key}_ci"] for r in sel]
            ax.plot(eps, vals, style, label=label, ms=3, lw=1)
            ax.fill_between(eps, [a for a, _ in ci], [b for _, b in ci], alpha=0.15)
        ax.set_xscale("log")
        ax.set_title(f"digit {c}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.supxlabel("eps (L-inf)", fontsize=8)
    fig.supylabel("share of test images (Wilson 95 % bands)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def figure_neurons(pat, names: Sequence[str], path: Path, dpi: int) -> None:
    plt = _plt()
    n1 = pat.weight_images.shape[0]
    fig, axes = plt.subplots(2, n1 + 1, figsize=(2.4 * (n1 + 1), 4.4))
    lim = float(np.abs(pat.weight_images).max())
    for j in range(n1):
        im = axes[0, j].imshow(pat.weight_images[j], cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[0, j].set_title(f"{names[j]}: weights (b={pat.biases[j]:.2f})", fontsize=7)
        axes[0, j].set_xticks([]), axes[0, j].set_yticks([])
        axes[1, j].bar(np.arange(10), pat.mean_post[0][:, j], yerr=pat.std_post[0][:, j], capsize=1, width=0.7)
        axes[1, j].set_xticks(range(10))
        axes[1, j].tick_params(labelsize=6)
        axes[1, j].set_title(f"{names[j]}: mean GELU output per digit", fontsize=7)
    fig.colorbar(im, ax=axes[0, n1 - 1], fraction=0.046)
    w = pat.combination
    lim2 = float(np.abs(w).max())
    axes[0, n1].imshow(w, cmap="RdBu_r", vmin=-lim2, vmax=lim2)
    for (r, c), v in np.ndenumerate(w):
        axes[0, n1].text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6)
    axes[0, n1].set_xticks(range(n1), [n[:5] for n in names[:n1]], fontsize=6)
    axes[0, n1].set_yticks(range(w.shape[0]), [f"h2.{k}" for k in range(w.shape[0])], fontsize=6)
    axes[0, n1].set_title("second layer W2", fontsize=7)
    r = pat.readout
    lim3 = float(np.abs(r).max())
    axes[1, n1].imshow(r, cmap="RdBu_r", vmin=-lim3, vmax=lim3, aspect="auto")
    axes[1, n1].set_yticks(range(10))
    axes[1, n1].set_xticks(range(r.shape[1]), [f"h2.{k}" for k in range(r.shape[1])], fontsize=6)
    axes[1, n1].tick_params(labelsize=6)
    axes[1, n1].set_title("output weights W3", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def figure_ideal(x: Array, sys_data: dict, lambdas: Sequence[float], side: int, path: Path, dpi: int) -> None:
    plt = _plt()
    rows = 1 + len(lambdas)
    fig, axes = plt.subplots(rows, 10, figsize=(12, 1.3 * rows + 0.3))
    for c in range(10):
        i = sys_data["ideal"][c]
        axes[0, c].imshow(x[i].reshape(side, side), cmap="gray", vmin=0, vmax=1)
        axes[0, c].set_title(str(c), fontsize=8)
        for r, lam in enumerate(lambdas, start=1):
            img = sys_data["images"].get((c, lam, "mip"))
            if img is not None:
                axes[r, c].imshow(img.reshape(side, side), cmap="gray", vmin=0, vmax=1)
        for r in range(rows):
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
    axes[0, 0].set_ylabel("ideal x0", fontsize=7)
    for r, lam in enumerate(lambdas, start=1):
        axes[r, 0].set_ylabel(f"MIP, λ={lam:g}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# -- the report ------------------------------------------------------------------------------------------------


def _pct(v: float) -> str:
    return "–" if v != v else f"{100 * v:.1f}"


def _ci(ci) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _f(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.{digits}f}"


def signature_section(opts: StudyOptions, sig: dict, names: Sequence[str], source: str = "") -> list[str]:
    """The report's signature section (item 3) as Markdown lines; ``source``: where the signatures came from
    when not from this run (a stored signature job)."""
    md = ["## Signatures (item 3)", "",
           f"For each digit d, the first {opts.signature_per_digit} test images of class d (correctly classified or "
           f"not); maximise logit d over the eps = {opts.signature_eps} ball with the LP envelope relaxation and with "
           f"the exact MIP (refined until bound and achieved value are within {opts.signature_tolerance:g}, or no segment "
           "at the optimum is left to split). Heatmaps: share of optima with "
           "each pixel at its lower / upper bound. Significance: per pixel (and per neuron feature), an exact "
           "two-sided binomial test of digit d's count against the **baseline rate of the same feature pooled over "
           "the other nine digits**, Benjamini–Hochberg at false discovery rate 5 % within each map "
           "(dots on the heatmaps).", "",
           f"Failures (no optimum within the limit): LP {sig['failures']['lp']}, MIP {sig['failures']['mip']}.", ""]
    rows_sig = []
    for c in range(10):
        row = [c]
        for m in ("lp", "mip"):
            s = sig["summaries"][m].get(c)
            if s is None:
                row += ["–"] * 4
                continue
            _, ml, _ = pooled_significance(sig["summaries"][m], c, "pixel_lower")
            _, mu, _ = pooled_significance(sig["summaries"][m], c, "pixel_upper")
            row += [s.n, f"{s.pixel_lower.sum() / s.n:.1f} / {s.pixel_upper.sum() / s.n:.1f}", f"{ml.sum()} / {mu.sum()}"]
            if m == "lp":
                bounds = sig["bounds"]
                row.append(_f(float(np.mean(bounds["lp"][c]) - np.mean(bounds["mip"].get(c, bounds["lp"][c]))), 3))
        rows_sig.append(row)
    md += [_table(["digit", "n (LP)", "LP pixels at lower / upper (mean)", "LP significant lower / upper",
                   "mean LP bound − MIP max", "n (MIP)", "MIP pixels at lower / upper", "MIP significant lower / upper"], rows_sig), "",
           "![signatures](signatures.png)", ""]
    region_names = sig["region_names"]
    act_rows = []
    for c in range(10):
        line = [c]
        for m, fld, labels in (("lp", "sides", SIDE_NAMES), ("mip", "regions", region_names)):
            s = sig["summaries"][m].get(c)
            if s is None:
                line.append("–")
                continue
            freq = s.frequency(getattr(s, fld))
            _, mask, _ = pooled_significance(sig["summaries"][m], c, fld)
            line.append(" ".join(f"{names[j]}:{labels[int(np.argmax(freq[j]))]}{'*' if mask[j].any() else ''}"
                                 for j in range(freq.shape[0])))
        act_rows.append(line)
    md += ["Envelope activity: for each hidden neuron, the most frequent tight LP line side "
           "(none / lower / upper / both) and the most frequent GELU region of the MIP optimum "
           f"({', '.join(region_names)}: split at -√2, the minimum -0.7518 and √2); `*` marks a neuron with a "
           "feature that differs significantly from the other digits (BH 5 %).", "",
           _table(["digit", "LP tight side", "MIP region"], act_rows), "", "![activity](activity.png)", ""]
    if source:
        md.insert(2, source)
        md.insert(3, "")
    return md


def write_report(out: Path, network: Network, command: str, opts: StudyOptions, data: dict) -> Path:
    names = data["neuron_names"]
    rates, sig, cls_rows, sys_rows = data["rates"], data["signatures"], data["classifier"], data["system"]
    md = [f"# Study report: {network.name}", ""]
    md += [f"Network `{network.name}` ({network.architecture}), digest `{network.digest()[:16]}`, test data "
           f"`{network.metadata.get('preprocessing', '?')}` (shipped uint8 inputs), generated by",
           "", f"    {command}", "",
           f"in {data['seconds']:.0f} s. Solvers: MIP `{data['solvers']['mip']}`, LP `{data['solvers']['lp']}`. "
           "Every *verified* below rests on a symbolic bound or a solver's dual bound; every *falsified* on a "
           "counterexample re-evaluated on the real network in float64.", ""]
    # robustness
    md += ["## Robustness rates (item 4)", "",
           f"First {opts.per_digit} test images of each digit (the study's design), L-inf balls clipped to [0, 1]. "
           "Decided cheaply first: batched symbolic (CROWN/DeepPoly) bounds verify, a batched PGD attack "
           f"({opts.attack_steps} steps, {opts.attack_restarts} restarts + centre) falsifies; every other query is "
           f"answered by `certify(method=\"mip\")` (LP envelope, then the refined piecewise MIP, {opts.mip_time_limit:g} s limit). "
           "*LP verified* = symbolic-verified or LP-verified (the LP contains the symbolic lines, so a symbolic "
           "proof is also an LP proof); *exact verified* = verified by any stage including the MIP; *falsified* = a "
           "counterexample (attack or MIP); *unknown* = neither within the limit. Rates in %, with 95 % **Wilson** "
           "score intervals.", ""]
    header = ["eps", "n", "LP verified", "exact verified", "falsified", "unknown", "study's flawed LP \"verified\"",
              "flawed refuted"]
    rows = [r for r in rates if r["digit"] == "all"]
    md += ["All digits:", "", _table(header, [[r["eps"], r["n"], f"{_pct(r['lp_verified_rate'])} {_ci(r['lp_verified_ci'])}",
                                             f"{_pct(r['mip_verified_rate'])} {_ci(r['mip_verified_ci'])}",
                                             f"{_pct(r['falsified_rate'])} {_ci(r['falsified_ci'])}",
                                             f"{_pct(r['unknown_rate'])} {_ci(r['unknown_ci'])}",
                                             f"{_pct(r['flawed_verified_rate'])} {_ci(r['flawed_verified_ci'])} (n={r['flawed_n']})",
                                             r["flawed_refuted"]] for r in rows]), ""]
    md += ["Per digit (LP verified / exact verified / falsified / unknown, %):", ""]
    eps_list = sorted({r["eps"] for r in rates})
    per = []
    for c in range(10):
        line = [c]
        for e in eps_list:
            r = next(r for r in rates if r["digit"] == c and r["eps"] == e)
            line.append(f"{_pct(r['lp_verified_rate'])} / {_pct(r['mip_verified_rate'])} / {_pct(r['falsified_rate'])} / {_pct(r['unknown_rate'])}")
        per.append(line)
    md += [_table(["digit", *[f"eps {e}" for e in eps_list]], per), "", "![robustness](robustness.png)", ""]
    errors = sum(r["errors"] for r in rows)
    if errors:
        md += [f"**{errors} queries were rejected** by the engine's soundness checks (a solver bound contradicting a "
               "known point); they are counted in none of the columns above.", ""]
    # flawed
    md += ["## The study's published rates versus sound ones", "",
           "We do not have the study's published numbers. The seed README says its GELU envelope was unsound "
           "(tangent/secant chosen by comparing them at the midpoint; interval bounds from endpoint sampling that "
           "miss GELU's minimum at -0.7518). **What follows is our reconstruction of that flaw** "
           "(`formulations.study.flawed_verify`: endpoint-sampled interval bounds, one midpoint tangent and the "
           "secant per neuron, \"verified\" when every target's LP optimum of the margin is > 0), run on the same "
           "queries. It is never used for certificates here.", ""]
    md += [_table(["eps", "queries", "flawed \"verified\"", "sound LP verified", "exact verified",
                   "flawed verified but refuted (counterexample)", "flawed verified, exact unknown", "flawed LP infeasible"],
                  [[r["eps"], r["flawed_n"], r["flawed_verified"], r["lp_verified"], r["mip_verified"], r["flawed_refuted"],
                    r["flawed_unconfirmed"], r["flawed_infeasible"]] for r in rows]), ""]
    if data.get("flawed_note"):
        md += [data["flawed_note"], ""]
    md += signature_section(opts, sig, names)
    # classifier
    md += ["## The LP as a classifier (item 5)", "",
           f"First {opts.classifier_per_digit} test images of each digit; for each class c the sound maximum of "
           "logit c over the LP envelope polytope of the eps-ball (LP dual bound); prediction = argmax. Wilson 95 %.", "",
           _table(["eps", "n", "LP-classifier accuracy", "network accuracy (same images)", "agreement with network"],
                  [[r["eps"], r["n"], f"{_pct(r['lp_accuracy'])} {_ci(r['lp_accuracy_ci'])}", _pct(r["network_accuracy"]),
                    f"{_pct(r['agreement'])} {_ci(r['agreement_ci'])}"] for r in cls_rows]), ""]
    # system level
    md += ["## The system-level problem (item 6)", "",
           "max logit[c] − t − λ‖x − x0‖₁ s.t. t ≥ logit[k] (k ≠ c), over the whole input domain [0, 1]^49, from the "
           "best-classified test image x0 of each digit (largest margin). LP: sound bound and the real network's "
           "objective at the LP's input; MIP: refined to 1e-4 (bound and achieved agree). *class* = the network's "
           "class at the solution; *viol.* = largest constraint violation of the solver's point in its own model.", "",
           _table(["digit", "λ", "x0 margin", "LP bound", "LP achieved", "MIP bound", "MIP achieved", "MIP margin", "MIP ‖x−x0‖₁",
                   "MIP class", "viol. (LP/MIP)"],
                  [[r["digit"], r["lam"], _f(r["x0_margin"]), _f(r.get("lp_bound")), _f(r.get("lp_achieved")),
                    _f(r.get("mip_bound")), _f(r.get("mip_achieved")), _f(r.get("mip_margin")), _f(r.get("mip_l1")),
                    r.get("mip_class", "–"), f"{r.get('lp_violation', float('nan')):.1e}/{r.get('mip_violation', float('nan')):.1e}"]
                   for r in sys_rows]), "", "![ideal digits](ideal.png)", ""]
    # neurons
    pat = data["patterns"]
    md += ["## Neuron patterns (item 7)", "",
           "First-layer weight images (7x7), each first-layer neuron's mean GELU output over the whole test set per "
           "digit (± one standard deviation), the second-layer combination weights W2 (rows: second-layer neurons) "
           "and the output weights." + (" The study named the first-layer neurons Frame (0), Spine (1) and Belt (2)."
                                         if network.name == "verianet" else ""), "",
           _table(["digit", *names[:pat.weight_images.shape[0]], *[f"h2.{k}" for k in range(pat.mean_post[1].shape[1])]],
                  [[c, *[f"{v:.3f}" for v in pat.mean_post[0][c]], *[f"{v:.3f}" for v in pat.mean_post[1][c]]] for c in range(10)]),
           "", "![neurons](neurons.png)", ""]
    md += ["## Sample sizes and what is not here", "",
           f"- robustness: {opts.per_digit} per digit × {len(opts.eps)} eps; flawed baseline on "
           f"{opts.flawed_per_digit or opts.per_digit} per digit; signatures: {opts.signature_per_digit} per digit at eps "
           f"{opts.signature_eps}; LP classifier: {opts.classifier_per_digit} per digit; system level: one image per digit, "
           f"λ in {list(opts.lambdas)}.",
           "- raw numbers: `results.json` beside this file.", ""]
    path = out / "README.md"
    path.write_text("\n".join(md))
    return path


def run_study(network_name: str, out: Path | str, options: StudyOptions | None = None, *, command: str = "") -> Path:
    """Run items 3-7 on a network and write the report (item 8); returns the README path."""
    from polycert.formulations.backends import default_lp_solver, default_mip_solver

    opts = options or StudyOptions()
    if opts.solver is None:
        # Gurobi solves these small MIPs ~10x faster than SCIP here (measured); its size-limited licence
        # covers 49-3-3-10 encodings. Fall back to the default MIP solver elsewhere.
        from polycert.formulations.backends import available_solvers

        opts = replace(opts, solver="gurobi" if available_solvers().get("gurobi") else default_mip_solver())
    if not opts.eps or any(not (e >= 0) for e in opts.eps):
        raise InvalidInputError(f"eps must be a non-empty list of numbers >= 0, got {opts.eps}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    network, x, y = load_study_network(network_name)
    side = int(round(np.sqrt(network.input_size)))
    n1 = network.layers[0].n_out
    first_names = NEURON_NAMES.get(network.name, tuple(f"h1.{j}" for j in range(n1)))
    names = [*first_names[:n1], *[f"h2.{k}" for k in range(network.layers[1].n_out)]]

    # item 4
    idx = first_per_digit(y, opts.per_digit, network.output_size)
    flawed_idx = set(first_per_digit(y, opts.flawed_per_digit or opts.per_digit, network.output_size).tolist())
    flawed_mask = np.array([i in flawed_idx for i in idx])
    outcomes = []
    with _bar(len(opts.eps) * (len(idx) + int(flawed_mask.sum())), "robustness (sound + flawed)", opts.progress) as bar:
        for eps in opts.eps:
            outcomes.append(robustness_queries(network, x, y, idx, float(eps), opts, flawed_mask, bar))
    rates = rate_rows(outcomes, network.output_size)
    # item 3
    with _bar(2 * 10 * opts.signature_per_digit, "signatures (LP + MIP)", opts.progress) as bar:
        sig = signature_study(network, x, y, opts, bar)
    # item 5
    with _bar(len(opts.eps) * 10 * opts.classifier_per_digit, "LP classifier", opts.progress) as bar:
        cls_rows = classifier_study(network, x, y, opts, bar)
    # item 6
    with _bar(10 * len(opts.lambdas) * 2, "system level", opts.progress) as bar:
        sys_rows, sys_data = system_study(network, x, y, opts, bar)
    # item 7
    pat = neuron_patterns(network, x, y)

    figure_robustness(rates, out / "robustness.png", opts.dpi)
    figure_signatures(sig, side, out / "signatures.png", opts.dpi)
    figure_activity(sig, names, out / "activity.png", opts.dpi)
    figure_ideal(x, sys_data, opts.lambdas, side, out / "ideal.png", opts.dpi)
    figure_neurons(pat, names, out / "neurons.png", opts.dpi)

    seconds = time.monotonic() - started
    data = dict(rates=rates, signatures=sig, classifier=cls_rows, system=sys_rows, patterns=pat, neuron_names=names,
                seconds=seconds, solvers=dict(mip=opts.solver or default_mip_solver(), lp=opts.lp_solver or default_lp_solver()))
    # keep the computed numbers if the report step fails (hours of solving are not thrown away)
    import pickle

    scratch = out / ".study-data.pkl"
    scratch.write_bytes(pickle.dumps(data))
    readme = write_report(out, network, command or f"polycert study --network {network_name} --out {out}", opts, data)
    results = dict(network=network.name, digest=network.digest(), options={k: v for k, v in asdict(opts).items()},
                   seconds=seconds, rates=rates, classifier=cls_rows, system=sys_rows,
                   signatures=_summaries_json(sig),
                   region_names=list(sig["region_names"]), neuron_names=names,
                   patterns=dict(mean_post=[m.tolist() for m in pat.mean_post], combination=pat.combination.tolist()))
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    scratch.unlink()
    return readme


def rerender_signatures(out: Path | str, session, job_id: int, *, command: str = "") -> Path:
    """Re-render an existing report's signature section (tables, ``signatures.png``, ``activity.png`` and the
    ``signatures`` of ``results.json``) from signature job ``job_id``'s stored certificates; the other
    sections stay as they were. The job must be of the report's network (same digest) and of one eps.

    Raises:
        InvalidInputError: no report in ``out``, a job that is not a signature job, of another network or of
            several radii. NotFoundError: no such job.
    """
    from polycert.db import repositories as repo
    from polycert.errors import NotFoundError
    from polycert.workers.networks import stored_network
    from polycert.workers.signatures import DEFAULT_TOLERANCE

    out = Path(out)
    readme, results_path = out / "README.md", out / "results.json"
    if not readme.is_file() or not results_path.is_file():
        raise InvalidInputError(f"no study report in {out} (README.md and results.json): run polycert study first")
    job = repo.get_job(session, job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id}")
    if job.kind != "signature":
        raise InvalidInputError(f"job {job_id} is a {job.kind} job; signatures come from a signature job")
    results = json.loads(results_path.read_text())
    network = stored_network(job.network)
    if results.get("digest") != network.digest():
        raise InvalidInputError(f"job {job_id} is about network {job.network.name!r} (digest {network.digest()[:16]}), "
                                f"the report in {out} about {results.get('network')!r} "
                                f"(digest {str(results.get('digest'))[:16]})")
    radii = sorted({float(e) for _, _, e, _, _, _ in repo.outcomes(session, job_id)})
    if len(radii) != 1:
        raise InvalidInputError(f"job {job_id} has {len(radii) or 'no'} radii {radii}; the report shows one")
    sig = stored_signature_study(session, job_id, network)
    per_digit = max((s.n for by in sig["summaries"].values() for s in by.values()), default=0)
    tolerance = float((job.parameters or {}).get("tolerance") or DEFAULT_TOLERANCE)
    opts = StudyOptions(signature_per_digit=per_digit, signature_eps=radii[0], signature_tolerance=tolerance)
    names = results.get("neuron_names") or [f"h{j}" for j in range(sum(sig["n_hidden"]))]
    side = int(round(np.sqrt(network.input_size)))
    figure_signatures(sig, side, out / "signatures.png", StudyOptions().dpi)
    figure_activity(sig, names, out / "activity.png", StudyOptions().dpi)
    n = sum(s.n for by in sig["summaries"].values() for s in by.values())
    source = (f"From the {n} certificates of signature job {job_id} (LP and exact MIP through the queue, up to "
              f"{per_digit} per digit), re-rendered by `{command or f'polycert study --from-job {job_id}'}`; the "
              "other sections are from the run named at the top.")
    text = readme.read_text()
    begin, end = text.find("## Signatures (item 3)"), text.find("## The LP as a classifier (item 5)")
    if begin < 0 or end < begin:
        raise InvalidInputError(f"{readme} has no signature section to replace")
    readme.write_text(text[:begin] + "\n".join(signature_section(opts, sig, names, source)) + "\n" + text[end:])
    results["signatures"] = _summaries_json(sig)
    results["signatures_source"] = dict(job=job_id, certificates=n, per_digit=per_digit, eps=radii[0],
                                        tolerance=tolerance)
    results_path.write_text(json.dumps(results, indent=1, default=float))
    return readme


def _summaries_json(sig: dict) -> dict:
    return {m: {str(c): dict(n=s.n, pixel_lower=s.pixel_lower.tolist(), pixel_upper=s.pixel_upper.tolist(),
                             sides=s.sides.tolist(), regions=s.regions.tolist())
                for c, s in by.items()} for m, by in sig["summaries"].items()}
