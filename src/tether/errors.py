"""The exception tree. Every error owns its wire shape; the outer layers render it.

    TetherError                       code, status, title (RFC 9457 `type` = ERROR_BASE + code)
    ├── InvalidRequest (400)          malformed input; `field` names the offending input
    │   └── ValidationFailed (422)    a domain rule refused the input (names the field)
    ├── Unauthenticated (401)         no or bad credentials
    ├── Forbidden (403)               authenticated, but not allowed
    │   └── AgentNotActive (403)
    ├── NotFound (404)
    ├── Conflict (409)                duplicate, or a state transition that is not allowed
    ├── PayloadTooLarge (413)
    └── Unavailable (503)             a dependency (store, audit) cannot serve; fail closed

OAuth errors (RFC 6749 §5.2) live in `tether.tokens.errors`; they derive from TetherError
too so one handler can render both.
"""

from __future__ import annotations

from typing import Any, ClassVar

ERROR_BASE = "https://tether.dev/problems/"


class TetherError(Exception):
    code: ClassVar[str] = "tether_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return ERROR_BASE + self.code.replace("_", "-")

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        doc: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.field is not None:
            doc["field"] = self.field
        if instance is not None:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


class InvalidRequest(TetherError):
    code, status, title = "invalid_request", 400, "Invalid request"


class ValidationFailed(InvalidRequest):
    code, status, title = "validation_failed", 422, "Validation failed"


class Unauthenticated(TetherError):
    code, status, title = "unauthenticated", 401, "Authentication required"


class Forbidden(TetherError):
    code, status, title = "forbidden", 403, "Forbidden"


class AgentNotActive(Forbidden):
    code, title = "agent_not_active", "Agent is not active"


class NotFound(TetherError):
    code, status, title = "not_found", 404, "Not found"


class Conflict(TetherError):
    code, status, title = "conflict", 409, "Conflict"


class PayloadTooLarge(TetherError):
    code, status, title = "payload_too_large", 413, "Payload too large"


class Unavailable(TetherError):
    code, status, title = "unavailable", 503, "Service unavailable"


__all__ = [
    "ERROR_BASE",
    "AgentNotActive",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "TetherError",
    "Unauthenticated",
    "Unavailable",
    "ValidationFailed",
]
