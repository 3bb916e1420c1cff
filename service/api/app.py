"""FastAPI app factory. The app refuses to start on a database that is not at the latest migration."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from polycert.formulations.errors import PolyCertError
from polycert.db.migrate import ensure_migrated
from polycert.db.session import get_engine, session_factory
from polycert.dispatch import get_dispatcher
from polycert.errors import ConflictError, NotFoundError, QueueUnavailableError
from polycert.settings import Settings, get_settings
from polycert.version import polycert_version
from polycert.uploads import UploadTooLargeError

from . import dashboard, docs
from .routers import datasets, jobs, networks, signatures
from .schemas import ERROR_RESPONSES


# the service's exceptions and the status each is answered with, most specific first (an upload over a limit is
# an InvalidInputError, a PolyCertError, too); the in-process client (polycert.local) maps them the same way
ERROR_STATUSES: tuple[tuple[type[Exception], int], ...] = (
    (UploadTooLargeError, status.HTTP_413_CONTENT_TOO_LARGE),
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConflictError, status.HTTP_409_CONFLICT),
    (QueueUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (PolyCertError, status.HTTP_422_UNPROCESSABLE_CONTENT),  # SolverNotAvailableError among them
)


def error_status(exc: Exception) -> int | None:
    """The status :data:`ERROR_STATUSES` gives ``exc``, or None for an exception the service does not map."""
    return next((code for error, code in ERROR_STATUSES if isinstance(exc, error)), None)


def _error(code: int):
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=code, content={"detail": str(exc)})

    return handler


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as its name (``"nan"``, ``"inf"``, ``"-inf"``): JSON has no
    such numbers, and a 422 that echoes ``eps: NaN`` back must still be JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body (``{"detail": [errors]}``), made JSON-safe whatever the input held."""
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                        content={"detail": json_safe(jsonable_encoder(exc.errors()))})


# the multipart envelope around an uploaded file (boundaries, the form's other fields)
FORM_OVERHEAD = 64 * 1024


def create_app(settings: Settings | None = None, *, dispatcher=None) -> FastAPI:
    """Build the app; raises :class:`~service.db.migrate.DatabaseNotMigratedError` on an unmigrated database."""
    settings = settings or get_settings()
    engine = get_engine(settings.resolved_database_url)
    ensure_migrated(engine)

    app = FastAPI(title="PolyCert", version=polycert_version(),
                  description="Exact verification of feed-forward networks: batches of robustness queries, "
                              "certificates, signatures, LP-versus-MIP comparison.",
                  docs_url=None, redoc_url=None,  # docs.install: the same pages, with assets served from here
                  responses=ERROR_RESPONSES)  # every error body is documented (4xx and 503)
    docs.install(app)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.dispatcher = (lambda: dispatcher) if dispatcher is not None else (lambda: get_dispatcher(settings))

    app.add_exception_handler(RequestValidationError, validation_error)
    for error, code in ERROR_STATUSES:
        app.add_exception_handler(error, _error(code))

    @app.middleware("http")
    async def refuse_large_uploads(request: Request, call_next):
        """An upload whose declared length is over the limit is refused before its body is read (the route
        checks the bytes it reads too: a chunked upload declares no length)."""
        if request.method == "POST" and request.url.path.endswith("/networks/upload"):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > settings.upload_max_bytes + FORM_OVERHEAD:
                return JSONResponse(status_code=status.HTTP_413_CONTENT_TOO_LARGE, content={
                    "detail": f"the upload is over {settings.upload_max_bytes} bytes (limit POLYCERT_UPLOAD_MAX_BYTES)"})
        return await call_next(request)

    @app.get("/health", tags=["health"])
    def health() -> dict:
        return {"status": "ok", "embedded": settings.embedded}

    for router in (networks.router, jobs.router, signatures.router, datasets.router):
        app.include_router(router)
    dashboard.install(app)  # GET / and /dashboard/...: the browser's view of the same routes
    return app
