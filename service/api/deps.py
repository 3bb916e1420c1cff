"""Dependencies: settings, a database session per request, the write token, the dispatcher."""

from __future__ import annotations

import secrets
from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from polycert.batches import MAX_ROW
from polycert.settings import Settings

# ids and offsets bounded by what the databases hold: a larger one is a 422, not an overflow inside the driver
JobId = Annotated[int, Path(ge=1, le=MAX_ROW, description="the job's id")]
NetworkId = Annotated[int, Path(ge=1, le=MAX_ROW, description="the network's id")]
Offset = Annotated[int, Query(ge=0, le=MAX_ROW, description="rows to skip")]

_bearer = HTTPBearer(auto_error=False, description="the API token (POLYCERT_API_TOKEN)")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()


def get_dispatcher(request: Request):
    return request.app.state.dispatcher()


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """Write endpoints need ``Authorization: Bearer <token>``; returns who wrote (for ``created_by``)."""
    expected = request.app.state.settings.api_token
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API token is required (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    return request.headers.get("x-polycert-user", "api")[:100]


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
TokenDep = Annotated[str, Depends(require_token)]
DispatcherDep = Annotated[object, Depends(get_dispatcher)]
