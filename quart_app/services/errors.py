"""Failures a use case reports; the web layer turns each into its PROTOCOL.md status."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    title = "Bad Request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status = 404
    title = "Not Found"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"


class Invalid(ServiceError):
    status = 422
    title = "Unprocessable Content"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"


class Unavailable(ServiceError):
    status = 503
    title = "Service Unavailable"
