"""A small client of PolyCert's HTTP API (the one ``polycert --url`` uses).

Every method returns the API's JSON as plain dicts and lists (the shapes of :mod:`polycert.api.schemas`);
list endpoints are read page by page to the end. Any refusal is an :class:`ApiError` that carries the
server's status and its ``detail`` in one line; a server that cannot be reached is ``status_code`` 0::

    import polycert

    with polycert.Client("http://127.0.0.1:8000", token="polycert-dev-token") as client:
        job = client.submit({"network": "polycert-tiny", "dataset": {"name": "mnist7-area", "stop": 6},
                             "eps": [0.02], "methods": "both"})
        client.wait(job["id"], timeout=300)
        for cert in client.results(job["id"]):
            print(cert["item"], cert["method"], cert["verdict"], cert["lower"], cert["upper"])
        print(client.comparison(job["id"])["summary"]["total"])

Reads need no token; writes (submit, cancel, uploads) need the server's ``POLYCERT_API_TOKEN``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

__all__ = ["ApiError", "Client", "error_message", "find_network"]

FINISHED = ("done", "failed", "cancelled")
AWAY = (0, 502, 503, 504)  # a server that is not there for now: no connection, or a proxy's "not there"


class ApiError(Exception):
    """The server refused a request (``status_code`` its HTTP status) or could not be reached (0)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message

    def __repr__(self) -> str:
        return f"ApiError({self.status_code}, {self.message!r})"


def error_message(detail: Any) -> str:
    """The server's ``detail`` as one line: a string as it is; a 422's list of errors as
    ``field.path: message; ...`` (the ``body`` / ``query`` prefix left out)."""
    if isinstance(detail, list):
        parts = []
        for e in detail:
            if not isinstance(e, dict):
                parts.append(str(e))
                continue
            loc = [str(p) for p in e.get("loc", []) if p not in ("body", "query", "path", "form")]
            parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', e)}")
        return "; ".join(parts)
    return " ".join(str(detail).split())  # one line whatever the server wrapped


def find_network(networks: list[dict], key: str | int) -> dict:
    """A network of a ``GET /networks`` listing by id, name or alias; ApiError 404 when none has it."""
    text = str(key).strip()
    for row in networks:
        if (text.isdigit() and row["id"] == int(text)) or row["name"] == text or text in row.get("aliases", []):
            return row
    known = ", ".join(f"{n['id']} ({n['name']})" for n in networks) or "none"
    raise ApiError(404, f"no network {text!r}; registered: {known}")


def _reason(exc: httpx.TransportError) -> str:
    """``[Errno 111] Connection refused`` -> ``connection refused``."""
    text = str(exc) or type(exc).__name__
    if text.startswith("[Errno") and "]" in text:
        text = text.split("]", 1)[1]
    return text.strip().rstrip(".").lower() or type(exc).__name__


