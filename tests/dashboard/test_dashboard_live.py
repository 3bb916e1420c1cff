"""The dashboard (issue 18) against a real ``polycert serve`` process (SQLite + its embedded worker) holding
a finished robustness job (LP and MIP), a signature job, an injectivity job and a radius job: first the
read-only routes the page uses, checked against the network's own forward pass and the stored results;
then the pages in headless Chromium, whose drawn values (data attributes) must equal the API's. Every page
must load with no console error and no request to another host; screenshots go to docs/screenshots/."""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from urllib.parse import urlparse

import numpy as np
import pytest

from tests.dashboard import browser
from tests.live import ROOT, live_server

pytestmark = pytest.mark.slow

SHOTS = ROOT / "docs" / "screenshots"
NETWORK = "polycert-tiny"
EPS = [0.01, 0.02, 0.05]
ROBUSTNESS = dict(network=NETWORK, dataset=dict(name="mnist7-area", start=0, stop=20), eps=EPS, methods="both")
SIGNATURE = dict(kind="signature", network=NETWORK, dataset=dict(name="mnist7-area", start=0, stop=20), eps=[0.05],
                 methods="both")
FOLD = "relu-fold-49"  # relu(x + 1/2) then identity on 7x7 inputs: it folds where a pixel reaches -1/2


def fold_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, W1=np.eye(49), b1=np.full(49, 0.5), W2=np.eye(49), b2=np.zeros(49))
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("dashboard")) as live:
        yield live


@pytest.fixture(scope="module")
def jobs(server):
    """Ids of the four finished jobs (submitted together; the embedded worker answers them in turn)."""
    with server.client() as c:
        up = c.post("/networks/upload", files={"file": ("fold.npz", fold_npz())},
                    data={"activations": "relu,identity", "name": FOLD})
        assert up.status_code == 201, up.text
        bodies = dict(
            robustness=ROBUSTNESS, signature=SIGNATURE,
            injectivity=dict(kind="injectivity", network=FOLD, dataset=dict(name="mnist7-area", start=0, stop=1),
                             radius=0.6),
            radius=dict(kind="radius", network=FOLD, dataset=dict(name="mnist7-area", start=0, stop=1),
                        start=0.3, growth=2.0, gap=0.02, max_radius=1.0))
        ids = {}
        for name, body in bodies.items():
            response = c.post("/jobs", json=body)
            assert response.status_code == 202, response.text
            ids[name] = response.json()["id"]
    for name, job_id in ids.items():
        assert wait_done(server, job_id) == "done", server.tail()
    with server.client() as c:
        ids["network"] = next(n["id"] for n in c.get("/networks").json()["data"] if n["name"] == NETWORK)
    return ids


