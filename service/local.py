"""The :class:`~polycert.client.Client`'s methods answered in this process, from the configured database.

The command line without ``--url`` talks to this; with ``--url`` to a Client. Each method calls the API's
own route function and dumps its response model, so both give the same dicts (and the CLI one way to print
them); the service's errors become the :class:`~polycert.client.ApiError` the HTTP API would answer with
(the handlers of :func:`polycert.api.app.create_app`).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Iterator

from pydantic import TypeAdapter, ValidationError

from polycert.client import ApiError, error_message, find_network

# limits no caller reaches: the routes page, this process reads everything at once
ALL = 10**9


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """The service's exceptions as the HTTP API's statuses (``polycert.api.app``'s handlers, one table)."""
    from fastapi import HTTPException

    from polycert.api.app import error_status

    try:
        yield
    except HTTPException as exc:
        raise ApiError(exc.status_code, error_message(exc.detail)) from None
    except ValidationError as exc:
        raise ApiError(422, error_message(exc.errors())) from None
    except Exception as exc:
        code = error_status(exc)
        if code is None:
            raise
        raise ApiError(code, str(exc)) from None


class Local:
    """The API on ``engine`` (a migrated database) without HTTP; ``user`` is who submits (``created_by``)."""

    def __init__(self, engine, settings, user: str = "cli"):
        from polycert.db.session import session_factory

        self.settings = settings
        self.user = user
        self._sessions = session_factory(engine)

    @contextlib.contextmanager
    def _session(self):
        with api_errors(), self._sessions() as session:
            yield session

    # -- networks -------------------------------------------------------------------------------------
    def networks(self) -> list[dict]:
        from polycert.api.routers import networks

        with self._session() as session:
            return networks.list_networks(session).model_dump(mode="json")["data"]

    def network(self, key: int | str) -> dict:
        from polycert.api.routers import networks

        if str(key).strip().isdigit():
            with self._session() as session:
                return networks.get_network(int(key), session).model_dump(mode="json")
        return find_network(self.networks(), key)

    def register_builtin(self, name: str) -> dict:
        from polycert.api.routers import networks
        from polycert.api.schemas import NetworkBuiltin

        with self._session() as session:
            return networks.register_builtin(NetworkBuiltin(builtin=name), session, self.user).model_dump(mode="json")

    def upload_network(self, path, *, name: str | None = None, domain: str | None = None,
                       activations: str | list[str] | None = None, orientation: str | None = None) -> dict:
        from fastapi import UploadFile

        from polycert.api.routers import networks

        path = Path(path)
        if not isinstance(activations, (str, type(None))):
            activations = ",".join(activations)
        upload = UploadFile(io.BytesIO(path.read_bytes()), filename=path.name)
        with self._session() as session:
            return networks.upload(session, self.settings, self.user, upload, name=name, activations=activations,
                                   orientation=orientation, domain=domain).model_dump(mode="json")

    def register_onnx(self, path) -> dict:
        """An ONNX file of this machine registered as it is, with no upload limits and its stored domain not
        checked (``vnncomp-batch``: each VNN-COMP instance names its own box). Not an API route."""
        from polycert.api.routers import networks
        from polycert.batches import register_network
        from polycert.formulations.loaders import load_onnx

        with self._session() as session:
            row, created = register_network(session, load_onnx(str(path)), "onnx", check_domain=False)
            session.commit()
            return networks._registered(session, row, created).model_dump(mode="json")

    def prune(self, network_id: int, percent: float, *, scope: str = "layer", name: str | None = None) -> dict:
        from polycert.api.routers import networks
        from polycert.api.schemas import PruneRequest

        with self._session() as session:
            body = PruneRequest(percent=percent, scope=scope, name=name)
            return networks.prune(network_id, body, session, self.user).model_dump(mode="json")

    def quantize(self, network_id: int, bits: int = 8, *, name: str | None = None) -> dict:
        from polycert.api.routers import networks
        from polycert.api.schemas import QuantizeRequest

        with self._session() as session:
            body = QuantizeRequest(bits=bits, name=name)
            return networks.quantize(network_id, body, session, self.user).model_dump(mode="json")

    # -- jobs -----------------------------------------------------------------------------------------
    def submit(self, body: dict) -> dict:
        from polycert.api.routers import jobs
        from polycert.api.schemas import JobCreate
        from polycert.dispatch import get_dispatcher

        with self._session() as session:
            request = TypeAdapter(JobCreate).validate_python(body)
            return jobs.submit(request, session, self.settings, get_dispatcher(self.settings),
                               self.user).model_dump(mode="json")

    def job(self, job_id: int) -> dict:
        from polycert.api.routers import jobs

        with self._session() as session:
            return jobs.get_job(job_id, session).model_dump(mode="json")

    def jobs(self) -> list[dict]:
        from polycert.api.routers import jobs

        with self._session() as session:
            return jobs.list_jobs(session, offset=0, limit=ALL).model_dump(mode="json")["data"]

    def cancel(self, job_id: int) -> str:
        from polycert.api.routers import jobs

        with self._session() as session:
            return jobs.cancel(job_id, session, self.user).message

    def requeue(self, job_id: int) -> str:
        from polycert.api.routers import jobs
        from polycert.dispatch import get_dispatcher

        with self._session() as session:
            return jobs.requeue(job_id, session, self.settings, get_dispatcher(self.settings), self.user).message

    def results(self, job_id: int, *, verdict: str | None = None, method: str | None = None, eps: float | None = None,
                label: int | None = None, signatures: bool = False, boxes: bool = False) -> list[dict]:
        from polycert.api.routers import jobs

        with self._session() as session:
            page = jobs.results(job_id, session, verdict=verdict, method=method, eps=eps, label=label,
                                signatures=signatures, boxes=boxes, offset=0, limit=ALL)
            return page.model_dump(mode="json")["data"]

    def comparison(self, job_id: int, *, differ: bool | None = None, eps: float | None = None,
                   digit: int | None = None, rows: bool = True) -> dict:
        from polycert.api.routers import jobs

        with self._session() as session:
            out = jobs.comparison(job_id, session, differ=differ, eps=eps, digit=digit, offset=0,
                                  limit=ALL if rows else 1).model_dump(mode="json")
        return out if rows else {**out, "limit": 0, "rows": []}

    # -- signatures -----------------------------------------------------------------------------------
    def signatures(self, *, digit: int, network: int | str | None = None, job: int | None = None,
                   eps: float | None = None, method: str | None = None, source: str | None = None,
                   verdict: str | None = None) -> dict:
        from polycert.api.routers import signatures

        with self._session() as session:
            return signatures.aggregated(session, digit, None if network is None else str(network), job, None,
                                         method, eps, source, verdict).model_dump(mode="json")

    def close(self) -> None:
        pass

    def __enter__(self) -> "Local":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