class Client:
    """PolyCert's HTTP API at ``url`` (e.g. ``http://127.0.0.1:8000``; ``http://`` is assumed when no
    scheme is given). ``token``: the write token, sent as ``Authorization: Bearer``; ``timeout``: seconds
    for each request. Use it as a context manager, or call :meth:`close`."""

    #: items asked for per request of a paged list (the server allows at most 1000, 500 for some lists)
    page_size = 500

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        url = url.strip().rstrip("/")
        self.url = url if "://" in url else f"http://{url}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, params: dict | None = None, body: Any = None, **kwargs: Any) -> Any:
        if params:
            params = {k: v for k, v in params.items() if v is not None}  # an unset filter is left out
        if body is not None:
            try:
                kwargs["content"] = json.dumps(body, allow_nan=False)
            except ValueError:
                raise ValueError("the request holds NaN or an infinite number, which JSON cannot carry") from None
            kwargs["headers"] = {"Content-Type": "application/json"}
        try:
            response = self._http.request(method, path, params=params, **kwargs)
        except httpx.TimeoutException:
            raise ApiError(0, f"{self.url} did not answer within {self._http.timeout.read} s") from None
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach {self.url} ({_reason(exc)})") from None
        if response.is_success:
            return response.json()
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:  # not JSON: a proxy's page, say
            detail = response.text.strip()[:200] or response.reason_phrase
        raise ApiError(response.status_code, error_message(detail) or f"HTTP {response.status_code}")

    def _pages(self, path: str, params: dict, *, key: str = "data") -> Iterator[dict]:
        """Every item of a paged list endpoint, in order (``offset`` / ``limit``)."""
        offset = 0
        while True:
            page = self._request("GET", path, params={**params, "offset": offset, "limit": self.page_size})
            yield from page[key]
            offset += len(page[key])
            if not page[key] or offset >= page["count"]:
                return

    # -- health and networks --------------------------------------------------------------------------
    def health(self) -> dict:
        """``GET /health``: ``{"status": "ok", "embedded": ...}``."""
        return self._request("GET", "/health")

    def networks(self) -> list[dict]:
        """The registered networks (``GET /networks``), each with its input domain and aliases."""
        return self._request("GET", "/networks")["data"]

    def network(self, key: int | str) -> dict:
        """One registered network by id, name or alias."""
        if str(key).strip().isdigit():
            return self._request("GET", f"/networks/{int(key)}")
        return find_network(self.networks(), key)

    def register_builtin(self, name: str) -> dict:
        """Register a shipped network (``polycert-tiny``, ``verianet``); ``created`` says whether it was new."""
        return self._request("POST", "/networks", body={"builtin": name})

    def upload_network(self, path: str | os.PathLike, *, name: str | None = None, domain: str | None = None,
                       activations: str | list[str] | None = None, orientation: str | None = None) -> dict:
        """Upload a ``.npz``, ``.pt`` or ``.onnx`` file. ``domain``: the inputs' box as ``LO,HI`` (or JSON);
        ``activations``: for .npz / .pt, e.g. ``"gelu,gelu,identity"``; ``orientation``: ``out_in`` or
        ``in_out`` (.npz)."""
        path = Path(path)
        if not isinstance(activations, (str, type(None))):
            activations = ",".join(activations)
        form = {k: v for k, v in dict(name=name, domain=domain, activations=activations,
                                      orientation=orientation).items() if v is not None}
        with open(path, "rb") as fh:
            return self._request("POST", "/networks/upload", files={"file": (path.name, fh)}, data=form)

    def prune(self, network_id: int, percent: float, *, scope: str = "layer", name: str | None = None) -> dict:
        """Register a copy with ``percent`` of the smallest-magnitude weights set to zero."""
        return self._request("POST", f"/networks/{network_id}/prune",
                             body={"percent": percent, "scope": scope, "name": name})

    def quantize(self, network_id: int, bits: int = 8, *, name: str | None = None) -> dict:
        """Register a copy with weights quantised to ``bits`` bits."""
        return self._request("POST", f"/networks/{network_id}/quantize", body={"bits": bits, "name": name})

    # -- jobs -----------------------------------------------------------------------------------------
    def submit(self, body: dict) -> dict:
        """``POST /jobs``: a robustness batch, invertibility queries (``kind``), a signature or a
        VNN-COMP job; returns the job (``id``, ``status``, ``progress``)."""
        return self._request("POST", "/jobs", body=body)

    def job(self, job_id: int) -> dict:
        """A job with its progress (done, errors, verdict counts per method)."""
        return self._request("GET", f"/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        """Every job, oldest first as the server lists them."""
        return list(self._pages("/jobs", {}))

    def cancel(self, job_id: int) -> str:
        """Cancel a queued or running job (answers already stored are kept); returns the server's message.
        A job that already ended is an ApiError 409."""
        return self._request("POST", f"/jobs/{job_id}/cancel")["message"]

    def requeue(self, job_id: int) -> str:
        """Send a job's unfinished chunks to the queue again (after a broker lost its messages); returns the
        server's message. A job that already ended is an ApiError 409."""
        return self._request("POST", f"/jobs/{job_id}/requeue")["message"]

    def results(self, job_id: int, *, verdict: str | None = None, method: str | None = None, eps: float | None = None,
                label: int | None = None, signatures: bool = False, boxes: bool = False) -> list[dict]:
        """Every certificate of a job (all pages of ``GET /jobs/{id}/results``), in query order."""
        params = dict(verdict=verdict, method=method, eps=eps, label=label,
                      signatures=signatures or None, boxes=boxes or None)
        return list(self._pages(f"/jobs/{job_id}/results", params))

    def comparison(self, job_id: int, *, differ: bool | None = None, eps: float | None = None,
                   digit: int | None = None, rows: bool = True) -> dict:
        """The LP-versus-MIP comparison of a ``methods="both"`` job: ``summary`` (whole job) and every row
        the filters keep (all pages; ``rows=False``: the summary and ``count`` only, in one request).
        A job that did not run both methods is an ApiError 409."""
        params = dict(differ=differ, eps=eps, digit=digit)
        first = self._request("GET", f"/jobs/{job_id}/comparison", params={**params, "limit": self.page_size if rows else 1})
        if not rows:
            return {**first, "limit": 0, "rows": []}
        kept = first["rows"]
        while len(kept) < first["count"]:
            page = self._request("GET", f"/jobs/{job_id}/comparison",
                                 params={**params, "offset": len(kept), "limit": self.page_size})
            if not page["rows"]:
                break
            kept += page["rows"]
        return {**first, "offset": 0, "limit": len(kept), "rows": kept}

    def wait(self, job_id: int, timeout: float = 600.0, poll: float = 0.5,
             on_progress: Callable[[dict], None] | None = None, away: float = 60.0) -> dict:
        """Poll the job until it is done, failed or cancelled and return it; ``on_progress`` gets each
        poll's job. TimeoutError after ``timeout`` seconds (the job keeps running).

        A server that is away (restarting: no connection, or 502 / 503 / 504 from a proxy in front of it) is
        polled again until it is back: the job runs on in the workers meanwhile. ApiError when it has been
        away ``away`` seconds in a row (or at ``timeout``), saying so."""
        deadline = time.monotonic() + timeout
        away_since: float | None = None
        while True:
            try:
                job = self.job(job_id)
            except ApiError as exc:
                if exc.status_code not in AWAY:
                    raise
                now = time.monotonic()
                away_since = now if away_since is None else away_since
                if now - away_since >= away or now > deadline:
                    raise ApiError(exc.status_code, f"{exc.message}, for {now - away_since:.0f} s while waiting for "
                                                    f"job {job_id} (it may still be running)") from None
                time.sleep(poll)
                continue
            away_since = None
            if on_progress is not None:
                on_progress(job)
            if job["status"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout:g} s")
            time.sleep(poll)

    # -- signatures -----------------------------------------------------------------------------------
    def signatures(self, *, digit: int, network: int | str | None = None, job: int | None = None,
                   eps: float | None = None, method: str | None = None, source: str | None = None,
                   verdict: str | None = None) -> dict:
        """``GET /signatures``: one network's certificates of one digit, aggregated (n, pixel shares at the
        lower / upper bound, per-neuron shares of each tight constraint)."""
        params = dict(digit=digit, network=network, job=job, eps=eps, method=method, source=source, verdict=verdict)
        return self._request("GET", "/signatures", params=params)

    def signature_certificates(self, *, digit: int, network: int | str | None = None, job: int | None = None,
                               eps: float | None = None, method: str | None = None, source: str | None = None,
                               verdict: str | None = None) -> list[dict]:
        """The certificates behind :meth:`signatures`, each with its tight constraints (all pages)."""
        params = dict(digit=digit, network=network, job=job, eps=eps, method=method, source=source, verdict=verdict)
        return list(self._pages("/signatures/certificates", params))
