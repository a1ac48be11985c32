"""/openapi.json describes every public answer: each operation's success code has a schema
(or is declared bodiless), JSON answers name their model, and errors are `ErrorDetail`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from tests.support.gateway import make_settings

METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


@pytest.fixture
def spec(data_dir: Path) -> dict[str, Any]:
    app = create_app(make_settings(data_dir))
    doc: dict[str, Any] = app.openapi()
    return doc


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items()
            for method, op in ops.items() if method in METHODS]


PARTIAL_CONTENT = {("get", "/download/{job_id}")}
"""Operations that may also answer 206 (a range of a stored zip) beside their one success."""


def success(op: dict[str, Any], partial: bool = False) -> tuple[str, dict[str, Any]]:
    codes = [c for c in op["responses"] if c.startswith("2")]
    assert codes[:1] != ["206"] and len([c for c in codes if c != "206"]) == 1, (
        f"one success code expected, got {codes}")
    assert ("206" in codes) == partial, f"206 where no range is served: {codes}"
    return codes[0], op["responses"][codes[0]]


def test_every_operation_has_a_schema_for_its_success_code(spec: dict[str, Any]) -> None:
    ops = operations(spec)
    assert {(m, p) for m, p, _ in ops} >= {
        ("post", "/upload"), ("post", "/jobs"), ("get", "/jobs"), ("get", "/status/{job_id}"),
        ("get", "/jobs/{job_id}/tasks"), ("delete", "/jobs/{job_id}"), ("get", "/models"),
        ("get", "/health"), ("get", "/download/{job_id}"), ("post", "/files/"),
    }
    for method, path, op in ops:
        code, answer = success(op, (method, path) in PARTIAL_CONTENT)
        if code == "200" and "206" in op["responses"]:
            assert op["responses"]["206"]["content"]["application/zip"]["schema"]
        content = answer.get("content")
        if not content:
            # A bodiless answer must say so: 204, a HEAD, or a creation told by `Location`.
            assert code == "204" or method == "head" or "Location" in answer.get("headers", {}), (
                f"{method.upper()} {path}: {code} has neither a body schema nor a reason for none")
            continue
        for media, body in content.items():
            assert body.get("schema"), f"{method.upper()} {path}: {code} {media} has no schema"


@pytest.mark.parametrize(("method", "path", "model"), [
    ("post", "/upload", "JobLinks"),
    ("post", "/jobs", "JobLinks"),
    ("get", "/jobs", "JobList"),
    ("get", "/status/{job_id}", "JobStatus"),
    ("get", "/jobs/{job_id}/tasks", "TaskPage"),
    ("delete", "/jobs/{job_id}", "JobSummary"),
    ("get", "/models", "ModelList"),
    ("get", "/health", "Health"),
    ("get", "/api-info", "ApiInfo"),
    ("get", "/info", "GatewayInfo"),
    ("get", "/jobs/{job_id}/gallery", "GalleryPage"),
])
def test_json_answers_name_their_model(spec: dict[str, Any], method: str, path: str,
                                       model: str) -> None:
    _, answer = success(spec["paths"][path][method])
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] == model
    schema = spec["components"]["schemas"][model]
    # The gateway always sends every field, so the output schema requires them all.
    assert set(schema["required"]) == set(schema["properties"])


OPEN = {"/health", "/api-info"}
"""Open without the key: liveness, and the page's constants (they hold no data)."""


def test_errors_are_error_details(spec: dict[str, Any]) -> None:
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert detail["required"] == ["detail"]
    assert detail["properties"]["detail"]["type"] == "string"
    for method, path, op in operations(spec):
        if path not in OPEN:
            assert "401" in op["responses"], f"{method.upper()} {path} does not declare 401"
        for code, answer in op["responses"].items():
            if (code.startswith("4") and code != "422") or code.startswith("5"):
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorDetail"), f"{method.upper()} {path} {code}: {ref}"
    status = spec["paths"]["/status/{job_id}"]["get"]["responses"]
    assert "404" in status
