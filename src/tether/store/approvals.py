"""SQL implementation of the approvals ports (SQLAlchemy Core, both backends)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from tether.approvals.model import Approval, ApprovalStatus, Breakglass, Delivery, ReviewStatus
from tether.audit import chain
from tether.audit.model import Event, Record
from tether.store.db import Database
from tether.store.schema.approvals import approvals, breakglass, webhook_deliveries
from tether.store.schema.identity import tasks

#: opens a sealed prompt: (approval id, sealed bytes) → text
Unseal = Callable[[str, bytes], str | None]


def _approval(r: Any, unseal: Unseal) -> Approval:
    return Approval(
        id=r.id, status=ApprovalStatus(r.status), agent_id=r.agent_id, person_id=r.person_id,
        sponsor_id=r.sponsor_id, actors=tuple(r.actors), task_id=r.task_id, action=r.action,
        resource=dict(r.resource), summary=dict(r.summary),
        prompt=unseal(r.id, r.prompt_sealed) if r.prompt_sealed is not None else None,
        gateway=r.gateway, decision_id=r.decision_id, policy_ids=tuple(r.policy_ids), reasons=tuple(r.reasons),
        forbid_ids=tuple(r.forbid_ids), approver_rule=r.approver_rule, bundle=r.bundle,
        request_digest=r.request_digest, created_at=r.created_at, expires_at=r.expires_at,
        decided_at=r.decided_at, decided_by=r.decided_by, decision_reason=r.decision_reason, used_at=r.used_at,
    )  # fmt: skip


def _breakglass(r: Any) -> Breakglass:
    return Breakglass(
        id=r.id, invoked_by=r.invoked_by, agent_id=r.agent_id, task_id=r.task_id, justification=r.justification,
        created_at=r.created_at, expires_at=r.expires_at, review_status=ReviewStatus(r.review_status),
        ended_at=r.ended_at, ended_by=r.ended_by, reviewed_by=r.reviewed_by, reviewed_at=r.reviewed_at,
        review_note=r.review_note,
    )  # fmt: skip


def _breakglass_row(bg: Breakglass) -> dict[str, Any]:
    row = asdict(bg)
    row["review_status"] = bg.review_status.value
    return row


def _delivery(r: Any) -> Delivery:
    return Delivery(**{c: getattr(r, c) for c in Delivery.__dataclass_fields__})


class SqlApprovalRepo:
    def __init__(self, conn: Connection, unseal: Unseal) -> None:
        self.conn = conn
        self.unseal = unseal

    # approvals
    def insert(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(approvals).values(**row))

    def get(self, approval_id: str) -> Approval | None:
        r = self.conn.execute(select(approvals).where(approvals.c.id == approval_id)).first()
        return _approval(r, self.unseal) if r else None

    def list_approvals(self, *, status: str | None, after: str | None, limit: int) -> list[Approval]:
        # newest first; the cursor is the last id of the previous page (ids are random, so
        # order by (created_at, id) and resume strictly after the cursor's row)
        q = select(approvals).order_by(approvals.c.created_at.desc(), approvals.c.id.desc()).limit(limit)
        if status is not None:
            q = q.where(approvals.c.status == status)
        if after is not None:
            cur = self.conn.execute(select(approvals.c.created_at).where(approvals.c.id == after)).first()
            if cur is not None:
                q = q.where(
                    or_(
                        approvals.c.created_at < cur.created_at,
                        (approvals.c.created_at == cur.created_at) & (approvals.c.id < after),
                    )
                )
        return [_approval(r, self.unseal) for r in self.conn.execute(q)]

    def transition(
        self, approval_id: str, *, frm: ApprovalStatus, to: ApprovalStatus, now: datetime,
        task_id: str | None = None, request_digest: str | None = None, values: dict[str, Any] | None = None,
    ) -> bool:  # fmt: skip
        """One conditional UPDATE: true when exactly this row moved from `frm` to `to`."""
        q = update(approvals).where(approvals.c.id == approval_id, approvals.c.status == frm.value)
        if to is not ApprovalStatus.EXPIRED:
            q = q.where(approvals.c.expires_at > now)
        if task_id is not None:
            q = q.where(approvals.c.task_id == task_id)
        if request_digest is not None:
            q = q.where(approvals.c.request_digest == request_digest)
        result = self.conn.execute(q.values(status=to.value, **(values or {})))
        return result.rowcount == 1

    def due_for_expiry(self, now: datetime) -> list[Approval]:
        q = select(approvals).where(
            approvals.c.status.in_([ApprovalStatus.PENDING.value, ApprovalStatus.APPROVED.value]),
            approvals.c.expires_at <= now,
        )
        return [_approval(r, self.unseal) for r in self.conn.execute(q)]

    # break-glass
    def insert_breakglass(self, bg: Breakglass) -> None:
        self.conn.execute(insert(breakglass).values(**_breakglass_row(bg)))

    def get_breakglass(self, breakglass_id: str) -> Breakglass | None:
        r = self.conn.execute(select(breakglass).where(breakglass.c.id == breakglass_id)).first()
        return _breakglass(r) if r else None

    def update_breakglass(self, bg: Breakglass) -> None:
        self.conn.execute(update(breakglass).where(breakglass.c.id == bg.id).values(**_breakglass_row(bg)))

    def list_breakglass(self, *, open_review: bool | None, limit: int) -> list[Breakglass]:
        q = select(breakglass).order_by(breakglass.c.created_at.desc()).limit(limit)
        if open_review is not None:
            q = q.where(breakglass.c.review_status == ("open" if open_review else "closed"))
        return [_breakglass(r) for r in self.conn.execute(q)]

    def live_breakglass(self, now: datetime) -> list[Breakglass]:
        q = select(breakglass).where(breakglass.c.ended_at.is_(None), breakglass.c.expires_at > now)
        return [_breakglass(r) for r in self.conn.execute(q)]

    # deliveries
    def insert_delivery(self, d: Delivery) -> None:
        self.conn.execute(insert(webhook_deliveries).values(**asdict(d)))

    def update_delivery(self, delivery_id: str, **values: Any) -> None:
        self.conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values))

    def deliveries(self, subject_id: str) -> list[Delivery]:
        q = (
            select(webhook_deliveries)
            .where(webhook_deliveries.c.subject_id == subject_id)
            .order_by(webhook_deliveries.c.created_at)
        )
        return [_delivery(r) for r in self.conn.execute(q)]

    def task_of(self, task_id: str) -> tuple[str, str] | None:
        r = self.conn.execute(select(tasks.c.agent_id, tasks.c.person_id).where(tasks.c.id == task_id)).first()
        return (str(r.agent_id), str(r.person_id)) if r else None

    def record(self, events: Sequence[Event]) -> list[Record]:
        return chain.append(self.conn, events)


class SqlApprovalStore:
    def __init__(self, db: Database, unseal: Unseal) -> None:
        self.db = db
        self.unseal = unseal

    @contextmanager
    def read(self) -> Iterator[SqlApprovalRepo]:
        with self.db.read() as conn:
            yield SqlApprovalRepo(conn, self.unseal)

    @contextmanager
    def write(self) -> Iterator[SqlApprovalRepo]:
        with self.db.write() as conn:
            yield SqlApprovalRepo(conn, self.unseal)


__all__ = ["SqlApprovalRepo", "SqlApprovalStore"]
