"""Console sessions: server-side rows holding only a hash of the session secret.

The secret lives in one cookie (host-only, HttpOnly, SameSite=Strict, Secure over https).
The CSRF token of a session is derived from that secret (HMAC), so it needs no storage and
dies with the session. Sessions end after `console_idle_seconds` without a request or
`console_max_seconds` after sign-in, whichever comes first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from tether.api.auth import Principal
from tether.store.db import Database
from tether.store.schema.console import console_sessions
from tether.store.schema.identity import admin_tokens, persons
from tether.types import new_id, utcnow

COOKIE = "tether_session"
LOGIN_COOKIE = "tether_login"
#: last_seen_at is written at most this often (seconds), not on every request
TOUCH_EVERY = 30


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_for(secret: str, purpose: str = "csrf") -> str:
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str | None, presented: str | None, purpose: str = "csrf") -> bool:
    if not secret or not presented:
        return False
    return hmac.compare_digest(csrf_for(secret, purpose), presented)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    person_id: str
    role: str
    token_id: str
    secret: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    @property
    def csrf(self) -> str:
        return csrf_for(self.secret)


class Sessions:
    def __init__(self, db: Database, *, idle_seconds: int = 900, max_seconds: int = 28800) -> None:
        self.db = db
        self.idle = timedelta(seconds=idle_seconds)
        self.max = timedelta(seconds=max_seconds)

    def create(self, principal: Principal) -> Session:
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        s = Session(new_id("ses"), principal.person_id, principal.role.value, principal.token_id, secret, now, now,
                    now + self.max)  # fmt: skip
        with self.db.write() as conn:
            conn.execute(
                insert(console_sessions).values(
                    id=s.id,
                    secret_hash=_hash(secret),
                    person_id=s.person_id,
                    role=s.role,
                    token_id=s.token_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=s.expires_at,
                )
            )
        return s

    def lookup(self, secret: str | None) -> Session | None:
        """The live session for a cookie value; None when unknown, ended, idle too long or too old."""
        if not secret or len(secret) > 100:
            return None
        now = utcnow()
        with self.db.read() as conn:
            r = conn.execute(
                select(console_sessions, admin_tokens.c.revoked_at, persons.c.status)
                .join(admin_tokens, admin_tokens.c.id == console_sessions.c.token_id)
                .join(persons, persons.c.id == console_sessions.c.person_id)
                .where(console_sessions.c.secret_hash == _hash(secret))
            ).first()
        # the session dies with its admin token and with its Person
        if r is None or r.revoked_at is not None or r.status != "active":
            return None
        if r.ended_at is not None or now >= r.expires_at or now - r.last_seen_at >= self.idle:
            return None
        if (now - r.last_seen_at).total_seconds() >= TOUCH_EVERY:
            with self.db.write() as conn:
                conn.execute(update(console_sessions).where(console_sessions.c.id == r.id).values(last_seen_at=now))
        return Session(r.id, r.person_id, r.role, r.token_id, secret, r.created_at, now, r.expires_at)

    def end(self, session_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(update(console_sessions).where(console_sessions.c.id == session_id).values(ended_at=utcnow()))

    def end_for_person(self, person_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(console_sessions)
                .where(console_sessions.c.person_id == person_id, console_sessions.c.ended_at.is_(None))
                .values(ended_at=utcnow())
            )


__all__ = ["COOKIE", "LOGIN_COOKIE", "Session", "Sessions", "csrf_for", "csrf_ok"]
