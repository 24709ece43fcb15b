"""Approval requests, one-time grants and break-glass.

    approval_required decision ─► request()  pending  ── approval.requested (same txn), webhooks
    a permitted Person          ─► decide()   approved | denied ── approval.decided (same txn)
    the retried call            ─► consume()  approved → used (one conditional UPDATE)
                                              ── approval.used, committed before forwarding
    nobody in time              ─► expired

An approval authorises exactly one execution of the request it was made for: same task,
same request digest, before its expiry. `consume` returns the forbid ids it recorded; the
policy engine lifts exactly those and decides the retried call again in full.

Break-glass grants are kept in memory (refreshed on every local change and by a watcher
that polls the table), so `breakglass_for` on the hot path never reads the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tether.approvals.errors import (
    ApprovalClosed,
    ApprovalInvalid,
    BreakglassInvalid,
    BreakglassRefused,
    NotAnApprover,
)
from tether.approvals.model import Approval, ApprovalStatus, Breakglass, Delivery, ReviewStatus
from tether.approvals.notify import WebhookNotifier
from tether.approvals.ports import ApprovalStore
from tether.audit.model import Event
from tether.background import stop_task
from tether.errors import Conflict, NotFound, Unavailable, ValidationFailed
from tether.identity import IdentityService, Page, Person
from tether.log import get_logger
from tether.types import new_id, rfc3339, utcnow

if TYPE_CHECKING:
    from tether.policy import Decision, DecisionRequest
    from tether.tokens import VerifiedToken

log = get_logger("tether.approvals")

DEFAULT_TTL = 900
MAX_BREAKGLASS = 3600
MIN_JUSTIFICATION = 10
MAX_PAGE = 200

#: seals/opens prompt text: (approval id, plaintext) → bytes; (approval id, bytes) → plaintext
Seal = Callable[[str, str], bytes]


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(dict(value), default=str))
    return out


def resource_doc(resource: Any) -> dict[str, Any]:
    return {
        "type": resource.type,
        "id": resource.id,
        "system": resource.system,
        "sensitivity": resource.sensitivity,
        "owner": resource.owner,
    }


class ApprovalService:
    def __init__(
        self,
        store: ApprovalStore,
        identity: IdentityService,
        *,
        seal: Seal,
        ttl: int = DEFAULT_TTL,
        breakglass_max: int = MAX_BREAKGLASS,
        notifier: WebhookNotifier | None = None,
        console_url: str | None = None,
        refresh_seconds: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.identity = identity
        self.seal = seal
        self.ttl = ttl
        self.breakglass_max = min(breakglass_max, MAX_BREAKGLASS)
        self.notifier = notifier
        self.console_url = console_url.rstrip("/") if console_url else None
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        #: live grants by agent id, rebuilt on change; the hot path only reads it
        self._breakglass: dict[str, tuple[Breakglass, ...]] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._use_notified: dict[str, datetime] = {}
        self._watcher: asyncio.Task[None] | None = None
        with contextlib.suppress(Unavailable):  # not migrated yet (e.g. before `tether init`): start() retries
            self.refresh_breakglass()

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        *,
        decision: Decision,
        req: DecisionRequest,
        token: VerifiedToken,
        request_digest: str,
        summary: Mapping[str, Any],
        prompt: str | None,
        gateway: str,
    ) -> Approval:
        """Hold the request for a human: a pending approval, audited `approval.requested`, notified."""
        approval = await asyncio.to_thread(
            self.request_sync, decision=decision, req=req, token=token, request_digest=request_digest,
            summary=summary, prompt=prompt, gateway=gateway,
        )  # fmt: skip
        self._notify("approval.requested", approval)
        return approval

    def request_sync(
        self,
        *,
        decision: Decision,
        req: DecisionRequest,
        token: VerifiedToken,
        request_digest: str,
        summary: Mapping[str, Any],
        prompt: str | None,
        gateway: str,
    ) -> Approval:
        agent = self.identity.get_agent(req.agent_id)
        now = self.clock()
        approval_id = new_id("apr")
        approval = Approval(
            id=approval_id, status=ApprovalStatus.PENDING, agent_id=req.agent_id, person_id=req.person_id,
            sponsor_id=agent.sponsor_id, actors=tuple(token.actors) or (req.agent_id,), task_id=req.task_id,
            action=req.action, resource=resource_doc(req.resource), summary=_jsonable(summary), prompt=prompt,
            gateway=gateway, decision_id=decision.id, policy_ids=tuple(decision.policy_ids),
            reasons=tuple(decision.reasons), forbid_ids=tuple(decision.forbid_ids),
            approver_rule=decision.approver or "sponsor", bundle=str(decision.bundle)[:120],
            request_digest=request_digest, created_at=now, expires_at=now + timedelta(seconds=self.ttl),
        )  # fmt: skip
        row = {
            name: getattr(approval, name)
            for name in Approval.__dataclass_fields__
            if name not in ("prompt", "status", "actors", "policy_ids", "reasons", "forbid_ids")
        }
        row.update(
            status=approval.status.value, actors=list(approval.actors), policy_ids=list(approval.policy_ids),
            reasons=list(approval.reasons), forbid_ids=list(approval.forbid_ids),
            prompt_sealed=self.seal(approval_id, prompt) if prompt is not None else None,
        )  # fmt: skip
        with self.store.write() as repo:
            repo.insert(row)
            repo.record([self._event("approval.requested", approval, actor=approval.agent_id)])
        return approval

    # ------------------------------------------------------------------ deciding

    def refusal(self, person: Person, approval: Approval) -> str | None:
        """Why `person` may not decide `approval` (None when they may)."""
        if not person.active:
            return "the person is not active"
        if person.id == approval.agent_id or person.id in approval.actors:
            return "an agent never decides its own request"
        rule = approval.approver_rule
        if rule == "sponsor":
            ok = person.id == approval.sponsor_id
            return None if ok else "this request needs the agent's sponsor"
        if rule == "person":
            return None if person.id == approval.person_id else "this request needs the task's person"
        if rule.startswith("group:") and len(rule) > len("group:"):
            group = rule.removeprefix("group:")
            return None if group in person.groups else f"this request needs a member of the group {group}"
        if rule == "not-self":
            if person.id in (approval.person_id, approval.sponsor_id):
                return "four eyes: neither the task's person nor the sponsor may decide this request"
            if not {"approver", "admin"} & set(person.roles):
                return "four eyes: the decider needs the approver role"
            return None
        return f"unknown approver rule {rule!r}: nobody may decide this request"

    def may_decide(self, person_id: str, approval: Approval) -> bool:
        try:
            person = self.identity.get_person(person_id)
        except NotFound:
            return False
        return approval.status_at(self.clock()) is ApprovalStatus.PENDING and self.refusal(person, approval) is None

    async def decide(self, decider_id: str, approval_id: str, *, approve: bool, reason: str) -> Approval:
        """A Person approves or denies a pending request (audited `approval.decided`)."""
        approval = await asyncio.to_thread(self.decide_sync, decider_id, approval_id, approve=approve, reason=reason)
        self._notify("approval.decided", approval)
        waiter = self._waiters.get(approval_id)
        if waiter is not None:
            waiter.set()
        return approval

    def decide_sync(self, decider_id: str, approval_id: str, *, approve: bool, reason: str) -> Approval:
        reason = reason.strip()
        if not reason or len(reason) > 2000:
            raise ValidationFailed("a reason (1–2000 characters) is required", field="reason")
        try:
            decider = self.identity.get_person(decider_id)
        except NotFound as exc:
            raise NotAnApprover("only a registered Person may decide an approval") from exc
        now = self.clock()
        to = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        with self.store.write() as repo:
            approval = repo.get(approval_id)
            if approval is None:
                raise NotFound(f"no approval {approval_id}")
            status = approval.status_at(now)
            if status is not ApprovalStatus.PENDING:
                raise ApprovalClosed(f"approval {approval_id} is {status.value}", status=status.value)
            why = self.refusal(decider, approval)
            if why is not None:
                raise NotAnApprover(why, approver_rule=approval.approver_rule)
            values = {"decided_at": now, "decided_by": decider.id, "decision_reason": reason}
            if not repo.transition(approval_id, frm=ApprovalStatus.PENDING, to=to, now=now, values=values):
                raise ApprovalClosed(f"approval {approval_id} was decided or expired meanwhile")
            decided = replace(approval, status=to, decided_at=now, decided_by=decider.id, decision_reason=reason)
            repo.record([self._event("approval.decided", decided, actor=decider.id, reason=reason)])
        return decided

    # ------------------------------------------------------------------ one-time use

    async def consume(self, approval_id: str, *, task_id: str, request_digest: str) -> frozenset[str]:
        """Use an approved request once; durable and audited before the caller forwards anything."""
        return await asyncio.to_thread(self.consume_sync, approval_id, task_id=task_id, request_digest=request_digest)

    def consume_sync(self, approval_id: str, *, task_id: str, request_digest: str) -> frozenset[str]:
        now = self.clock()
        with self.store.write() as repo:
            if repo.transition(
                approval_id, frm=ApprovalStatus.APPROVED, to=ApprovalStatus.USED, now=now,
                task_id=task_id, request_digest=request_digest, values={"used_at": now},
            ):  # fmt: skip
                approval = repo.get(approval_id)
                assert approval is not None
                repo.record([self._event("approval.used", approval, actor=approval.agent_id)])
                return frozenset(approval.forbid_ids)
            approval = repo.get(approval_id)
            why = self._unusable(approval, now, task_id=task_id, request_digest=request_digest)
            repo.record(
                [
                    Event(
                        type="approval.refused",
                        actor=approval.agent_id if approval else "system",
                        task_id=task_id,
                        agent_id=approval.agent_id if approval else None,
                        approval_id=approval_id,
                        person_id=approval.person_id if approval else None,
                        request_digest=request_digest,
                        detail={"why": why},
                    )
                ]
            )
        raise ApprovalInvalid(f"approval {approval_id} cannot authorise this request: {why}", why=why)

    @staticmethod
    def _unusable(approval: Approval | None, now: datetime, *, task_id: str, request_digest: str) -> str:
        if approval is None or approval.task_id != task_id:
            return "unknown"  # another task's approval is indistinguishable from none
        status = approval.status_at(now)
        if status is ApprovalStatus.USED:
            return "already_used"
        if status is ApprovalStatus.EXPIRED:
            return "expired"
        if status is not ApprovalStatus.APPROVED:
            return status.value
        if approval.request_digest != request_digest:
            return "other_request"
        return "not_approved"

    async def wait(self, approval_id: str, timeout: float) -> ApprovalStatus:
        """Wait up to `timeout` seconds for a decision; the status when it came (or at timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        waiter = self._waiters.setdefault(approval_id, asyncio.Event())
        try:
            while True:
                status = (await asyncio.to_thread(self.get, approval_id)).status_at(self.clock())
                remaining = deadline - loop.time()
                if status is not ApprovalStatus.PENDING or remaining <= 0:
                    return status
                # woken at once by a local decision; other processes' decisions by polling
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), min(remaining, 0.5))
        finally:
            self._waiters.pop(approval_id, None)

    # ------------------------------------------------------------------ reading

    def get(self, approval_id: str) -> Approval:
        with self.store.read() as repo:
            approval = repo.get(approval_id)
        if approval is None:
            raise NotFound(f"no approval {approval_id}")
        return approval

    def list_approvals(self, *, status: str | None = None, after: str | None = None, limit: int = 50) -> Page[Approval]:
        if status is not None and status not in ApprovalStatus.__members__.values():
            raise ValidationFailed(f"unknown status {status!r}", field="status")
        limit = max(1, min(limit, MAX_PAGE))
        with self.store.read() as repo:
            rows = repo.list_approvals(status=status, after=after, limit=limit + 1)
        return Page(tuple(rows[:limit]), rows[limit - 1].id if len(rows) > limit else None)

    def deliveries(self, subject_id: str) -> list[Delivery]:
        with self.store.read() as repo:
            return repo.deliveries(subject_id)

    def expire_due(self) -> int:
        """Mark pending/approved requests past their expiry as expired (audited `approval.expired`)."""
        now = self.clock()
        with self.store.read() as repo:
            if not repo.due_for_expiry(now):
                return 0
        n = 0
        with self.store.write() as repo:
            events = []
            for a in repo.due_for_expiry(now):
                if repo.transition(a.id, frm=a.status, to=ApprovalStatus.EXPIRED, now=now):
                    events.append(self._event("approval.expired", replace(a, status=ApprovalStatus.EXPIRED)))
                    n += 1
            repo.record(events)
        return n

    # ------------------------------------------------------------------ break-glass

    def breakglass_for(self, agent_id: str, task_id: str) -> Breakglass | None:
        """The live break-glass grant covering this agent and task, from memory (no database read)."""
        grants = self._breakglass.get(agent_id)
        if not grants:
            return None
        now = self.clock()
        for bg in grants:
            if bg.covers(agent_id, task_id) and bg.active_at(now):
                self._notify_use(bg, now)
                return bg
        return None

    def _notify_use(self, bg: Breakglass, now: datetime) -> None:
        # Loud, not noisy: at most one "in use" notification per grant per minute and process.
        last = self._use_notified.get(bg.id)
        if last is not None and (now - last).total_seconds() < 60:
            return
        self._use_notified[bg.id] = now
        with contextlib.suppress(RuntimeError):  # no running loop (sync caller): the audit event still records it
            self._notify_breakglass("breakglass.used", bg)

    def refresh_breakglass(self) -> None:
        with self.store.read() as repo:
            live = repo.live_breakglass(self.clock())
        by_agent: dict[str, tuple[Breakglass, ...]] = {}
        for bg in live:
            by_agent[bg.agent_id] = (*by_agent.get(bg.agent_id, ()), bg)
        self._breakglass = by_agent  # one reference swap: readers never see a half-built index

    async def start_breakglass(
        self, actor_id: str, *, agent_id: str, task_id: str | None, justification: str, duration: int
    ) -> Breakglass:
        bg = await asyncio.to_thread(
            self.start_breakglass_sync, actor_id, agent_id=agent_id, task_id=task_id,
            justification=justification, duration=duration,
        )  # fmt: skip
        self._notify_breakglass("breakglass.started", bg)
        return bg

    def start_breakglass_sync(
        self, actor_id: str, *, agent_id: str, task_id: str | None, justification: str, duration: int
    ) -> Breakglass:
        try:
            person = self.identity.get_person(actor_id)
        except NotFound as exc:
            raise BreakglassRefused("break-glass needs a registered Person") from exc
        if not person.active or "breakglass" not in person.roles:
            raise BreakglassRefused("break-glass needs an active Person with the breakglass role")
        justification = justification.strip()
        if len(justification) < MIN_JUSTIFICATION or len(justification) > 2000:
            raise BreakglassInvalid(
                f"a justification of {MIN_JUSTIFICATION}–2000 characters is required", field="justification"
            )
        if not 1 <= duration <= self.breakglass_max:
            raise BreakglassInvalid(f"duration must be 1–{self.breakglass_max} seconds", field="duration")
        agent = self.identity.get_agent(agent_id)
        now = self.clock()
        bg = Breakglass(
            id=new_id("brk"), invoked_by=person.id, agent_id=agent.id, task_id=task_id, justification=justification,
            created_at=now, expires_at=now + timedelta(seconds=duration), review_status=ReviewStatus.OPEN,
        )  # fmt: skip
        with self.store.write() as repo:
            if task_id is not None:
                owner = repo.task_of(task_id)
                if owner is None or owner[0] != agent.id:
                    raise BreakglassInvalid(f"task {task_id} is not a task of agent {agent.id}", field="task_id")
            repo.insert_breakglass(bg)
            repo.record(
                [
                    Event(
                        type="breakglass.started",
                        actor=person.id,
                        task_id=task_id,
                        agent_id=agent.id,
                        sponsor_id=agent.sponsor_id,
                        person_id=person.id,
                        detail={
                            "breakglass_id": bg.id,
                            "justification": justification,
                            "expires_at": rfc3339(bg.expires_at),
                            "duration": duration,
                        },
                    )
                ]
            )
        self.refresh_breakglass()
        return bg

    async def end_breakglass(self, actor_id: str, breakglass_id: str) -> Breakglass:
        bg = await asyncio.to_thread(self.end_breakglass_sync, actor_id, breakglass_id)
        self._notify_breakglass("breakglass.ended", bg)
        return bg

    def end_breakglass_sync(self, actor_id: str, breakglass_id: str) -> Breakglass:
        now = self.clock()
        with self.store.write() as repo:
            bg = repo.get_breakglass(breakglass_id)
            if bg is None:
                raise NotFound(f"no break-glass {breakglass_id}")
            if not bg.active_at(now):
                raise Conflict(f"break-glass {breakglass_id} is not active")
            ended = replace(bg, ended_at=now, ended_by=actor_id)
            repo.update_breakglass(ended)
            repo.record([self._bg_event("breakglass.ended", ended, actor_id)])
        self.refresh_breakglass()
        return ended

    async def review_breakglass(self, actor_id: str, breakglass_id: str, *, note: str) -> Breakglass:
        bg = await asyncio.to_thread(self.review_breakglass_sync, actor_id, breakglass_id, note=note)
        self._notify_breakglass("breakglass.reviewed", bg)
        return bg

    def review_breakglass_sync(self, actor_id: str, breakglass_id: str, *, note: str) -> Breakglass:
        """A second Person (never the one who invoked it) closes the review."""
        note = note.strip()
        if not note or len(note) > 2000:
            raise ValidationFailed("a review note (1–2000 characters) is required", field="note")
        try:
            reviewer = self.identity.get_person(actor_id)
        except NotFound as exc:
            raise BreakglassRefused("a review needs a registered Person") from exc
        if not reviewer.active:
            raise BreakglassRefused("the reviewer is not active")
        now = self.clock()
        with self.store.write() as repo:
            bg = repo.get_breakglass(breakglass_id)
            if bg is None:
                raise NotFound(f"no break-glass {breakglass_id}")
            if bg.invoked_by == reviewer.id:
                raise BreakglassRefused("a second person must review a break-glass; not the one who invoked it")
            if bg.review_status is ReviewStatus.CLOSED:
                raise Conflict(f"the review of {breakglass_id} is closed already")
            closed = replace(
                bg, review_status=ReviewStatus.CLOSED, reviewed_by=reviewer.id, reviewed_at=now, review_note=note
            )
            repo.update_breakglass(closed)
            repo.record([self._bg_event("breakglass.reviewed", closed, reviewer.id, note=note)])
        return closed

    def get_breakglass(self, breakglass_id: str) -> Breakglass:
        with self.store.read() as repo:
            bg = repo.get_breakglass(breakglass_id)
        if bg is None:
            raise NotFound(f"no break-glass {breakglass_id}")
        return bg

    def list_breakglass(self, *, open_review: bool | None = None, limit: int = 100) -> list[Breakglass]:
        with self.store.read() as repo:
            return repo.list_breakglass(open_review=open_review, limit=max(1, min(limit, MAX_PAGE)))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self.refresh_breakglass)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        await stop_task(self._watcher)
        self._watcher = None
        if self.notifier is not None:
            await self.notifier.drain(timeout=5.0)

    async def _watch(self) -> None:
        """Pick up other processes' break-glass changes; expire requests nobody decided."""
        ticks = 0
        while True:
            await asyncio.sleep(self.refresh_seconds)
            ticks += 1
            try:
                await asyncio.to_thread(self.refresh_breakglass)
                if ticks % 5 == 0:
                    await asyncio.to_thread(self.expire_due)
            except Exception as exc:  # noqa: BLE001 — a watcher logs and keeps watching
                log.error("approvals watcher failed", error=repr(exc))

    # ------------------------------------------------------------------ helpers

    def _event(self, kind: str, a: Approval, *, actor: str = "system", reason: str | None = None) -> Event:
        detail: dict[str, Any] = {
            "decision_id": a.decision_id,
            "reasons": list(a.reasons),
            "forbid_ids": list(a.forbid_ids),
            "approver": a.approver_rule,
            "expires_at": rfc3339(a.expires_at),
            "gateway": a.gateway,
            "status": a.status.value,
        }
        if reason is not None:
            detail["reason"] = reason
        return Event(
            type=kind, actor=actor, task_id=a.task_id, agent_id=a.agent_id, person_id=a.person_id,
            sponsor_id=a.sponsor_id, action=a.action, resource=a.resource, decision=a.status.value,
            policy_ids=a.policy_ids, approval_id=a.id, request_digest=a.request_digest, detail=detail,
        )  # fmt: skip

    @staticmethod
    def _bg_event(kind: str, bg: Breakglass, actor: str, note: str | None = None) -> Event:
        detail: dict[str, Any] = {"breakglass_id": bg.id, "invoked_by": bg.invoked_by}
        if note is not None:
            detail["note"] = note
        return Event(type=kind, actor=actor, task_id=bg.task_id, agent_id=bg.agent_id, person_id=actor, detail=detail)

    def _link(self, path: str) -> str | None:
        return f"{self.console_url}{path}" if self.console_url else None

    def _notify(self, event: str, a: Approval) -> None:
        if self.notifier is None or not self.notifier.enabled:
            return
        # Facts only: arguments and prompt stay behind the console's sign-in.
        self.notifier.send(
            event,
            a.id,
            {
                "approval_id": a.id,
                "status": a.status.value,
                "agent_id": a.agent_id,
                "person_id": a.person_id,
                "sponsor_id": a.sponsor_id,
                "task_id": a.task_id,
                "action": a.action,
                "resource": a.resource,
                "policy_ids": list(a.policy_ids),
                "reasons": list(a.reasons),
                "approver": a.approver_rule,
                "expires_at": rfc3339(a.expires_at),
                "decided_by": a.decided_by,
                "console_url": self._link(f"/console/approvals/{a.id}"),
            },
        )

    def _notify_breakglass(self, event: str, bg: Breakglass) -> None:
        if self.notifier is None or not self.notifier.enabled:
            return
        self.notifier.send(
            event,
            bg.id,
            {
                "breakglass_id": bg.id,
                "agent_id": bg.agent_id,
                "task_id": bg.task_id,
                "person_id": bg.invoked_by,
                "justification": bg.justification,
                "expires_at": rfc3339(bg.expires_at),
                "status": bg.review_status.value,
                "console_url": self._link("/console/breakglass"),
            },
        )


__all__ = ["DEFAULT_TTL", "MAX_BREAKGLASS", "ApprovalService", "resource_doc"]
