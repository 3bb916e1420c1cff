"""Property-based run of the real server against its own OpenAPI schema (schemathesis, issue 17).

For every operation the schema declares, schemathesis generates requests, valid by the schema (positive) and
invalid on purpose (negative), and sends them to a live ``polycert serve``. Each response must not be a 5xx,
must match the schema declared for its status code and content type, and a negative case must not be
accepted as if it were valid. The test prints how many cases it sent.

The server holds a registered network and a finished job, so that path parameters drawn near 1 hit real
rows as well as 404s; its queries' deadline is short, so the random jobs it accepts end quickly.
"""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from tests.live import live_server

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 20}
# submitting a job starts real work: fewer of them
FEWER = {("POST", "/jobs"): 5}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("openapi"), POLYCERT_QUERY_TIME_LIMIT="1",
                     POLYCERT_UPLOAD_MAX_BYTES=str(2**20)) as srv:
        with srv.client() as c:
            assert c.post("/networks", json={"builtin": "polycert-tiny"}).status_code == 201
            response = c.post("/jobs", json={"network": "polycert-tiny", "dataset": {"name": "mnist7-area", "stop": 3},
                                             "eps": [0.02], "methods": ["lp"]})
            assert response.status_code == 202, response.text
        srv.wait_job(response.json()["id"])
        yield srv


def _operations(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    ops = []
    for result in schema.get_all_operations():
        ops.append(result.ok())
    return ops


def test_every_operation_keeps_its_schema(server):
    operations = _operations(server)
    assert len(operations) >= 12, [f"{op.method} {op.path}" for op in operations]
    headers = {"Authorization": f"Bearer {server.token}"}
    sent: collections.Counter = collections.Counter()
    failures: list[str] = []

    for op in operations:
        key = (op.method.upper(), op.path)
        for mode, examples in EXAMPLES.items():
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            @settings(max_examples=FEWER.get(key, examples), deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                sent[key] += 1
                case.call_and_validate(base_url=server.url, headers=headers, checks=checks, timeout=60)

            try:
                run()
            except Unsatisfiable:  # nothing to negate (an operation without parameters or body)
                assert mode is GenerationMode.NEGATIVE, key
            except FailureGroup as exc:
                failures.append(f"{key[0]} {key[1]} ({mode.value}): {exc}")
            except AssertionError as exc:
                failures.append(f"{key[0]} {key[1]} ({mode.value}): {exc}")

    total = sum(sent.values())
    print(f"\nschemathesis: {total} cases over {len(operations)} operations "
          f"({', '.join(f'{m} {p}: {n}' for (m, p), n in sorted(sent.items()))})")
    assert not failures, "\n\n".join(failures) + f"\n\nserver log:\n{server.tail()}"
    assert total >= 10 * len(operations)

    with server.client() as c:  # the server is still well after all of it
        assert c.get("/health").json()["status"] == "ok"
