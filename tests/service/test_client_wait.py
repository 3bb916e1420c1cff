"""``Client.wait`` rides out a server that is away for a while and says so when it stays away
(the restart itself, against a real server, is tests/integration/test_faults.py)."""

import time

import pytest

from polycert.client import ApiError, Client
from tests.live import free_port


def test_waiting_on_a_server_that_stays_away_ends_with_an_error_that_says_so():
    with Client(f"http://127.0.0.1:{free_port()}", timeout=1) as client:  # nothing listens there
        started = time.monotonic()
        with pytest.raises(ApiError) as raised:
            client.wait(7, timeout=30, poll=0.05, away=0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert raised.value.status_code == 0
    assert "cannot reach" in raised.value.message and "while waiting for job 7" in raised.value.message
