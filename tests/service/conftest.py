"""The service tests' HTTP client: the app on the module's own ``pool`` (a stand-in engine or the real one)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from polycert.api.app import create_app


@pytest.fixture
def client(settings, pool):
    with TestClient(create_app(settings, dispatcher=pool)) as client:
        client.headers["Authorization"] = f"Bearer {settings.api_token}"
        yield client
