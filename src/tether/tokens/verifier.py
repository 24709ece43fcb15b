"""Offline verification of task tokens: the gateways' hot path.

Cold path: split the compact JWS, pin the algorithm to the key named by `kid` (EdDSA for
Tether's keys; `none`, HS* and anything else are refused before any signature work),
verify the Ed25519 signature with a pre-built key object, then check `typ`, `iss`, exact
`aud`, `exp`/`nbf` with bounded skew and the required claims. The result is cached by the
SHA-256 of the token until `exp`. Every call — cached or not — checks the revocation cache
and refuses when its watermark is stale (fail closed).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature

from tether.tokens.errors import InvalidToken
from tether.tokens.jose import MAX_TOKEN_BYTES, JoseError, VerifyKey, b64d
from tether.tokens.keys import KeyRing
from tether.tokens.model import ACCESS_TYP, MAX_DEPTH, VerifiedToken, actors_of
from tether.tokens.revocation import RevocationState

MAX_LEEWAY = 30
UPSTREAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
CACHE_LIMIT = 100_000


class TokenVerifier:
    def __init__(
        self,
        keyring: KeyRing,
        revocations: RevocationState,
        *,
        issuer: str,
        base_url: str,
        leeway: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY} seconds")
        self.keyring = keyring
        self.revocations = revocations
        self.issuer = issuer
        self.base_url = base_url.rstrip("/")
        self.leeway = leeway
        self.clock = clock
        self._cache: dict[str, VerifiedToken] = {}
        self._headers: dict[str, str] = {}
        self._lock = threading.Lock()

    def resource_url(self, kind: str, upstream: str | None = None) -> str:
        """The audience a gateway requires: `{base}/mcp` or `{base}/proxy/{upstream}`."""
        if kind == "mcp":
            return f"{self.base_url}/mcp"
        if kind == "proxy" and upstream and UPSTREAM_RE.match(upstream):
            return f"{self.base_url}/proxy/{upstream}"
        raise ValueError(f"no resource {kind!r}/{upstream!r}")

    def is_resource(self, url: str) -> bool:
        if url == f"{self.base_url}/mcp":
            return True
        prefix = f"{self.base_url}/proxy/"
        return url.startswith(prefix) and bool(UPSTREAM_RE.match(url[len(prefix) :]))

    # ------------------------------------------------------------ hot path

    def verify(self, token: str, *, audience: str) -> VerifiedToken:
        """The verified token for `audience`, or InvalidToken with the reason."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        vt = self._cache.get(digest)
        if vt is None:
            vt = self._verify_cold(token, digest)
        now = self.clock()
        if now >= vt.expires_at + self.leeway:
            self._cache.pop(digest, None)
            raise InvalidToken("token expired")
        if vt.audience != audience:
            raise InvalidToken("token is for another audience")
        self._check_revoked(vt)
        return vt

    def verify_any_audience(self, token: str) -> VerifiedToken:
        """For introspection and revocation: everything but the audience."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        vt = self._cache.get(digest) or self._verify_cold(token, digest)
        if self.clock() >= vt.expires_at + self.leeway:
            raise InvalidToken("token expired")
        self._check_revoked(vt)
        return vt

    def verify_signature(self, token: str) -> VerifiedToken:
        """Signature, issuer, lifetime and shape only (the exchange checks revocation in the store)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        vt = self._cache.get(digest) or self._verify_cold(token, digest)
        if self.clock() >= vt.expires_at + self.leeway:
            raise InvalidToken("token expired")
        return vt

    def _check_revoked(self, vt: VerifiedToken) -> None:
        state = self.revocations
        if not state.ensure_fresh():
            raise InvalidToken("revocation state is not current; failing closed")
        why = state.why_revoked(
            jti=vt.jti, task_id=vt.task_id, person_id=vt.person_id, actors=vt.actors,
            delegation_id=vt.delegation_id, iat=vt.issued_at,
        )  # fmt: skip
        if why is not None:
            raise InvalidToken(why)

    # ----------------------------------------------------------- cold path

    def _header(self, h64: str) -> str:
        """The kid of an acceptable header; parsed headers are cached (they repeat across tokens)."""
        kid = self._headers.get(h64)
        if kid is not None:
            return kid
        try:
            header = json.loads(b64d(h64))
        except ValueError as exc:
            raise InvalidToken("malformed token: header") from exc
        if not isinstance(header, dict):
            raise InvalidToken("malformed token: header")
        alg = header.get("alg")
        if alg != "EdDSA":  # pinned: Tether signs only with Ed25519
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        if "crit" in header:
            raise InvalidToken("critical header parameters are not supported")
        if header.get("typ") != ACCESS_TYP:
            raise InvalidToken("not an access token")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token has no kid")
        if len(self._headers) < 256:
            self._headers[h64] = kid
        return kid

    def _key(self, kid: str) -> VerifyKey:
        key = self.keyring.verify_keys.get(kid)
        if key is None and self.keyring.reload_for_unknown_kid():
            key = self.keyring.verify_keys.get(kid)
        if key is None:
            raise InvalidToken("unknown kid")
        return key

    def _verify_cold(self, token: str, digest: str) -> VerifiedToken:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("malformed token: too large")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("malformed token: not a compact JWS")
        h64, p64, s64 = parts
        key = self._key(self._header(h64))
        if key.alg != "EdDSA":
            raise InvalidToken("bad signature")
        try:
            sig = b64d(s64)
            key.key.verify(sig, f"{h64}.{p64}".encode("ascii"))  # type: ignore[call-arg]
        except (InvalidSignature, JoseError, ValueError, TypeError) as exc:
            raise InvalidToken("bad signature") from exc
        try:
            c = json.loads(b64d(p64))
        except ValueError as exc:
            raise InvalidToken("malformed token: payload") from exc
        if not isinstance(c, dict):
            raise InvalidToken("malformed token: payload")
        vt = self._build(c, digest)
        with self._lock:
            if len(self._cache) >= CACHE_LIMIT:
                self._sweep()
            self._cache[digest] = vt
        return vt

    def _build(self, c: dict[str, Any], digest: str) -> VerifiedToken:
        now = self.clock()
        if c.get("iss") != self.issuer:
            raise InvalidToken("token from another issuer")
        aud = c.get("aud")
        if type(aud) is list and len(aud) == 1:
            aud = aud[0]
        if type(aud) is not str:
            raise InvalidToken("token must name exactly one audience")
        exp, iat = c.get("exp"), c.get("iat")
        nbf = c.get("nbf", iat)
        if type(exp) is not int or type(iat) is not int or type(nbf) is not int:
            raise InvalidToken("token lacks exp/iat/nbf")
        if now >= exp + self.leeway:
            raise InvalidToken("token expired")
        if nbf > now + self.leeway:
            raise InvalidToken("token not yet valid")
        actors = actors_of(c.get("act"))
        if not actors or len(actors) > MAX_DEPTH:
            raise InvalidToken("token has no valid act chain")
        sub, client_id, task_id, jti, scope = (
            c.get("sub"),
            c.get("client_id"),
            c.get("task_id"),
            c.get("jti"),
            c.get("scope"),
        )
        if not (type(sub) is str and sub and type(client_id) is str and client_id and type(task_id) is str and task_id
                and type(jti) is str and jti and type(scope) is str):  # fmt: skip
            raise InvalidToken("token lacks required claims")
        details = c.get("authorization_details")
        return VerifiedToken(
            digest=digest, person_id=sub, agent_id=actors[0], actors=actors, client_id=client_id,
            audience=aud, scopes=frozenset(scope.split()), task_id=task_id, jti=jti, issued_at=iat, expires_at=exp,
            constraints={"authorization_details": details} if isinstance(details, list) else None, claims=c,
        )  # fmt: skip

    def _sweep(self) -> None:
        now = self.clock()
        self._cache = {d: v for d, v in self._cache.items() if v.expires_at + self.leeway > now}
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()


__all__ = ["MAX_LEEWAY", "TokenVerifier"]
