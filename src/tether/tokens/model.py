"""Values of the token service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: token types (RFC 8693 §3) and JWT `typ` headers
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 — type URIs, not secrets
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACCESS_TYP = "at+jwt"  # RFC 9068
DELEGATION_TYP = "tether-delegation+jwt"
MAX_DEPTH = 3
MAX_ASSERTION_SECONDS = 300
MAX_DELEGATION_TOKEN_DAYS = 30


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    digest: str  # SHA-256 hex of the raw token (cache key; never log the token)
    person_id: str  # sub
    agent_id: str  # act.sub — the current actor (principal for policy)
    actors: tuple[str, ...]  # current actor first, then earlier actors of a multi-hop chain
    client_id: str
    audience: str  # exactly one resource: {base}/mcp or {base}/proxy/{upstream}
    scopes: frozenset[str]
    task_id: str
    jti: str
    issued_at: int
    expires_at: int
    constraints: dict[str, Any] | None  # RFC 9396 authorization_details, if any
    claims: Mapping[str, Any]

    @property
    def delegation_id(self) -> str | None:
        d = self.claims.get("dlg")
        return d if isinstance(d, str) else None


def actors_of(act: Any) -> tuple[str, ...]:
    """The nested `act` chain as (current, earlier, …); empty when malformed."""
    out: list[str] = []
    while isinstance(act, dict):
        sub = act.get("sub")
        if not isinstance(sub, str) or len(out) > MAX_DEPTH:
            return ()
        out.append(sub)
        act = act.get("act")
    return tuple(out)


def act_claim(actors: tuple[str, ...]) -> dict[str, Any]:
    """(current, earlier, …) as nested `act`: {sub: current, act: {sub: earlier}}."""
    claim: dict[str, Any] | None = None
    for a in reversed(actors):
        claim = {"sub": a} if claim is None else {"sub": a, "act": claim}
    assert claim is not None
    return claim


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ACCESS_TYP",
    "ASSERTION_TYPE",
    "DELEGATION_TYP",
    "GRANT_TOKEN_EXCHANGE",
    "JWT_TOKEN_TYPE",
    "MAX_ASSERTION_SECONDS",
    "MAX_DELEGATION_TOKEN_DAYS",
    "MAX_DEPTH",
    "VerifiedToken",
    "act_claim",
    "actors_of",
]
