"""FastAPI app factory. The app refuses to start on a database that is not at the latest migration."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from formulations.errors import PolyCertError, SolverNotAvailableError
from service.db.migrate import ensure_migrated
from service.db.session import get_engine, session_factory
from service.dispatch import get_dispatcher
from service.errors import ConflictError, NotFoundError, QueueUnavailableError
from service.settings import Settings, get_settings

from .routers import jobs, networks, signatures


def _error(code: int):
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=code, content={"detail": str(exc)})

    return handler


def create_app(settings: Settings | None = None, *, dispatcher=None) -> FastAPI:
    """Build the app; raises :class:`~service.db.migrate.DatabaseNotMigratedError` on an unmigrated database."""
    settings = settings or get_settings()
    engine = get_engine(settings.resolved_database_url)
    ensure_migrated(engine)

    app = FastAPI(title="PolyCert", version="0.1.0",
                  description="Exact verification of feed-forward networks: batches of robustness queries, "
                              "certificates, signatures, LP-versus-MIP comparison.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.dispatcher = (lambda: dispatcher) if dispatcher is not None else (lambda: get_dispatcher(settings))

    app.add_exception_handler(NotFoundError, _error(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(QueueUnavailableError, _error(status.HTTP_503_SERVICE_UNAVAILABLE))
    app.add_exception_handler(ConflictError, _error(status.HTTP_409_CONFLICT))
    app.add_exception_handler(SolverNotAvailableError, _error(status.HTTP_422_UNPROCESSABLE_CONTENT))
    app.add_exception_handler(PolyCertError, _error(status.HTTP_422_UNPROCESSABLE_CONTENT))

    @app.get("/health", tags=["health"])
    def health() -> dict:
        return {"status": "ok", "embedded": settings.embedded}

    for router in (networks.router, jobs.router, signatures.router):
        app.include_router(router)
    return app
