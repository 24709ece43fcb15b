"""A small organisation for the token-service tests: people, two agents with keys, delegations,
an external identity provider Tether trusts, and helpers that build client assertions and
subject tokens the way real clients and IdPs do.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tether.api.wiring import Services
from tether.tokens import ExchangeRequest
from tether.tokens.jose import b64e, sign_eddsa
from tether.tokens.model import ASSERTION_TYPE, GRANT_TOKEN_EXCHANGE, JWT_TOKEN_TYPE

IDP_ISSUER = "https://idp.example.com/tenant"
IDP_AUDIENCE = "api://tether"
ACTS = ["mail:read", "mail:send", "files:read"]


@dataclass
class Key:
    kid: str
    private: Ed25519PrivateKey
    public: dict[str, Any]
    private_jwk: dict[str, Any]


def new_key() -> Key:
    priv = Ed25519PrivateKey.generate()
    x = b64e(priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    d = b64e(priv.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    kid = "k-" + secrets.token_hex(4)
    public = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"}
    return Key(kid, priv, public, {**public, "d": d})


IDP_KEY = new_key()


def write_trusted_issuers(directory: Path) -> Path:
    path = directory / "trusted.json"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"issuers": [{
        "issuer": IDP_ISSUER, "audience": IDP_AUDIENCE, "person_claim": "oid", "jwks": {"keys": [IDP_KEY.public]},
    }]}))  # fmt: skip
    return path


@dataclass
class World:
    services: Services
    person: str
    person_subject: str
    other: str
    other_subject: str
    sponsor: str
    agent_a: str
    agent_b: str
    key_a: Key
    key_b: Key
    dlg_a: str
    dlg_b: str

    @property
    def mcp(self) -> str:
        return f"{self.services.settings.base_url}/mcp"


def make_world(services: Services) -> World:
    ident = services.identity
    sponsor = ident.create_person("system", email="sponsor@example.com", name="Sam", entitlements=ACTS,
                                  subject="sponsor")  # fmt: skip
    person = ident.create_person("system", email="pat@example.com", name="Pat", entitlements=ACTS,
                                 issuer=IDP_ISSUER, subject="oid-pat")  # fmt: skip
    other = ident.create_person("system", email="quinn@example.com", name="Quinn", entitlements=ACTS,
                                issuer=IDP_ISSUER, subject="oid-quinn")  # fmt: skip
    key_a, key_b = new_key(), new_key()
    a = ident.create_agent("system", name="Mail helper", sponsor_id=sponsor.id, owner_team="platform",
                           purpose="mail", ceiling=ACTS, jwks={"keys": [key_a.public]})  # fmt: skip
    b = ident.create_agent("system", name="Summariser", sponsor_id=sponsor.id, owner_team="platform",
                           purpose="summaries", ceiling=["mail:read", "files:read"],
                           jwks={"keys": [key_b.public]})  # fmt: skip
    da = ident.delegate("system", person_id=person.id, agent_id=a.id, actions=["mail:read", "mail:send"])
    db = ident.delegate("system", person_id=person.id, agent_id=b.id, actions=["mail:read", "files:read"])
    return World(services, person.id, "oid-pat", other.id, "oid-quinn", sponsor.id, a.id, b.id, key_a, key_b,
                 da.id, db.id)  # fmt: skip


def assertion(agent_id: str, key: Key, audience: str, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": agent_id, "sub": agent_id, "aud": audience, "iat": now, "exp": now + 60,
                              "jti": secrets.token_hex(8)}  # fmt: skip
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return sign_eddsa(key.private, key.kid, claims, "JWT")


def idp_token(subject: str, *, key: Key = IDP_KEY, iss: str = IDP_ISSUER, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": iss, "sub": "pairwise-" + subject, "oid": subject, "aud": IDP_AUDIENCE,
                              "iat": now, "exp": now + 600}  # fmt: skip
    claims.update(overrides)
    return sign_eddsa(key.private, key.kid, claims, "JWT")


def request(
    w: World, subject_token: str, *, agent: str = "a", scope: str | None = "mail:read", resource: str | None = None,
    client_assertion: str | None = None, **kw: Any,
) -> ExchangeRequest:  # fmt: skip
    agent_id, key = (w.agent_a, w.key_a) if agent == "a" else (w.agent_b, w.key_b)
    ca = client_assertion or assertion(agent_id, key, w.services.settings.issuer)
    return ExchangeRequest(
        grant_type=GRANT_TOKEN_EXCHANGE, client_assertion_type=ASSERTION_TYPE, client_assertion=ca,
        subject_token=subject_token, subject_token_type=JWT_TOKEN_TYPE, scope=scope,
        resources=(resource or w.mcp,), **kw,
    )  # fmt: skip


def events_of(services: Services, kind: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from tether.store.schema.audit import audit_events

    with services.db.read() as conn:
        rows = conn.execute(
            select(audit_events.c.body).where(audit_events.c.type == kind).order_by(audit_events.c.seq)
        ).all()
    return [json.loads(r.body) for r in rows]