def wait_done(server, job_id: int, timeout: float = 900) -> str:
    """Poll the job until it ends. While the embedded worker runs a SCIP solve the server can stall and
    reset a kept-alive connection (seen with the invertibility jobs), so a transport error is retried."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{server.url}/jobs/{job_id}", timeout=30).json()["status"]
        except httpx.TransportError:
            status = "unreachable"
        if status in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.5)
    return status


def get(server, path, **params):
    with server.client(token=False) as c:
        response = c.get(path, params=params)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def all_results(server, job_id, **params):
    return get(server, f"/jobs/{job_id}/results", limit=1000, **params)["data"]


# ---------------------------------------------------------------- the routes the page reads
def test_the_root_serves_the_dashboard_and_its_assets_without_a_token(server):
    with server.client(token=False) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '<script type="module" src="/dashboard/app.js">' in page.text
        for asset in ("/dashboard/app.js", "/dashboard/style.css", "/dashboard/favicon.svg"):
            response = c.get(asset)
            assert response.status_code == 200 and len(response.content) > 200, asset
            assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", "") and "https://" not in response.text, asset
        assert c.get("/dashboard/none.js").status_code == 404


def test_weights_are_the_stored_networks_layers(server, jobs):
    from polycert.zoo import load_builtin

    body = get(server, f"/networks/{jobs['network']}/weights")
    network = load_builtin(NETWORK)
    assert body["sizes"] == [49, 3, 3, 10] and body["image_side"] == 7 and body["preprocessing"] == "mnist7-area"
    for layer, ours in zip(body["layers"], network.layers):
        assert np.array_equal(np.array(layer["weight"]), ours.weight) and np.array_equal(np.array(layer["bias"]), ours.bias)
        assert layer["activation"] == ours.activation.name and layer["names"] is None
    with server.client() as c:
        verianet = c.post("/networks", json={"builtin": "verianet"}).json()["id"]
    named = get(server, f"/networks/{verianet}/weights")["layers"]
    assert named[0]["names"] == ["Frame", "Spine", "Belt"] and named[1]["names"] is None


def test_samples_come_from_the_shipped_sets_and_an_index_outside_is_a_404_naming_the_range(server):
    from polycert.datasets import load_mnist7

    listing = get(server, "/datasets")
    assert {(d["name"], d["split"]) for d in listing["data"]} >= {("mnist7-area", "test"), ("mnist28", "test")}
    x, y = load_mnist7("test", "area")
    sample = get(server, "/datasets/mnist7-area/17")
    assert sample["label"] == int(y[17]) and np.array_equal(sample["input"], x[17]) and sample["count"] == 10_000
    with server.client(token=False) as c:
        outside = c.get("/datasets/mnist7-area/10000")
        assert outside.status_code == 404 and "0..9999" in outside.json()["detail"]
        assert c.get("/datasets/mnist28/1000").status_code == 404
        assert c.get("/datasets/no-such-set/0").status_code == 404


def test_the_forward_pass_is_the_networks_own(server, jobs):
    from polycert.datasets import load_mnist7
    from polycert.zoo import load_builtin

    network = load_builtin(NETWORK)
    x, y = load_mnist7("test", "area")
    body = get(server, f"/networks/{jobs['network']}/forward", dataset="mnist7-area", index=5)
    assert body["label"] == int(y[5]) and body["logits"] == network.forward(x[5]).tolist()
    assert body["predicted"] == int(network.predict(x[5]))
    for layer, (z, a) in zip(body["layers"], network.trace(x[5])):
        assert layer["pre"] == z.tolist() and layer["post"] == a.tolist()
    point = np.clip(x[5] + 0.03, 0, 1)
    with server.client(token=False) as c:
        posted = c.post(f"/networks/{jobs['network']}/forward", json={"input": point.tolist()})
        assert posted.status_code == 200 and posted.json()["logits"] == network.forward(point).tolist()
        short = c.post(f"/networks/{jobs['network']}/forward", json={"input": [0.5] * 48})
        assert short.status_code == 422 and "expects 49" in short.json()["detail"]
        assert c.get(f"/networks/{jobs['network']}/forward", params=dict(dataset="mnist7-area", index=10_000)).status_code == 404
        assert c.get("/networks/999/weights").status_code == 404


def expected_curves(results: list[dict]) -> dict:
    """Per digit ('all' too) and eps, from the stored certificates: (n, LP share, MIP share, attack share),
    an input counting as attacked from the smallest eps at which the attack or its centre falsified it."""
    pairs: dict = defaultdict(lambda: defaultdict(dict))
    for r in results:
        for digit in (r["label"], "all"):
            pairs[digit][r["eps"]].setdefault(r["item"], []).append(r)
    out = {}
    for digit, by_eps in pairs.items():
        attacked: set = set()
        for eps in sorted(by_eps):
            items = by_eps[eps]
            attacked |= {i for i, certs in items.items()
                         if any(c["verdict"] == "falsified" and c["stage"] in ("center", "attack") for c in certs)}
            n = len(items)
            lp = sum(any(c["method"] == "lp" and c["verdict"] == "verified" for c in cs) for cs in items.values())
            mip = sum(any(c["method"] == "mip" and c["verdict"] == "verified" for c in cs) for cs in items.values())
            out[(digit, eps)] = (n, lp / n, mip / n, (n - len(attacked & set(items))) / n)
    return out


def test_the_curves_are_the_shares_of_the_stored_certificates(server, jobs):
    curves = get(server, f"/jobs/{jobs['robustness']}/curves")
    expected = expected_curves(all_results(server, jobs["robustness"]))
    got = {("all", p["eps"]): (p["n"], p["lp"], p["mip"], p["attack"]) for p in curves["total"]}
    got.update({(d["digit"], p["eps"]): (p["n"], p["lp"], p["mip"], p["attack"]) for d in curves["digits"] for p in d["points"]})
    assert got == expected and curves["eps"] == EPS
    for key, (n, lp, mip, attack) in got.items():  # sound methods: LP <= exact <= not falsified
        assert lp <= mip <= attack, key
    assert sum(p["n"] for d in curves["digits"] for p in d["points"]) == 20 * len(EPS)
    with server.client(token=False) as c:
        assert c.get(f"/jobs/{jobs['signature']}/curves").status_code == 409


# ---------------------------------------------------------------- the pages in Chromium
class Tab:
    """A page that records console errors, page errors and every URL it requests."""

    def __init__(self, context, base: str):
        self.base, self.errors, self.requests = base, [], []
        self.page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, route: str, selector: str | None = None):
        self.page.goto(f"{self.base}/#{route}")
        self.page.wait_for_function("document.body.dataset.ready !== undefined", timeout=60_000)
        if selector:
            self.page.wait_for_selector(selector, timeout=60_000)
        return self.page

    def values(self, selector: str) -> list[float]:
        return [float(v) for v in self.page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.value)")]

    def check_clean(self):
        assert not self.errors, self.errors
        foreign = [u for u in self.requests if urlparse(u).hostname != "127.0.0.1"]
        assert self.requests and not foreign, foreign

    def shot(self, name: str):
        SHOTS.mkdir(parents=True, exist_ok=True)
        width = self.page.viewport_size["width"]
        self.page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)


@pytest.fixture(scope="module")
def chromium():
    browser.chromium_executable()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = browser.launch(p)
        yield b
        b.close()


@pytest.fixture(params=[(1280, 800), (390, 844)], ids=["wide", "narrow"])
def tab(request, chromium, server):
    width, height = request.param
    context = chromium.new_context(viewport={"width": width, "height": height})
    t = Tab(context, server.url)
    yield t
    context.close()


@pytest.fixture
def wide_tab(chromium, server):
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    yield Tab(context, server.url)
    context.close()


def no_overflow(page):
    width, inner = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width <= inner + 1, f"the page is {width} px wide in a {inner} px window"


def test_networks_list_and_a_neuron_click_shows_its_weights_and_activation(tab, server, jobs):
    net = jobs["network"]
    page = tab.open("/networks", "#networks tbody tr")
    assert page.locator(f'#networks tr[data-network="{net}"]').inner_text().count(NETWORK) == 1
    no_overflow(page)
    tab.shot("networks")
    page = tab.open(f"/networks/{net}", "#network-diagram .neuron")
    weights = get(server, f"/networks/{net}/weights")
    assert page.locator("#network-diagram .neuron").count() == 3 + 3 + 10
    page.click('#network-diagram .neuron[data-layer="0"][data-neuron="1"]')
    page.wait_for_selector('#neuron-detail[data-neuron="1"]')
    assert tab.values('#neuron-detail svg[data-kind="weights"] rect') == weights["layers"][0]["weight"][1]
    forward = get(server, f"/networks/{net}/forward", dataset="mnist7-area", index=0)
    assert float(page.get_attribute("#neuron-activation", "data-post")) == forward["layers"][0]["post"][1]
    assert json.loads(page.get_attribute("#logits", "data-values")) == forward["logits"]
    # the next sample: the server's forward pass on image 1, drawn
    page.click("#next")
    page.wait_for_selector('#sample-facts[data-index="1"]')
    after = get(server, f"/networks/{net}/forward", dataset="mnist7-area", index=1)
    assert json.loads(page.get_attribute("#logits", "data-values")) == after["logits"]
    assert float(page.get_attribute("#neuron-activation", "data-post")) == after["layers"][0]["post"][1]
    page.fill("#sample-index", "42")
    page.press("#sample-index", "Enter")
    page.wait_for_selector('#sample-facts[data-index="42"]')
    assert int(page.get_attribute("#sample-facts", "data-label")) == get(server, "/datasets/mnist7-area/42")["label"]
    assert page.locator("#neuron-signatures .bars .row").count() > 0  # stored signatures of the label's digit
    no_overflow(page)
    tab.shot("network")
    tab.check_clean()


def test_changing_the_digit_redraws_the_heatmaps_with_the_apis_values(tab, server, jobs):
    net, job = jobs["network"], jobs["signature"]
    labels = sorted({r["label"] for r in all_results(server, job)})
    first, second = labels[0], labels[1]
    page = tab.open(f"/signatures?network={net}&digit={first}&job={job}", f'#signature-maps [data-digit="{first}"]')

    def drawn(method, bound):
        return tab.values(f'#signature-maps svg[data-method="{method}"][data-kind="{bound}"] rect')

    maps = {}
    for digit in (first, second):
        if digit == second:
            page.click(f'#sig-digits button[data-digit="{second}"]')
            page.wait_for_selector(f'#signature-maps [data-digit="{second}"]')
        for method in ("lp", "mip"):
            api = get(server, "/signatures", network=net, digit=digit, job=job, method=method)
            assert api["n"] > 0
            assert drawn(method, "lower") == api["pixel_lower"] and drawn(method, "upper") == api["pixel_upper"]
            assert int(page.get_attribute(f'#signature-maps section[data-method="{method}"]', "data-n")) == api["n"]
            maps[digit, method] = api["pixel_lower"] + api["pixel_upper"]
        assert page.locator('#signature-maps .envelope[data-method="lp"] .row').count() > 0
        if digit == first:
            no_overflow(page)
            tab.shot("signatures")
    assert maps[first, "lp"] != maps[second, "lp"]  # the redraw changed the picture
    # the signature job's own page: certificates per digit and method, each digit linking to its maps
    page = tab.open(f"/jobs/{job}", "#signature-digits tbody tr")
    results = all_results(server, job)
    rows = page.eval_on_selector_all("#signature-digits tbody tr", "els => els.map(e => [...e.cells].slice(0, 3).map(c => +c.textContent))")
    assert rows == [[d, sum(r["label"] == d and r["method"] == "lp" for r in results),
                     sum(r["label"] == d and r["method"] == "mip" for r in results)] for d in labels]
    no_overflow(page)
    tab.shot("signature-job")
    tab.check_clean()


def test_the_robustness_page_draws_the_curves_the_table_and_a_counterexample(tab, server, jobs):
    job = jobs["robustness"]
    page = tab.open(f"/jobs/{job}", "#counterexample [data-certificate]")
    expected = expected_curves(all_results(server, job))
    points = page.eval_on_selector_all("svg.curve circle.point", "els => els.map(e => [e.dataset.digit, e.dataset.series, +e.dataset.eps, +e.dataset.share, +e.dataset.n])")
    assert len(points) == 3 * len(expected)  # lp, mip, attack at every (digit, eps)
    column = {"lp": 1, "mip": 2, "attack": 3}
    for digit, series, eps, share, n in points:
        key = ("all" if digit == "all" else int(digit), eps)
        assert share == expected[key][column[series]] and n == expected[key][0], (key, series)
    # the LP-versus-MIP table: every pair, then only those whose verdicts differ
    comparison = get(server, f"/jobs/{job}/comparison", limit=1000)
    rows = page.eval_on_selector_all("#comparison-table tbody tr", "els => els.map(e => [+e.dataset.item, +e.dataset.eps, e.dataset.differ])")
    assert rows == [[r["item"], r["eps"], str(r["differ"]).lower()] for r in comparison["rows"]]
    page.check("#differ-filter")
    differ = get(server, f"/jobs/{job}/comparison", differ="true", limit=1000)
    rows = page.eval_on_selector_all("#comparison-table tbody tr", "els => els.map(e => [+e.dataset.item, +e.dataset.eps])")
    assert rows == [[r["item"], r["eps"]] for r in differ["rows"]] and len(rows) < comparison["count"]
    assert page.inner_text("#comparison-count").startswith(f"{differ['count']} of {comparison['count']}")
    summary = page.inner_text("#comparison-summary")
    assert f"{comparison['summary']['total']['mip_verified']}\nMIP verified" in summary
    # the counterexample drawn is the first falsified certificate's, beside its input image
    first = next(c for c in all_results(server, job, verdict="falsified") if c["counterexample"])
    assert int(page.get_attribute("#counterexample [data-certificate]", "data-certificate")) == first["id"]
    assert tab.values('#counterexample svg[data-kind="counterexample"] rect') == first["counterexample"]
    centre = get(server, f"/datasets/mnist7-area/{first['source_index']}")["input"]
    assert tab.values('#counterexample svg[data-kind="centre"] rect') == centre
    logits = tab.values('#counterexample svg[data-kind="logits-counterexample"] rect[data-class]')
    assert logits == get_forward(server, jobs["network"], first["counterexample"])
    assert int(np.argmax(logits)) != first["label"]
    no_overflow(page)
    page.uncheck("#differ-filter")
    tab.shot("robustness")
    tab.check_clean()


def get_forward(server, network_id, x):
    with server.client(token=False) as c:
        return c.post(f"/networks/{network_id}/forward", json={"input": x}).json()["logits"]


def test_the_invertibility_pages_show_the_witness_pair_and_the_certified_radius(tab, server, jobs):
    (cert,) = all_results(server, jobs["injectivity"])
    page = tab.open(f"/jobs/{jobs['injectivity']}", ".cert .witness")
    witness = cert["extra"]["witness"]
    assert float(page.get_attribute(".cert .witness", "data-distance")) == witness["distance"] > 0
    assert tab.values('.cert svg[data-kind="witness-x"] rect') == witness["x"]
    assert tab.values('.cert svg[data-kind="witness-y"] rect') == witness["y"]
    assert "not invertible" in page.inner_text(".cert h3")
    no_overflow(page)
    tab.shot("injectivity")
    (radius,) = all_results(server, jobs["radius"])
    page = tab.open(f"/jobs/{jobs['radius']}", ".cert .radius")
    assert float(page.get_attribute(".cert .radius", "data-lower")) == radius["lower"]
    assert radius["lower"] <= 0.5 <= radius["upper"]  # the fold is 1/2 away from the background pixels
    assert page.locator(".cert table.evaluations tbody tr").count() == len(radius["extra"]["evaluations"])
    above = radius["extra"].get("witness_above")
    if above:  # the pair that breaks injectivity just beyond the certified radius
        assert tab.values('.cert svg[data-kind="witness-x"] rect') == above["x"]
    no_overflow(page)
    tab.shot("radius")
    tab.check_clean()


def test_a_running_jobs_progress_advances_on_the_page(wide_tab, server, jobs):
    tab = wide_tab
    with server.client() as c:
        created = c.post("/jobs", json=dict(network=NETWORK, dataset=dict(name="mnist7-area", start=100, stop=400),
                                            eps=[0.02], methods="lp"))
        assert created.status_code == 202, created.text
        job = created.json()["id"]
    try:
        page = tab.open("/jobs", f'#jobs tr[data-job="{job}"]')
        text = f'#jobs tr[data-job="{job}"] .progress-text'
        page.wait_for_function(f"document.querySelector('{text}') && +document.querySelector('{text}').dataset.done > 0",
                               timeout=120_000)
        first = page.inner_text(text)
        page.wait_for_function(f"document.querySelector('{text}').textContent !== {json.dumps(first)}", timeout=120_000)
        second = page.inner_text(text)
        done = [int(s.split("/")[0]) for s in (first, second)]
        assert done[1] > done[0] and second.endswith("%)")
        tab.shot("jobs")
        page = tab.open(f"/jobs/{job}", "#job-progress .progress-text")
        before = int(page.get_attribute("#job-progress .progress-text", "data-done"))
        page.wait_for_function(f"+document.querySelector('#job-progress .progress-text').dataset.done > {before}"
                               " || document.querySelector('h1 .badge').textContent === 'done'", timeout=120_000)
    finally:
        with server.client() as c:
            c.post(f"/jobs/{job}/cancel")
    deadline = time.monotonic() + 60
    while get(server, f"/jobs/{job}")["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    tab.check_clean()
