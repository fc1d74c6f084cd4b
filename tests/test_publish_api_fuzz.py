"""The HTTP publish API fuzzed from its own OpenAPI document (schemathesis, bounded).

Requests valid by the document must be published (200, responses as documented); requests
that break it must be refused with a documented 4xx and a JSON error body, never a 500.
The API runs in uvicorn (tests/apps/publish_api_app.py, mounted at /api beside /live).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from apps.publish_api_app import API_KEY, make_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from support import UvicornThread

EXAMPLES = 60  # per operation and mode: the run stays well under a minute
# What the API documents for a request that breaks its document (schemathesis' default list
# leaves out 413, the answer to a batch over `max_batch`, the document's `maxItems`).
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 404, 405, 413, 415]}}}
)


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    app, _ = make_app()
    server = UvicornThread(app).start()
    yield server
    server.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_requests_generated_from_the_openapi_document(
    server: UvicornThread, mode: GenerationMode
) -> None:
    base = server.http_url + "/api"
    schema = schemathesis.openapi.from_url(base + "/openapi.json", config=CONFIG)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert {op.path for op in operations} == {"/publish", "/publish/batch", "/openapi.json"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # (no input to break)
        fuzz(operation.as_strategy(generation_mode=mode), base, auth)


def fuzz(cases: st.SearchStrategy[Any], base: str, auth: dict[str, str]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def check(case: Any) -> None:
        response = case.call(base_url=base, headers=auth, timeout=10)
        assert response.status_code < 500, (case.body, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == ["application/json"]
            assert "message" in response.json()["error"]
        case.validate_response(response)

    check()
