"""Domain errors: the one table of error codes. Each kind carries its stable code, its HTTP status
and a line for the contract; the JSON error handlers, the Metrifox door, the OpenAPI document and
the table in docs/api.md are all made from (or checked against) ``ERRORS`` below.

Services raise these; the API turns them into ``{"error": {...}}`` bodies and the dashboard into a
message next to the field named by ``field``.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "validation_error"
    status = 422
    meaning = ""  # what the code means, for the contract (docs/api.md and the OpenAPI document)

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details: dict[str, Any] = dict(details)
        if field is not None:
            self.details.setdefault("field", field)

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class MalformedJson(DomainError):
    code, status = "malformed_json", 400


class Unauthorized(DomainError):
    code, status = "unauthorized", 401


class InsufficientCredits(DomainError):
    code, status = "insufficient_credits", 402


class NotEntitled(DomainError):
    code, status = "not_entitled", 403


class LimitExceeded(DomainError):
    code, status = "limit_exceeded", 403


class Forbidden(DomainError):
    code, status = "forbidden", 403


class CustomerNotFound(DomainError):
    code, status = "customer_not_found", 404


class FeatureNotFound(DomainError):
    code, status = "feature_not_found", 404


class NotFound(DomainError):
    code, status = "not_found", 404


class MethodNotAllowed(DomainError):
    code, status = "method_not_allowed", 405


class IdempotencyConflict(DomainError):
    code, status = "idempotency_conflict", 409


class Conflict(DomainError):
    code, status = "conflict", 409
    meaning = "creating what already exists"


class PlanChangeBlocked(DomainError):
    code, status = "plan_change_blocked", 409
    meaning = "a plan edit or change blocked by usage: `details.blocked` lists what to reclaim"


class PayloadTooLarge(DomainError):
    code, status = "payload_too_large", 413


class ValidationError(DomainError):
    code, status = "validation_error", 422


class InvalidAmount(DomainError):
    code, status = "invalid_amount", 422


class FeatureNotRecordable(DomainError):
    code, status = "feature_not_recordable", 422


class NothingToVoid(DomainError):
    code, status = "nothing_to_void", 422
    meaning = "the grant has no credits left to void (depleted, expired or already voided)"


class RateLimited(DomainError):
    code, status = "rate_limited", 429
    meaning = "with `Retry-After`"


class NotImplementedByServer(DomainError):
    code, status = "not_implemented", 501
    meaning = "the Metrifox door only: what this server does not do"


class ServiceUnavailable(DomainError):
    code, status = "service_unavailable", 503
    meaning = "database down or busy; with `Retry-After`"


# The table, in the order of docs/api.md.
ERRORS: tuple[type[DomainError], ...] = (
    MalformedJson,
    Unauthorized,
    InsufficientCredits,
    NotEntitled,
    LimitExceeded,
    Forbidden,
    CustomerNotFound,
    FeatureNotFound,
    NotFound,
    MethodNotAllowed,
    IdempotencyConflict,
    Conflict,
    PlanChangeBlocked,
    PayloadTooLarge,
    ValidationError,
    InvalidAmount,
    FeatureNotRecordable,
    NothingToVoid,
    RateLimited,
    NotImplementedByServer,
    ServiceUnavailable,
)
ERROR_CLASSES: dict[str, type[DomainError]] = {cls.code: cls for cls in ERRORS}

# The kind of an error raised by the HTTP layer itself (werkzeug's HTTPException), by status.
HTTP_ERRORS: dict[int, type[DomainError]] = {
    cls.status: cls
    for cls in (
        MalformedJson,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        ValidationError,
        RateLimited,
        NotImplementedByServer,
        ServiceUnavailable,
    )
} | {415: MalformedJson}


def from_http(status: int, message: str) -> DomainError:
    """A werkzeug HTTP error (404, 405, 413, ...) as the DomainError of the same status."""
    error = HTTP_ERRORS.get(status, DomainError)(message)
    error.status = status  # 415 is a malformed_json of its own status
    if status not in HTTP_ERRORS:
        error.code = "http_error"
    return error
