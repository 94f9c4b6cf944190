"""The OpenAPI document (issue 14, item 7): a valid OpenAPI 3.1 document, and schemathesis run
against the app finds no server error and no status, body or header the document does not
describe. Deterministic (derandomized) and bounded in examples."""

from __future__ import annotations

import threading
import time

import pytest
import schemathesis
from _server_fakes import FakeSearcher, _jpeg
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tiefjax.catalog import init_workspace
from tiefjax.server import ServerConfig, create_app
from tiefjax.server.listen import make_server
from tiefjax.server.openapi import openapi_schema
from tiefjax.store import Store
from tiefjax.workspace import Workspace

TOKEN = "openapi-token"
#: Examples per operation and generation mode (17 operations, 2 modes).
EXAMPLES = 30


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_schema()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the OpenAPI 3.1 meta-schema


def test_the_validator_refuses_3_1_constructs_declared_as_3_0() -> None:
    """The check above has teeth: the old document declared 3.0.3 but used ``{"type":
    "null"}``, which only 3.1 allows; so does this one, and the validator says so."""
    with pytest.raises(OpenAPIValidationError):
        validate({**openapi_schema(), "openapi": "3.0.3"})


#: Beyond 2xx and the statuses for ids and tokens that do not exist, a schema-valid request may
#: break a rule no JSON Schema can state; the document lists these as 415 (the bytes are not a
#: photo) and 422 (a box outside its image, three equal triplet ids).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "415", "422"]
"""
#: Operations without any input (parameter, body or token): nothing to make invalid.
NO_INPUT = {"GET /api/health", "GET /api/stats"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    """A live server on a loopback port over a small catalog with a box and a triplet, and a
    stand-in index; the document as schemathesis loads it from there."""
    root = tmp_path_factory.mktemp("openapi")
    (root / "images").mkdir()
    for i in range(4):
        (root / "images" / f"img{i}.jpg").write_bytes(_jpeg(48, 40, seed=i))
    init_workspace(root / "ws", root / "images")
    ws = Workspace(root / "ws")
    with Store(ws.store_path) as store:
        store.put_box("img0", (1, 2, 30, 20))
        store.add_triplet("img0", "img1", "img2")
        ids = store.image_ids()
    config = ServerConfig.tiny()
    app = create_app(ws, token=TOKEN, config=config, searcher=FakeSearcher(ids))
    urls: list[str] = []
    server = make_server(app, "127.0.0.1", 0, config, urls.append)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not urls:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield schemathesis.openapi.from_url(
        urls[0] + "api/openapi.json", config=SchemathesisConfig.from_str(CONFIG)
    )
    server.should_exit = True
    thread.join(10)


def _excluded(label: str) -> list:
    """POST /api/search needs a file part (with a file name) holding a photo, which a schema
    cannot ask for: schemathesis sends a text field, rightly refused with a 400."""
    return [positive_data_acceptance] if label == "POST /api/search" else []


def _fuzz(operation, mode: GenerationMode, failures: dict[str, str]) -> int:
    """Run the checks on ``EXAMPLES`` derandomized cases of one operation; the first failure
    goes into ``failures`` under the operation's label. Returns how many cases ran."""
    label, calls = operation.label, []

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        calls.append(1)
        try:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=_excluded(label)
            )
        except (Exception, BaseExceptionGroup) as err:  # reported together by the caller
            failures.setdefault(label, f"{err}")

    check()
    return len(calls)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_app_answers_as_documented(api_schema, mode: GenerationMode) -> None:
    """schemathesis's default checks on every operation: no server error, documented statuses,
    bodies, content types and headers; data the document calls invalid is rejected, data it
    calls valid is accepted."""
    failures: dict[str, str] = {}
    nothing_to_negate: set[str] = set()
    calls = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        try:
            calls += _fuzz(operation, mode, failures)
        except Unsatisfiable:
            nothing_to_negate.add(operation.label)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert calls > 200
    assert nothing_to_negate == (NO_INPUT if mode is GenerationMode.NEGATIVE else set())
