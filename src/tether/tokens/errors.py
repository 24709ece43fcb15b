"""OAuth errors (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 6750 §3.1) and the verifier's refusal.

TetherError
└── OAuthError                      rendered as {"error", "error_description"} on /oauth
    ├── InvalidClient (401)         client assertion missing, bad, replayed, or agent not active
    ├── InvalidGrant (400)          subject token bad, untrusted, or not usable by this client
    ├── InvalidScope (400)          requested scope outside what may be granted (named in `excess`)
    ├── InvalidTarget (400)         audience/resource is not exactly one known resource
    ├── OAuthInvalidRequest (400)   malformed request
    ├── UnauthorizedClient (400)    the client may not do this (revoke someone else's token)
    └── UnsupportedGrantType (400)
InvalidToken (401, "invalid_token") a presented access token fails verification
"""

from __future__ import annotations

from typing import Any, ClassVar

from tether.errors import TetherError


class OAuthError(TetherError):
    code: ClassVar[str] = "server_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "OAuth error"

    def oauth_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "error_description": self.detail}
        body.update({k: v for k, v in self.extra.items() if k in ("excess",)})
        return body


class InvalidClient(OAuthError):
    code, status, title = "invalid_client", 401, "Client authentication failed"


class InvalidGrant(OAuthError):
    code, status, title = "invalid_grant", 400, "Invalid grant"


class InvalidScope(OAuthError):
    code, status, title = "invalid_scope", 400, "Invalid scope"


class InvalidTarget(OAuthError):
    code, status, title = "invalid_target", 400, "Invalid target"


class OAuthInvalidRequest(OAuthError):
    code, status, title = "invalid_request", 400, "Invalid request"


class UnauthorizedClient(OAuthError):
    code, status, title = "unauthorized_client", 400, "Unauthorized client"


class UnsupportedGrantType(OAuthError):
    code, status, title = "unsupported_grant_type", 400, "Unsupported grant type"


class UnsupportedTokenType(OAuthError):
    code, status, title = "unsupported_token_type", 400, "Unsupported token type"


class InvalidToken(TetherError):
    """A presented token fails verification; `reason` says why (never the token itself)."""

    code, status, title = "invalid_token", 401, "Invalid token"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


__all__ = [
    "InvalidClient",
    "InvalidGrant",
    "InvalidScope",
    "InvalidTarget",
    "InvalidToken",
    "OAuthError",
    "OAuthInvalidRequest",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedTokenType",
]
