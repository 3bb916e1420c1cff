"""``/docs`` (Swagger UI) and ``/redoc`` served with their scripts, styles and icon from this installation.

FastAPI's own pages load them from a CDN (and ReDoc its fonts from Google), so they are blank offline; the
assets come from the ``fastapi-offline`` package's ``static`` folder, mounted under :data:`STATIC_URL`.
No page asks another host for anything: Swagger UI's online validator badge is switched off too.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs-assets"


def assets_folder() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def install(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the two pages and their assets to ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    app.mount(STATIC_URL, StaticFiles(directory=assets_folder()), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    def url(request: Request, path: str) -> str:
        return f"{request.scope.get('root_path', '')}{path}"

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=url(request, app.openapi_url), title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=url(request, redirect_url),
            swagger_js_url=url(request, f"{STATIC_URL}/swagger-ui-bundle.js"),
            swagger_css_url=url(request, f"{STATIC_URL}/swagger-ui.css"),
            swagger_favicon_url=url(request, f"{STATIC_URL}/favicon.png"),
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None})

    @app.get(redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=url(request, app.openapi_url), title=f"{app.title} - ReDoc",
                              redoc_js_url=url(request, f"{STATIC_URL}/redoc.standalone.js"),
                              redoc_favicon_url=url(request, f"{STATIC_URL}/favicon.png"), with_google_fonts=False)
