"""The OpenAPI document as the service really answers (PROTOCOL 7): every error is
application/problem+json, and every operation documents the error statuses it can give, so a
client generated from /openapi.json (or a schemathesis run) finds no undocumented answer."""

from __future__ import annotations

from typing import Any

from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from ..domain.models import Problem

PROBLEM_TYPE = "application/problem+json"

# What any operation may answer besides its success (PROTOCOL 7): bad JSON or query 400, no or
# a bad token 401, a forbidden action 403, an unknown resource 404, a body over the limit 413,
# a body that does not match its schema 422, a dependency down 503 (with Retry-After).
ANY_OPERATION = (400, 401, 403, 404, 413, 422, 503)
# Writes can also conflict with the stored state (409), come with a wrong content type (415)
# and be rate-limited (429).
WRITES = (409, 415, 429)


class ProblemDocumentingOpenAPI(OpenAPIProvider):
    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        problem, problem_components = self.build_response_object(Problem, None)
        problem["description"] = "RFC 9457 problem details (PROTOCOL 7)"
        for operations in paths.values():
            for method, operation in operations.items():
                statuses = ANY_OPERATION + (WRITES if method in ("post", "put") else ())
                # a fresh dict per operation: build_paths shares one across methods
                responses = dict(operation["responses"])
                for status in statuses:
                    responses.setdefault(status, problem)
                operation["responses"] = responses
                if "requestBody" in operation:
                    # every documented body is required: without one the answer is a 415
                    operation["requestBody"] = {**operation["requestBody"], "required": True}
        return paths, {**components, **problem_components}

    def build_response_object(
        self, model: Any, headers_model: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        response, components = super().build_response_object(model, headers_model)
        if model is Problem:
            response["content"] = {PROBLEM_TYPE: response["content"]["application/json"]}
        return response, components
