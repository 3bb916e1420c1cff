"""Checks of a finished signature job, shared by the live-server test (SQLite + embedded worker) and the
integration test (PostgreSQL + Redis + a Celery worker): they read what a user reads over HTTP and
re-evaluate it on the shipped network, with an attack written here (torch autograd), not the product's."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

NETWORK = "polycert-tiny"
DATASET = {"name": "mnist7-area", "start": 0, "stop": 10}
EPS = 0.05
TOLERANCE = 1e-4
JOB = {"kind": "signature", "network": NETWORK, "dataset": DATASET, "eps": [EPS], "methods": "both",
       "tolerance": TOLERANCE}


def shipped_network():
    from polycert.zoo import load_builtin

    return load_builtin(NETWORK)


def _torch_logits(network, x: torch.Tensor) -> torch.Tensor:
    acts = {"gelu": torch.nn.functional.gelu, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "silu": torch.nn.functional.silu, "identity": lambda t: t}
    a = x
    for layer in network.layers:
        a = acts[layer.activation.name](a @ torch.tensor(np.array(layer.weight)).T + torch.tensor(np.array(layer.bias)))
    return a


def ascent_logit(network, center: np.ndarray, cls: int, eps: float, *, steps: int = 60, restarts: int = 8,
                 seed: int = 1) -> float:
    """Best logit[cls] a sign-gradient ascent finds in the L-inf ball ∩ [0, 1] (float64 re-evaluated)."""
    rng = np.random.default_rng(seed)
    lo, hi = np.clip(center - eps, 0, 1), np.clip(center + eps, 0, 1)
    starts = np.vstack([center, rng.uniform(lo, hi, size=(restarts, center.size))])
    x = torch.tensor(starts, dtype=torch.float64, requires_grad=True)
    lo_t, hi_t = torch.as_tensor(lo), torch.as_tensor(hi)
    for _ in range(steps):
        value = _torch_logits(network, x)[:, cls]
        (grad,) = torch.autograd.grad(value.sum(), x)
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x + 2.5 * eps / steps * grad.sign(), lo_t), hi_t).requires_grad_(True)
    return float(network.forward(x.detach().numpy())[:, cls].max())


def sampled_logit(network, center: np.ndarray, cls: int, eps: float, *, count: int = 200, seed: int = 2) -> float:
    rng = np.random.default_rng(seed)
    lo, hi = np.clip(center - eps, 0, 1), np.clip(center + eps, 0, 1)
    points = np.vstack([center, rng.uniform(lo, hi, size=(count, center.size)), rng.choice([0, 1], size=(count, center.size)) * (hi - lo) + lo])
    return float(network.forward(points)[:, cls].max())


def results(client, job_id: int) -> list[dict]:
    page = client.get(f"/jobs/{job_id}/results", params={"limit": 1000, "signatures": True})
    assert page.status_code == 200, page.text
    return page.json()["data"]


def check_job(client, job_id: int, n_images: int) -> list[dict]:
    """Everything the job's certificates must satisfy; returns them."""
    network = shipped_network()
    certs = results(client, job_id)
    assert Counter(c["method"] for c in certs) == {"lp": n_images, "mip": n_images}
    by_key = {(c["item"], c["eps"], c["method"]): c for c in certs}
    closed = 0
    for c in certs:
        assert c["error"] is None, c["error"]
        assert c["tight"], f"certificate {c['id']} has an empty tight set"
        kinds = {t["kind"] for t in c["tight"]}
        assert "region" in kinds and (kinds & {"input_lower", "input_upper"})
        if c["method"] == "lp":  # the relaxation's optimum rests on envelope lines
            assert "envelope_lower" in kinds or "envelope_upper" in kinds
        else:  # the exact optimum is read off the real network: pixels and regions, no relaxation lines
            assert not kinds & {"envelope_lower", "envelope_upper"}
        cls = c["extra"]["class"]
        assert cls == c["label"]
        point = np.asarray(c["extra"]["point"])
        center = np.asarray(_input_of(c, network))
        assert np.all(np.abs(point - center) <= EPS + 1e-12) and np.all((point >= 0) & (point <= 1))
        # the stored point re-attains the stored value on the real network
        attained = float(network.forward(point)[cls])
        assert abs(attained - c["lower"]) <= 1e-12 * (1 + abs(attained))
        assert c["upper"] >= c["lower"]
        known = max(ascent_logit(network, center, cls, EPS), sampled_logit(network, center, cls, EPS))
        assert c["upper"] >= known, f"bound {c['upper']} below a logit {known} the network attains"
        if c["method"] == "mip" and c["verdict"] == "verified":
            closed += 1
            assert c["answer"] == "optimum"
            assert c["upper"] - c["lower"] <= TOLERANCE
            assert c["lower"] >= known - TOLERANCE  # an optimum, not just a point: no attack beats it
        elif c["method"] == "mip":
            assert c["answer"] == "bound" and c["reason"] in ("refinement limit", "time limit")
        else:
            assert (c["verdict"], c["answer"]) == ("verified", "bound")
        if c["method"] == "lp":
            mip = by_key[(c["item"], c["eps"], "mip")]
            assert c["upper"] >= mip["lower"], "the LP relaxation's bound is below a value the network attains"
    assert closed == n_images, f"only {closed} of {n_images} MIP brackets closed to the tolerance"
    return certs


def _input_of(cert: dict, network) -> np.ndarray:
    from polycert.datasets import load_preprocessed

    x, _ = load_preprocessed(DATASET["name"], "test")
    return x[cert["source_index"]]


def check_digit_maps(client, certs: list[dict]) -> None:
    """GET /signatures for every digit with inputs: the shares are the tight rows counted by hand."""
    for digit in sorted({c["label"] for c in certs}):
        mine = [c for c in certs if c["label"] == digit]
        body = client.get("/signatures", params={"network": NETWORK, "digit": digit, "source": "signature"})
        assert body.status_code == 200, body.text
        body = body.json()
        assert body["n"] == len(mine) and body["network"]["name"] == NETWORK
        assert len(body["pixel_lower"]) == len(body["pixel_upper"]) == 49 and body["image_side"] == 7
        for kind, shares in (("input_lower", body["pixel_lower"]), ("input_upper", body["pixel_upper"])):
            expected = np.zeros(49)
            for c in mine:
                for t in c["tight"]:
                    if t["kind"] == kind:
                        expected[t["pixel"]] += 1
            assert np.allclose(shares, expected / len(mine))
        assert sum(body["pixel_lower"]) + sum(body["pixel_upper"]) > 0
        regions = Counter()
        for row in body["neurons"]:
            if row["kind"] == "region":
                regions[(row["layer"], row["neuron"])] += row["count"]
        assert regions and set(regions.values()) == {len(mine)}  # one region per neuron per certificate
