"""The input domain through a real ``polycert serve`` process (embedded default: SQLite, in-process worker):
set at upload, stated by the API, narrowed by a job, checked against eps, and stored with every certificate.

The networks are written here as ``.npz`` files. ``key`` computes margin(x) = 0.5 - relu(-50 x - 1) +
0.1 relu(x) (class 0 against class 1): on the ball of radius 0.1 around 0.05 its minimum is negative on
[-1, 1] (left of -0.03) and 0.5 on [0, 1]. The answers are checked by exact enumeration (the margin is
piecewise linear in one input: its minimum over an interval is at an end or a kink).
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest

from tests.live import live_server

CENTRE, EPS = 0.05, 0.1


def key_arrays(scale: float = 1.0, pixels: float = 1.0) -> dict[str, np.ndarray]:
    """``scale`` rescales the hidden layer (ReLU is positively homogeneous: the same function, other weights);
    ``pixels`` reads the input in units of 1/pixels (key(x / 255) for raw pixels)."""
    return dict(W1=np.array([[-50.0], [1.0]]) * scale / pixels, b1=np.array([-1.0, 0.0]) * scale,
                W2=np.array([[-1.0, 0.1], [0.0, 0.0]]) / scale, b2=np.array([0.5, 0.0]),
                activations=np.array(["relu", "identity"]))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def margin(arrays, x: np.ndarray) -> np.ndarray:
    """class 0 minus class 1, computed here from the arrays (not by the service)."""
    h = np.maximum(x[:, None] @ arrays["W1"].T + arrays["b1"], 0.0)
    y = h @ arrays["W2"].T + arrays["b2"]
    return y[:, 0] - y[:, 1]


def exact_min(arrays, lo: float, hi: float) -> float:
    kinks = [-b / w for w, b in zip(arrays["W1"][:, 0], arrays["b1"]) if w != 0 and lo < -b / w < hi]
    return float(margin(arrays, np.array([lo, hi, *kinks])).min())


def centre_sha(x: list[float]) -> str:
    return hashlib.sha256(np.asarray(x, dtype="<f8").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("domain")) as live:
        yield live


def upload(server, name: str, arrays, domain: str | None = None):
    data = {"name": name} if domain is None else {"name": name, "domain": domain}
    with server.client() as c:
        return c.post("/networks/upload", files={"file": (f"{name}.npz", npz_bytes(arrays))}, data=data)


def submit(server, network_id: int, **fields):
    body = dict(dict(network_id=network_id, inputs=[[CENTRE]], labels=[0], eps=[EPS], methods="both"), **fields)
    with server.client() as c:  # as text: a user's JSON library may write NaN, which httpx refuses to
        return c.post("/jobs", content=json.dumps(body), headers={"content-type": "application/json"})


def certificates(server, job_id: int) -> list[dict]:
    assert server.wait_job(job_id)["status"] == "done", server.tail()
    with server.client() as c:
        return c.get(f"/jobs/{job_id}/results", params={"boxes": True}).json()["data"]


@pytest.fixture(scope="module")
def networks(server):
    """``wide``: key on [-1, 1] (form field LO,HI); ``unit``: the same function, other weights, on [0, 1] (JSON)."""
    wide = upload(server, "key-wide", key_arrays(), "-1,1")
    unit = upload(server, "key-unit", key_arrays(scale=2.0), "[0, 1]")
    assert wide.status_code == 201 and unit.status_code == 201, (wide.text, unit.text)
    return wide.json(), unit.json()


def test_an_uploaded_network_states_the_domain_it_was_given(server, networks):
    wide, unit = networks
    assert wide["input_domain"] == {"lower": -1.0, "upper": 1.0}
    assert unit["input_domain"] == {"lower": 0.0, "upper": 1.0}
    with server.client() as c:
        assert c.get(f"/networks/{wide['id']}").json()["input_domain"] == {"lower": -1.0, "upper": 1.0}
        listed = {n["name"]: n["input_domain"] for n in c.get("/networks").json()["data"]}
    assert listed["key-unit"] == {"lower": 0.0, "upper": 1.0}


def test_the_certificate_states_the_ball_clipped_to_minus_one_to_one_which_reaches_minus_0_05(server, networks):
    wide, _ = networks
    job = submit(server, wide["id"])
    assert job.status_code == 202, job.text
    assert job.json()["parameters"]["domain"] == {"lower": -1.0, "upper": 1.0}
    certs = certificates(server, job.json()["id"])
    assert sorted(c["method"] for c in certs) == ["lp", "mip"]
    for cert in certs:
        the_set = cert["input_set"]
        assert the_set["norm"] == "linf" and the_set["eps"] == EPS and the_set["center_sha256"] == centre_sha([CENTRE])
        assert the_set["domain"] == {"lower": -1.0, "upper": 1.0}
        assert the_set["lower"][0] == pytest.approx(CENTRE - EPS, abs=1e-15)  # reaches -0.05, below 0
        assert the_set["upper"][0] == pytest.approx(CENTRE + EPS, abs=1e-15)


def test_the_same_ball_on_minus_one_to_one_and_on_zero_to_one_gets_different_answers_each_correct(server, networks):
    wide, unit = networks
    arrays = key_arrays()
    assert exact_min(arrays, -0.05, 0.15) < 0 < exact_min(arrays, 0.0, 0.15)  # the truth, by enumeration
    assert exact_min(key_arrays(scale=2.0), 0.0, 0.15) == pytest.approx(exact_min(arrays, 0.0, 0.15))

    on_wide = certificates(server, submit(server, wide["id"]).json()["id"])
    for cert in on_wide:  # falsified, with a counterexample in the ball ∩ [-1, 1] that the margin confirms
        assert cert["verdict"] == "falsified", cert
        x = cert["counterexample"][0]
        assert -0.05 - 1e-12 <= x < 0 and margin(arrays, np.array([x]))[0] < 0
        assert cert["lower"] <= exact_min(arrays, -0.05, 0.15) + 1e-9

    on_unit = certificates(server, submit(server, unit["id"]).json()["id"])
    narrowed = certificates(server, submit(server, wide["id"], domain=[0, 1]).json()["id"])
    for cert in on_unit + narrowed:  # verified: the lower bound is positive and below the true minimum
        assert cert["verdict"] == "verified", cert
        assert 0 < cert["lower"] <= exact_min(arrays, 0.0, 0.15) + 1e-9
        assert cert["input_set"]["domain"] == {"lower": 0.0, "upper": 1.0}
        assert cert["input_set"]["lower"][0] == 0.0  # clipped at the domain, not at -0.05


@pytest.mark.parametrize("network, domain, message", [
    (0, [-2, 1], "the job's domain [-2, 1] is not inside the input domain [-1, 1] of network 'key-wide'"),
    (1, [-1, 1], "the job's domain [-1, 1] is not inside the input domain [0, 1] of network 'key-unit'"),
    (1, [None, None], "the job's domain unbounded is not inside the input domain [0, 1]"),
    (0, [1, 0], "the domain is empty"),
    (0, [[0, 0], 1], "the domain has 2 coordinates; the inputs have 1"),
])
def test_a_job_domain_that_is_not_inside_the_networks_is_refused_with_422(server, networks, network, domain, message):
    response = submit(server, networks[network]["id"], domain=domain)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_eps_is_bounded_by_the_domains_extent_and_must_be_finite(server):
    pixels = upload(server, "key-pixels", key_arrays(pixels=255.0), "0,255")
    assert pixels.status_code == 201 and pixels.json()["input_domain"] == {"lower": 0.0, "upper": 255.0}
    network_id = pixels.json()["id"]
    body = dict(network_id=network_id, inputs=[[12.75]], labels=[0], methods="mip")
    with server.client() as c:
        accepted = c.post("/jobs", json=dict(body, eps=[5.0, 12.0]))
        assert accepted.status_code == 202, accepted.text
        # NaN and 1e999 stop at the request model (a finite number at body.eps), the rest at the domain's check
        for eps, message in (("NaN", "finite number"), ("1e999", "finite number"), ("-1", "eps must be >= 0"),
                             ("300", "eps 300 exceeds the linf extent 255 of the input domain [0, 255]")):
            text = json.dumps(dict(body, eps=[1.0])).replace("[1.0]", f"[{eps}]")
            refused = c.post("/jobs", content=text, headers={"content-type": "application/json"})
            detail = str(refused.json()["detail"])
            assert refused.status_code == 422 and message in detail and "eps" in detail, (eps, refused.text)
    for cert in certificates(server, accepted.json()["id"]):
        assert cert["verdict"] == "verified" and cert["input_set"]["domain"] == {"lower": 0.0, "upper": 255.0}
        assert cert["input_set"]["lower"][0] == pytest.approx(12.75 - cert["eps"], abs=1e-12)  # rounded outward


def test_unbounded_networks_take_any_finite_eps_and_the_file_or_format_says_the_default(server, tmp_path):
    from polycert.formulations.domains import Domain, with_domain
    from polycert.formulations.loaders import load_npz, save_npz

    plain = upload(server, "key-plain", key_arrays(scale=4.0))  # nothing said: unbounded, the plain ball
    assert plain.json()["input_domain"] == {"lower": None, "upper": None}
    job = submit(server, plain.json()["id"], eps=[1000.0])
    assert job.status_code == 202, job.text
    for cert in certificates(server, job.json()["id"]):  # the plain ball: nothing clips it
        assert cert["input_set"]["domain"] == {"lower": None, "upper": None}
        assert cert["input_set"]["lower"][0] == pytest.approx(CENTRE - 1000.0)
        x = cert["counterexample"][0]
        assert cert["verdict"] == "falsified" and CENTRE - 1000.0 <= x < 0
        assert margin(key_arrays(scale=4.0), np.array([x]))[0] < 0

    np.savez(tmp_path / "k.npz", **key_arrays(scale=8.0))
    tagged = save_npz(with_domain(load_npz(tmp_path / "k.npz"), Domain(-3, 3)), tmp_path / "tagged.npz")
    with server.client() as c:
        saved = c.post("/networks/upload", files={"file": ("tagged.npz", tagged.read_bytes())})
        onnx = c.post("/networks/upload", files={"file": ("net.onnx", open("tests/fixtures/mnist-net_256x2.onnx", "rb"))})
        builtin = c.post("/networks", json={"builtin": "polycert-tiny"})
    assert saved.json()["input_domain"] == {"lower": -3.0, "upper": 3.0}  # what the file says
    assert onnx.status_code == 201 and onnx.json()["input_domain"] == {"lower": None, "upper": None}  # ONNX says nothing
    assert builtin.json()["input_domain"] == {"lower": 0.0, "upper": 1.0}  # the shipped image networks


def test_known_weights_with_another_domain_are_a_409_and_bad_domains_a_422(server, networks):
    wide, _ = networks
    again = upload(server, "key-again", key_arrays(), "-1,1")
    assert again.status_code == 201 and again.json()["id"] == wide["id"] and again.json()["created"] is False
    other = upload(server, "key-other", key_arrays(), "0,1")
    assert other.status_code == 409
    assert other.json()["detail"].startswith(f"these weights are registered already as network {wide['id']} ('key-wide') "
                                             "with input domain [-1, 1], not [0, 1]")
    with server.client() as c:  # a pruned copy answers questions about the same inputs
        pruned = c.post(f"/networks/{wide['id']}/prune", json={"percent": 50, "name": "key-wide-pruned"})
        schema = c.get("/openapi.json")
    assert pruned.status_code == 201 and pruned.json()["input_domain"] == {"lower": -1.0, "upper": 1.0}
    assert "domain" in schema.json()["components"]["schemas"]["BatchRequest"]["properties"]
    for domain, message in (("1,0", "the domain is empty"), ("abc", "a domain is written LO,HI"),
                            ("nan,1", "NaN"), ("[[0, 0], [1, 1]]", "2 coordinates; the inputs have 1")):
        response = upload(server, "key-bad", key_arrays(scale=3.0), domain)
        assert response.status_code == 422 and message in response.json()["detail"], (domain, response.text)


def test_the_cli_submit_narrows_the_domain_and_refuses_one_outside_the_networks(server):
    with server.client() as c:
        tiny = c.post("/networks", json={"builtin": "polycert-tiny"}).json()  # [0, 1]
    done = server.cli("submit", "--network", "polycert-tiny", "--stop", "2", "--eps", "0.15", "--methods", "lp",
                      "--domain", "0,0.9")  # pixels at 1 are 0.1 from it: every ball still meets it
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = int(done.stdout.strip().splitlines()[-1].split()[-1])  # "job id: N"
    with server.client() as c:
        job = c.get(f"/jobs/{job_id}").json()
        certs = c.get(f"/jobs/{job_id}/results", params={"boxes": True}).json()["data"]
    assert job["network_id"] == tiny["id"] and job["parameters"]["domain"] == {"lower": 0.0, "upper": 0.9}
    assert len(certs) == 2
    for cert in certs:
        assert cert["input_set"]["domain"] == {"lower": 0.0, "upper": 0.9} and max(cert["input_set"]["upper"]) <= 0.9
        if cert["counterexample"] is not None:
            assert 0.0 <= min(cert["counterexample"]) and max(cert["counterexample"]) <= 0.9
    for domain, message in (("-1,1", "the job's domain [-1, 1] is not inside the input domain [0, 1]"),
                            ("1,0", "--domain: the domain is empty"),
                            ("0,0.5", "the linf ball of radius 0.01 around input 0 does not meet the domain")):
        refused = server.cli("submit", "--network", "polycert-tiny", "--stop", "2", "--domain", domain)
        said = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode == 4 and message in said, said
        assert "Traceback" not in refused.stdout + refused.stderr
