"""Checks an API answer against the OpenAPI document the API publishes about itself.

The document is fetched from /api/v1/openapi.json; an answer's JSON must match the schema
the document gives for its path, method and status (JSON Schema 2020-12, which OpenAPI 3.1
uses), and a status the document does not list for the operation fails the check.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from referencing import Registry, Resource

from experiments.api.endpoints import api


def openapi_document() -> dict[str, Any]:
    """The document as served (through JSON, as a client reads it)."""
    return json.loads(json.dumps(api.get_openapi_schema(path_prefix="/api/v1/"), default=str))


def _operation(document: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    for template, operations in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return template, operations[method.lower()]
    raise AssertionError(f"the OpenAPI document has no {method} {path}")


def assert_documented(document: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """`body` (the parsed JSON answer) is what the document says {method path} answers with `status`."""
    template, operation = _operation(document, method, path.split("?")[0])
    responses = {str(code): answer for code, answer in operation["responses"].items()}
    assert str(status) in responses, f"{method} {template} answered {status}, not in {sorted(responses)}"
    content = responses[str(status)].get("content", {})
    media = content.get("application/json") or next(iter(content.values()), None)
    if media is None:
        return
    registry = Registry().with_resource("urn:openapi", Resource.opaque(document))
    schema = _rebase_refs(media["schema"])
    jsonschema.Draft202012Validator(schema, registry=registry).validate(body)


def _rebase_refs(value: Any) -> Any:
    """Point the document's local references (#/components/...) at the registered document."""
    if isinstance(value, dict):
        rebased = {key: _rebase_refs(item) for key, item in value.items()}
        if isinstance(rebased.get("$ref"), str) and rebased["$ref"].startswith("#"):
            rebased["$ref"] = "urn:openapi" + rebased["$ref"]
        return rebased
    if isinstance(value, list):
        return [_rebase_refs(item) for item in value]
    return value
