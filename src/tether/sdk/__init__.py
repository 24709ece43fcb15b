"""Agent-side client: authenticate as the agent (private_key_jwt) and exchange tokens.

    client = AgentClient("https://tether.example", "agt_….jwk.json")
    grant = client.exchange(person_token, scope="mail:read", resource="https://tether.example/mcp",
                            purpose="summarise my inbox")
    grant["access_token"]   # the task token; send it as `Authorization: Bearer …`

The key file is the private JWK `tether agent keygen` writes (Ed25519; `agent_id` member).
Imports only httpx, cryptography and tether's shared kernel.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tether.errors import TetherError

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 — a type URI
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class ExchangeFailed(TetherError):
    """The token endpoint refused; `error` is the RFC 6749 code."""

    code, status, title = "exchange_failed", 400, "Token exchange failed"

    def __init__(self, error: str, description: str, status: int) -> None:
        super().__init__(f"{error}: {description}", error=error, http_status=status)
        self.error = error


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class AgentClient:
    def __init__(
        self, base_url: str, key_file: str | Path, *, agent_id: str | None = None, issuer: str | None = None,
        timeout: float = 10.0, http: httpx.Client | None = None,
    ) -> None:  # fmt: skip
        jwk: dict[str, Any] = json.loads(Path(key_file).read_text())
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" not in jwk:
            raise ValueError("the key file must hold a private Ed25519 JWK (from `tether agent keygen`)")
        self.base_url = base_url.rstrip("/")
        #: Tether's issuer identifier (its public URL); the audience of client assertions
        self.issuer = (issuer or base_url).rstrip("/")
        self.agent_id: str = agent_id or str(jwk["agent_id"])
        self.kid = str(jwk["kid"])
        self._key = Ed25519PrivateKey.from_private_bytes(_b64d(str(jwk["d"])))
        self._http = http or httpx.Client(timeout=timeout)

    def client_assertion(self, audience: str | None = None, *, lifetime: int = 60) -> str:
        """A fresh RFC 7523 client assertion: iss = sub = agent id, aud = the issuer, unique jti."""
        now = int(time.time())
        header = {"alg": "EdDSA", "kid": self.kid, "typ": "JWT"}
        claims = {
            "iss": self.agent_id, "sub": self.agent_id, "aud": audience or self.issuer,
            "iat": now, "exp": now + min(lifetime, 300), "jti": secrets.token_urlsafe(18),
        }  # fmt: skip
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        return signing_input + "." + _b64(self._key.sign(signing_input.encode()))

    def exchange(
        self, subject_token: str, scope: str | None = None, resource: str | None = None, purpose: str | None = None,
        *, may_act: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Exchange the person's (or a task) token for a task token; returns the RFC 8693 response."""
        form = {
            "grant_type": GRANT,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE if subject_token.count(".") != 2 else JWT_TYPE,
        }
        for name, value in (("scope", scope), ("resource", resource), ("task_purpose", purpose), ("may_act", may_act)):
            if value:
                form[name] = value
        resp = self._http.post(f"{self.base_url}/oauth/token", data=form)
        body: dict[str, Any] = resp.json()
        if resp.status_code != 200:
            raise ExchangeFailed(str(body.get("error")), str(body.get("error_description", "")), resp.status_code)
        return body

    def revoke(self, token: str) -> None:
        form = {
            "token": token, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }  # fmt: skip
        resp = self._http.post(f"{self.base_url}/oauth/revoke", data=form)
        if resp.status_code != 200:
            body = resp.json()
            raise ExchangeFailed(str(body.get("error")), str(body.get("error_description", "")), resp.status_code)

    def close(self) -> None:
        self._http.close()


__all__ = ["AgentClient", "ExchangeFailed"]
