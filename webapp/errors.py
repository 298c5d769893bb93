"""Domain errors. Each kind has a stable code and the HTTP status of ../docs/api.md.

Services raise these; the API turns them into ``{"error": {...}}`` bodies and the dashboard into a
message next to the field named by ``field``.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "validation_error"
    status = 422

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details: dict[str, Any] = dict(details)
        if field is not None:
            self.details.setdefault("field", field)

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationError(DomainError):
    code = "validation_error"
    status = 422


class InvalidAmount(DomainError):
    code = "invalid_amount"
    status = 422


class FeatureNotRecordable(DomainError):
    code = "feature_not_recordable"
    status = 422


class InsufficientCredits(DomainError):
    code = "insufficient_credits"
    status = 402


class NotEntitled(DomainError):
    code = "not_entitled"
    status = 403


class LimitExceeded(DomainError):
    code = "limit_exceeded"
    status = 403


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class CustomerNotFound(DomainError):
    code = "customer_not_found"
    status = 404


class FeatureNotFound(DomainError):
    code = "feature_not_found"
    status = 404


class NotFound(DomainError):
    code = "not_found"
    status = 404


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"
    status = 409


class Conflict(DomainError):
    code = "conflict"
    status = 409


class Unauthorized(DomainError):
    code = "unauthorized"
    status = 401


class ServiceUnavailable(DomainError):
    code = "service_unavailable"
    status = 503


ERROR_CLASSES: dict[str, type[DomainError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        InvalidAmount,
        FeatureNotRecordable,
        InsufficientCredits,
        NotEntitled,
        LimitExceeded,
        Forbidden,
        CustomerNotFound,
        FeatureNotFound,
        NotFound,
        IdempotencyConflict,
        Conflict,
        Unauthorized,
        ServiceUnavailable,
    )
}


# Stable codes for errors raised by the HTTP layer itself (werkzeug's HTTPException), not a service.
HTTP_ERROR_CODES: dict[int, str] = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "malformed_json",
    429: "rate_limited",
    501: "not_implemented",
}
