"""The token service (architecture §4): task-scoped delegated tokens by OAuth 2.0 Token Exchange.

Public surface: `TokenService` (exchange, delegation tokens, revocation, introspection,
tasks), `TokenVerifier` (the gateways' offline verification), `VerifiedToken`, the key ring
and the revocation watcher that keep every process current (also of the MCP sessions ended,
`EndedSessions`).
"""

from tether.tokens.errors import InvalidToken, OAuthError
from tether.tokens.keys import KeyRing
from tether.tokens.model import VerifiedToken
from tether.tokens.ports import TaskRow
from tether.tokens.revocation import EndedSessions, RevocationState, RevocationWatcher
from tether.tokens.service import ExchangeRequest, TokenService
from tether.tokens.trusted import TrustedIssuer, load_trusted_issuers
from tether.tokens.verifier import TokenVerifier

__all__ = [
    "EndedSessions",
    "ExchangeRequest",
    "InvalidToken",
    "KeyRing",
    "OAuthError",
    "RevocationState",
    "RevocationWatcher",
    "TaskRow",
    "TokenService",
    "TokenVerifier",
    "TrustedIssuer",
    "VerifiedToken",
    "load_trusted_issuers",
]
