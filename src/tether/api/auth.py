"""Admin tokens: bearer credentials bound to a Person and one role; only their hash is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from tether.errors import Forbidden, Unauthenticated, ValidationFailed
from tether.identity.model import Role
from tether.store.db import Database
from tether.store.schema.identity import admin_tokens, persons
from tether.types import new_id, utcnow

TOKEN_PREFIX = "tth_"  # noqa: S105 — a prefix that marks admin tokens, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling the admin API: always a Person, with one role."""

    person_id: str
    role: Role
    token_id: str

    def require(self, *roles: Role) -> None:
        if self.role is Role.ADMIN or self.role in roles:
            return
        allowed = ", ".join(r.value for r in (Role.ADMIN, *roles))
        raise Forbidden(
            f"this needs one of the roles: {allowed}", required_roles=[Role.ADMIN.value, *[r.value for r in roles]]
        )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminTokens:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, Principal] = {}
        self._lock = threading.Lock()

    def issue(self, person_id: str, role: Role | str, label: str = "") -> str:
        role = Role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as conn:
            person = conn.execute(select(persons.c.status).where(persons.c.id == person_id)).first()
            if person is None or person.status != "active":
                raise ValidationFailed(f"no active person {person_id}", field="person_id")
            conn.execute(
                insert(admin_tokens).values(
                    id=new_id("tok"),
                    token_hash=_hash(token),
                    person_id=person_id,
                    role=role.value,
                    label=label or role.value,
                    created_at=utcnow(),
                )
            )
        return token

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated("an admin token is required (Authorization: Bearer …)")
        digest = _hash(token)
        # No cache: a deprovisioning or revocation made by another process (the CLI while the
        # server runs) must take effect on the next request. One indexed read per admin call.
        with self.db.read() as conn:
            row = conn.execute(
                select(
                    admin_tokens.c.id,
                    admin_tokens.c.person_id,
                    admin_tokens.c.role,
                    admin_tokens.c.revoked_at,
                    persons.c.status,
                )
                .join(persons, persons.c.id == admin_tokens.c.person_id)
                .where(admin_tokens.c.token_hash == digest)
            ).first()
        if row is None or row.revoked_at is not None or row.status != "active":
            raise Unauthenticated("the admin token is not valid")
        # compare_digest keeps the check constant-time even though the lookup is by hash.
        if not hmac.compare_digest(digest, _hash(token)):
            raise Unauthenticated("the admin token is not valid")
        return Principal(row.person_id, Role(row.role), row.id)

    def forget(self, person_id: str | None = None) -> None:
        """Drop cached principals (after a revocation or a deprovisioning)."""
        with self._lock:
            if person_id is None:
                self._cache.clear()
            else:
                self._cache = {k: v for k, v in self._cache.items() if v.person_id != person_id}

    def revoke_for_person(self, person_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(admin_tokens)
                .where(admin_tokens.c.person_id == person_id, admin_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self.forget(person_id)


__all__ = ["TOKEN_PREFIX", "AdminTokens", "Principal"]
