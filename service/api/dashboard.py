"""The dashboard (issue 18): ``GET /`` is its page, ``/dashboard/...`` its script and style, all files of
this installation (``service/dashboard/``, package data of ``polycert``), so it works offline. The page
reads the same read-only routes as any client (no token) and computes nothing the API does not serve."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/dashboard"


def folder() -> Path:
    return Path(str(resources.files("polycert").joinpath("dashboard")))


def install(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=folder()), name="dashboard")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(folder() / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
