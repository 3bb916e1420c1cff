"""Small things a user meets first (issue 17, item 8), against a real ``polycert serve`` process: the
development token printed by ``serve``, ``/docs`` and ``/redoc`` with every asset served locally, one
timestamp form on POST and GET, ``polycert --version``."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from polycert.settings import DEVELOPMENT_TOKEN
from tests.live import ROOT, live_server, server_env


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    """The embedded default as a newcomer runs it: no token configured (the development one)."""
    with live_server(tmp_path_factory.mktemp("items"), POLYCERT_API_TOKEN=DEVELOPMENT_TOKEN,
                     POLYCERT_ENVIRONMENT="development") as live:
        yield live


def test_serve_on_the_embedded_default_prints_the_development_token_and_it_works(dev_server):
    log = dev_server.tail(20_000)
    assert f"write token (development): {DEVELOPMENT_TOKEN}" in log
    shown = re.search(r"curl -H 'Authorization: Bearer ([^']+)'", log)
    assert shown and shown.group(1) == DEVELOPMENT_TOKEN
    assert "embedded default: sqlite:///" in log
    with httpx.Client(base_url=dev_server.url, timeout=60) as c:
        assert c.post("/networks", json={"builtin": "polycert-tiny"}).status_code == 401
        response = c.post("/networks", json={"builtin": "polycert-tiny"},
                          headers={"Authorization": f"Bearer {shown.group(1)}"})
    assert response.status_code == 201 and response.json()["name"] == "polycert-tiny"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_documentation_pages_load_every_asset_from_the_server_itself(dev_server, page):
    with httpx.Client(base_url=dev_server.url, timeout=30) as c:
        html = c.get(page).text
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
        assert urls, html
        assert not [u for u in urls if re.match(r"(https?:)?//", u)], urls  # nothing from another host
        scripts = [u for u in urls if u.endswith(".js")]
        assert scripts
        for u in urls:
            if u.endswith((".js", ".css", ".png")):
                asset = c.get(u)
                assert asset.status_code == 200 and len(asset.content) > 1000, u
        assert c.get("/openapi.json").json()["info"]["title"] == "PolyCert"
    assert "fonts.googleapis.com" not in html and "cdn.jsdelivr.net" not in html


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_timestamps_have_one_iso_form_with_the_zone_on_post_and_get(dev_server):
    auth = {"Authorization": f"Bearer {DEVELOPMENT_TOKEN}"}
    with httpx.Client(base_url=dev_server.url, timeout=60, headers=auth) as c:
        posted = c.post("/networks", json={"builtin": "polycert-tiny"}).json()
        got = c.get(f"/networks/{posted['id']}").json()
        listed = c.get("/networks").json()["data"][0]
        job = c.post("/jobs", json=dict(network="polycert-tiny", inputs=[[0.5] * 49], labels=[0], eps=[0.0],
                                        methods="lp")).json()
        done = dev_server.wait_job(job["id"])
    assert ISO_UTC.match(posted["created_at"]) and posted["created_at"] == got["created_at"] == listed["created_at"]
    assert ISO_UTC.match(job["created_at"]) and job["created_at"] == done["created_at"]
    assert ISO_UTC.match(done["started_at"]) and ISO_UTC.match(done["finished_at"])


def test_polycert_version_prints_the_projects_version(tmp_path):
    result = subprocess.run([sys.executable, "-m", "polycert.cli", "--version"], cwd=ROOT, env=server_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert result.returncode == 0 and result.stdout == f"polycert {version}\n"


def small_npz(seed: int) -> bytes:
    import io

    import numpy as np

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, W1=rng.normal(size=(3, 4)), b1=rng.normal(size=3), W2=rng.normal(size=(2, 3)), b2=rng.normal(size=2))
    return buf.getvalue()


def test_known_weights_uploaded_under_a_new_name_make_it_an_alias_that_jobs_can_name(dev_server):
    auth = {"Authorization": f"Bearer {DEVELOPMENT_TOKEN}"}
    weights = small_npz(1)
    form = {"activations": "relu,identity"}
    with httpx.Client(base_url=dev_server.url, timeout=60, headers=auth) as c:
        first = c.post("/networks/upload", files={"file": ("a.npz", weights)}, data={**form, "name": "alpha"}).json()
        again = c.post("/networks/upload", files={"file": ("b.npz", weights)}, data={**form, "name": "beta"})
        assert again.status_code == 201, again.text
        again = again.json()
        assert first["created"] and not again["created"]
        assert again["id"] == first["id"] and again["name"] == "alpha" and again["aliases"] == ["beta"]
        assert c.get(f"/networks/{first['id']}").json()["aliases"] == ["beta"]
        job = c.post("/jobs", json=dict(network="beta", inputs=[[0.5] * 4], labels=[0], eps=[0.0], methods="lp"))
        assert job.status_code == 202, job.text
        assert job.json()["network_id"] == first["id"]
        assert dev_server.wait_job(job.json()["id"])["status"] == "done"
        results = c.get(f"/jobs/{job.json()['id']}/results").json()
        assert results["count"] == 1 and results["data"][0]["verdict"] in ("verified", "falsified")


def test_known_weights_under_a_name_another_network_has_are_a_409_naming_both(dev_server):
    auth = {"Authorization": f"Bearer {DEVELOPMENT_TOKEN}"}
    form = {"activations": "relu,identity"}
    with httpx.Client(base_url=dev_server.url, timeout=60, headers=auth) as c:
        mine = c.post("/networks/upload", files={"file": ("m.npz", small_npz(2))}, data={**form, "name": "mine"}).json()
        other = c.post("/networks/upload", files={"file": ("o.npz", small_npz(3))}, data={**form, "name": "other"}).json()
        response = c.post("/networks/upload", files={"file": ("m.npz", small_npz(2))}, data={**form, "name": "other"})
        assert response.status_code == 409
        assert response.json()["detail"] == (
            f"these weights are network {mine['id']} ('mine'); the name 'other' already names network {other['id']}:"
            " upload them under another name, or use 'mine'")
        assert c.get(f"/networks/{mine['id']}").json()["aliases"] == []
