"""SQL implementation of the credential vault's store, and master-key rotation across the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, update

from tether.audit.chain import append
from tether.audit.model import Event
from tether.credentials.model import CredentialInfo, CredentialKind, SealedRow, SealedSubject
from tether.crypto import (
    APPROVALS_PROMPT_KEY,
    AUDIT_CONTENT_KEY,
    AUDIT_SIGNING_KEY,
    TOKENS_SIGNING_KEY,
    derive_key,
    seal,
    unseal,
)
from tether.store.db import Database
from tether.store.schema.approvals import approvals
from tether.store.schema.audit import audit_events, audit_keys
from tether.store.schema.credentials import credentials, subject_tokens
from tether.store.schema.identity import tasks
from tether.store.schema.tokens import signing_keys


def _info(r: Any) -> CredentialInfo:
    return CredentialInfo(
        id=r.id, name=r.name, kind=CredentialKind(r.kind), config=dict(r.config), master_kid=r.master_kid,
        created_by=r.created_by, created_at=r.created_at, updated_at=r.updated_at,
    )  # fmt: skip


class SqlCredentialStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _values(self, row: SealedRow) -> dict[str, Any]:
        i = row.info
        return {
            "id": i.id, "name": i.name, "kind": i.kind.value, "config": dict(i.config),
            "secret_sealed": row.secret_sealed, "data_key_wrapped": row.data_key_wrapped, "master_kid": i.master_kid,
            "created_by": i.created_by, "created_at": i.created_at, "updated_at": i.updated_at,
        }  # fmt: skip

    @staticmethod
    def _event(kind: str, info: CredentialInfo) -> Event:
        # names and kinds only: never a secret, never a sealed blob
        return Event(type=kind, actor=info.created_by, detail={"credential": info.name, "kind": info.kind.value,
                                                                "master_kid": info.master_kid})  # fmt: skip

    def insert(self, row: SealedRow) -> None:
        with self.db.write() as conn:
            conn.execute(insert(credentials).values(**self._values(row)))
            append(conn, [self._event("credential.added", row.info)])

    def replace(self, row: SealedRow) -> None:
        with self.db.write() as conn:
            conn.execute(update(credentials).where(credentials.c.id == row.info.id).values(**self._values(row)))
            append(conn, [self._event("credential.replaced", row.info)])

    def get(self, name: str) -> SealedRow | None:
        with self.db.read() as conn:
            r = conn.execute(select(credentials).where(credentials.c.name == name)).first()
        return None if r is None else SealedRow(_info(r), r.secret_sealed, r.data_key_wrapped)

    def all(self) -> Sequence[CredentialInfo]:
        cols = [c for c in credentials.c if c.name not in ("secret_sealed", "data_key_wrapped")]
        with self.db.read() as conn:
            return [_info(r) for r in conn.execute(select(*cols).order_by(credentials.c.name)).all()]

    def delete(self, name: str) -> bool:
        with self.db.write() as conn:
            r = conn.execute(select(credentials).where(credentials.c.name == name)).first()
            if r is None:
                return False
            conn.execute(delete(credentials).where(credentials.c.id == r.id))
            append(conn, [self._event("credential.removed", _info(r))])
        return True

    def put_subject(self, row: SealedSubject) -> None:
        with self.db.write() as conn:
            conn.execute(delete(subject_tokens).where(subject_tokens.c.task_id == row.task_id))
            conn.execute(insert(subject_tokens).values(
                task_id=row.task_id, person_id=row.person_id, token_sealed=row.token_sealed,
                data_key_wrapped=row.data_key_wrapped, master_kid=row.master_kid, expires_at=row.expires_at,
            ))  # fmt: skip

    def get_subject(self, task_id: str) -> SealedSubject | None:
        with self.db.read() as conn:
            r = conn.execute(select(subject_tokens).where(subject_tokens.c.task_id == task_id)).first()
        if r is None:
            return None
        return SealedSubject(r.task_id, r.person_id, r.token_sealed, r.data_key_wrapped, r.master_kid, r.expires_at)

    def delete_subjects(self, task_ids: Sequence[str]) -> int:
        if not task_ids:
            return 0
        with self.db.write() as conn:
            res = conn.execute(delete(subject_tokens).where(subject_tokens.c.task_id.in_(list(task_ids))))
        return int(res.rowcount or 0)

    def finished_subjects(self, now: datetime) -> list[str]:
        """Task ids holding a subject token whose task ended or expired."""
        q = (
            select(subject_tokens.c.task_id)
            .select_from(subject_tokens.outerjoin(tasks, tasks.c.id == subject_tokens.c.task_id))
            .where(or_(subject_tokens.c.expires_at <= now, tasks.c.ended_at.is_not(None),
                       tasks.c.status != "open"))
        )  # fmt: skip
        with self.db.read() as conn:
            return [r[0] for r in conn.execute(q).all()]

    def rewrap_all(self, rewrap: Callable[[str, bytes], bytes], new_kid: str) -> int:
        with self.db.write() as conn:
            return _rewrap(conn, rewrap, new_kid)


def _rewrap(conn: Any, rewrap: Callable[[str, bytes], bytes], new_kid: str) -> int:
    n = 0
    for r in conn.execute(select(credentials.c.id, credentials.c.data_key_wrapped)).all():
        conn.execute(update(credentials).where(credentials.c.id == r.id).values(
            data_key_wrapped=rewrap(r.id, r.data_key_wrapped), master_kid=new_kid))  # fmt: skip
        n += 1
    for r in conn.execute(select(subject_tokens.c.task_id, subject_tokens.c.data_key_wrapped)).all():
        conn.execute(update(subject_tokens).where(subject_tokens.c.task_id == r.task_id).values(
            data_key_wrapped=rewrap("sub:" + r.task_id, r.data_key_wrapped), master_kid=new_kid))  # fmt: skip
        n += 1
    return n


#: Other contexts' blobs sealed under keys derived from the master key (see api/wiring.py):
#: (table, id column, blob column, key purpose). Rotation re-seals them with the new derivation.
DERIVED_SEALS: list[tuple[Any, str, str, str]] = [
    (signing_keys, "kid", "private_sealed", TOKENS_SIGNING_KEY),
    (approvals, "id", "prompt_sealed", APPROVALS_PROMPT_KEY),
    (audit_keys, "kid", "sealed_private", AUDIT_SIGNING_KEY),
    (audit_events, "id", "content", AUDIT_CONTENT_KEY),  # the events' erasable content
]


def rotate_master_everywhere(
    db: Database, rewrap: Callable[[str, bytes], bytes], old_master: bytes, new_master: bytes, new_kid: str,
    actor: str,
) -> dict[str, int]:  # fmt: skip
    """One transaction: re-wrap the vault's data keys and re-seal every blob derived from the master key."""
    counts: dict[str, int] = {}
    with db.write() as conn:
        counts["vault"] = _rewrap(conn, rewrap, new_kid)
        for table, id_col, blob_col, label in DERIVED_SEALS:
            old_k, new_k = derive_key(old_master, label), derive_key(new_master, label)
            ids, blobs = table.c[id_col], table.c[blob_col]
            n = 0
            for r in conn.execute(select(ids, blobs).where(blobs.is_not(None))).all():
                aad = str(r[0]).encode()
                conn.execute(update(table).where(ids == r[0]).values(
                    {blob_col: seal(new_k, unseal(old_k, r[1], aad), aad)}))  # fmt: skip
                n += 1
            counts[table.name] = n
        append(conn, [Event(type="credential.master_rotated", actor=actor, detail={"master_kid": new_kid, **counts})])
    return counts


__all__ = ["DERIVED_SEALS", "SqlCredentialStore", "rotate_master_everywhere"]
