"""The token service's storage over SQLAlchemy Core (implements tether.tokens.ports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tether.audit import chain
from tether.audit.model import Event, Record
from tether.store.db import Database, RepoStore
from tether.store.schema.identity import revocations, tasks
from tether.store.schema.tokens import assertion_jtis, signing_keys
from tether.tokens.ports import KeyRow, RevocationRow, TaskRow

#: revocation kinds that apply only to tokens issued at or before the revocation
TIMED_KINDS = ("person", "agent", "delegation")


def _task(r: Any) -> TaskRow:
    return TaskRow(
        id=r.id, agent_id=r.agent_id, person_id=r.person_id, delegation_id=r.delegation_id, purpose=r.purpose,
        scopes=tuple(r.scopes), audience=r.audience, actors=tuple(r.actors), constraints=r.constraints,
        status=r.status, started_at=r.started_at, expires_at=r.expires_at, ended_at=r.ended_at,
        end_reason=r.end_reason,
    )  # fmt: skip


def _key(r: Any) -> KeyRow:
    return KeyRow(r.kid, r.alg, dict(r.public_jwk), bytes(r.private_sealed), r.created_at, r.retired_at,
                  r.publish_until)  # fmt: skip


class SqlTokenRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # keys
    def keys(self) -> list[KeyRow]:
        return [_key(r) for r in self.conn.execute(select(signing_keys).order_by(signing_keys.c.created_at))]

    def insert_key(self, row: KeyRow) -> None:
        self.conn.execute(
            insert(signing_keys).values(
                kid=row.kid,
                alg=row.alg,
                public_jwk=row.public_jwk,
                private_sealed=row.private_sealed,
                created_at=row.created_at,
                retired_at=row.retired_at,
                publish_until=row.publish_until,
            )
        )

    def retire_keys(self, now: datetime, publish_until: datetime) -> list[str]:
        kids = [r.kid for r in self.conn.execute(select(signing_keys.c.kid).where(signing_keys.c.retired_at.is_(None)))]
        if kids:
            self.conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid.in_(kids))
                .values(retired_at=now, publish_until=publish_until)
            )
        return kids

    # client assertions
    def consume_jti(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """True the first time (client, jti) is seen; False on a replay."""
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(assertion_jtis)
            .values(client_id=client_id, jti=jti, expires_at=expires_at)
            .on_conflict_do_nothing()
            .returning(assertion_jtis.c.jti)
        )
        # RETURNING, not rowcount: psycopg reports 1 for a conflicting DO NOTHING insert.
        return self.conn.execute(stmt).first() is not None

    def purge_jtis(self, now: datetime) -> None:
        self.conn.execute(delete(assertion_jtis).where(assertion_jtis.c.expires_at < now))

    # tasks
    def insert_task(self, row: TaskRow) -> None:
        self.conn.execute(
            insert(tasks).values(
                id=row.id,
                agent_id=row.agent_id,
                person_id=row.person_id,
                delegation_id=row.delegation_id,
                purpose=row.purpose,
                scopes=list(row.scopes),
                audience=row.audience,
                actors=list(row.actors),
                constraints=row.constraints,
                status=row.status,
                started_at=row.started_at,
                expires_at=row.expires_at,
            )
        )

    def extend_task(self, task_id: str, expires_at: datetime, actors: Sequence[str]) -> None:
        """A renewed or multi-hop token: the task lives until its last token expires."""
        self.conn.execute(
            update(tasks).where(tasks.c.id == task_id, tasks.c.expires_at < expires_at).values(expires_at=expires_at)
        )
        self.conn.execute(update(tasks).where(tasks.c.id == task_id).values(actors=list(actors)))

    def get_task(self, task_id: str) -> TaskRow | None:
        r = self.conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        return None if r is None else _task(r)

    def list_tasks(
        self, *, after: str | None, limit: int, agent_id: str | None, person_id: str | None, status: str | None,
        now: datetime,
    ) -> list[TaskRow]:  # fmt: skip
        q = select(tasks).order_by(tasks.c.id).limit(limit)
        if after:
            q = q.where(tasks.c.id > after)
        if agent_id:
            q = q.where(tasks.c.agent_id == agent_id)
        if person_id:
            q = q.where(tasks.c.person_id == person_id)
        if status == "open":
            q = q.where(tasks.c.status == "open", tasks.c.expires_at > now)
        elif status == "expired":
            q = q.where(tasks.c.status == "open", tasks.c.expires_at <= now)
        elif status == "ended":
            q = q.where(tasks.c.status == "ended")
        return [_task(r) for r in self.conn.execute(q)]

    def end_task(self, task_id: str, reason: str, now: datetime) -> bool:
        res = self.conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == "open")
            .values(status="ended", ended_at=now, end_reason=reason)
        )
        return bool(res.rowcount)

    # revocations
    def add_revocation(
        self, kind: str, subject_id: str, reason: str, now: datetime, expires_at: datetime | None = None
    ) -> int:
        # PostgreSQL: the 0004 trigger NOTIFYs every watcher when this commits.
        res = self.conn.execute(
            insert(revocations).values(
                kind=kind, subject_id=subject_id, reason=reason[:200], created_at=now, expires_at=expires_at
            )
        )
        pk = res.inserted_primary_key
        return int(pk[0]) if pk else 0

    def revoked(self, subjects: Sequence[tuple[str, str]], issued_at: datetime) -> str | None:
        """The first revocation covering any (kind, subject): jti/task always, others if issued before it."""
        if not subjects:
            return None
        conds = []
        for kind, subject in subjects:
            cond = and_(revocations.c.kind == kind, revocations.c.subject_id == subject)
            if kind in TIMED_KINDS:
                cond = and_(cond, revocations.c.created_at >= issued_at)
            conds.append(cond)
        r = self.conn.execute(select(revocations.c.kind, revocations.c.reason).where(or_(*conds)).limit(1)).first()
        return None if r is None else f"{r.kind} revoked ({r.reason})"

    def revocations_after(
        self, seq: int, since: datetime, *, kept_longer: Mapping[str, datetime] | None = None
    ) -> list[RevocationRow]:
        """Rows past `seq` made since `since`, and rows of the kinds in `kept_longer` made since their own time."""
        recent = or_(
            revocations.c.created_at >= since,
            *(
                and_(revocations.c.kind == kind, revocations.c.created_at >= t)
                for kind, t in (kept_longer or {}).items()
            ),
        )
        q = (
            select(revocations.c.seq, revocations.c.kind, revocations.c.subject_id, revocations.c.created_at)
            .where(revocations.c.seq > seq, recent)
            .order_by(revocations.c.seq)
        )
        return [RevocationRow(int(r.seq), r.kind, r.subject_id, r.created_at) for r in self.conn.execute(q)]

    def record(self, events: Sequence[Event]) -> list[Record]:
        return chain.append(self.conn, events)


class SqlTokenStore(RepoStore[SqlTokenRepo]):
    def __init__(self, db: Database) -> None:
        super().__init__(db, SqlTokenRepo)


__all__ = ["TIMED_KINDS", "SqlTokenRepo", "SqlTokenStore"]
