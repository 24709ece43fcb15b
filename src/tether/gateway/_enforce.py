"""The one enforcement step both gateways share: decide, make the decision durable, hold.

    verified token ─┐
    mapped call ────┼─► check() ─► [approval consumed?] ─► PolicyEngine.decide
                    │                                   ─► audit tool.requested + policy.decided (durable)
                    │                                   ─► approval_required? ApprovalService.request
                    └─► Verdict(allowed, decision, approval_id, event ids)
    gateway forwards only when verdict.allowed, then completed() records tool.completed.

Fail closed: with no policy engine or no audit log wired, or when the audit write fails,
`check` raises and nothing is forwarded. An approval id on a retried call is consumed
(one conditional update, audited) before the call is decided again in full; the approval
lifts only the forbids it recorded, so a call that changed since it was approved is
decided on its own merits.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tether.audit.chain import event_id
from tether.audit.model import Event
from tether.background import stop_task
from tether.errors import Unavailable
from tether.log import get_logger
from tether.store.usage import zero

log = get_logger("tether.gateway")

#: tasks whose totals a process keeps in memory; past it the least recently first-seen half is forgotten
MAX_TASKS = 100_000

if TYPE_CHECKING:
    from tether.policy import Decision, Resource
    from tether.tokens import VerifiedToken


class _Policy(Protocol):
    def decide(self, req: Any, *, lifted_forbids: frozenset[str] = ..., breakglass: bool = ...) -> Decision: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One mapped tool or API call, as a gateway hands it over for a decision."""

    token: VerifiedToken
    action: str
    resource: Resource
    facts: Mapping[str, Any]
    request_digest: str
    summary: Mapping[str, Any]
    gateway: str
    upstream: str
    prompt: str | None = None
    approval_id: str | None = None
    trace_id: str | None = None
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    allowed: bool
    approval_id: str | None
    request_event_id: str
    decision_event_id: str
    breakglass_id: str | None = None


class TaskUsage:
    """Per-task counters policies read as `context.task.usage` (items, bytes, calls, external recipients).

    The counters live in the database (`task_usage`), shared by every process serving it; the audit
    writer adds each call's deltas once the call's events are committed. Deciding reads
    no database: a task's view here is the service-wide totals this process last learned, plus its own
    deltas still on their way to the disk. It learns totals three ways, each stamped with the audit
    seq they are as of (a later stamp always wins): its own commits; a read the first time it sees a
    task (`ensure`); and a poll for rows other processes changed (`poll`, every POLL_SECONDS while the
    server runs). So what another process counted reaches a decision here within one poll; concurrent
    calls are decided before their neighbours' answers are counted, in one process or several.
    """

    POLL_SECONDS = 0.25

    def __init__(
        self,
        load: Callable[[str], tuple[int, dict[str, int]]] | None = None,
        changed: Callable[[int], list[tuple[str, tuple[int, dict[str, int]]]]] | None = None,
        head: Callable[[], int] | None = None,
    ) -> None:
        self._load, self._changed, self._head = load, changed, head
        self._base: dict[str, tuple[int, dict[str, int]]] = {}  # task → (seq, totals)
        self._pending: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._watermark: int | None = None
        self._loading: dict[str, asyncio.Future[tuple[int, dict[str, int]]]] = {}
        self._poller: asyncio.Task[None] | None = None

    def of(self, task_id: str) -> dict[str, int]:
        base = self._base.get(task_id)
        out = dict(base[1]) if base is not None else zero()
        if task_id in self._pending:
            with self._lock:
                for k, v in self._pending.get(task_id, {}).items():
                    out[k] = out.get(k, 0) + v
        return out

    def add(self, task_id: str, **deltas: int) -> None:
        """Count `deltas` now; they stay pending here until the record carrying them is committed."""
        with self._lock:
            pending = self._pending.setdefault(task_id, {})
            for k, v in deltas.items():
                pending[k] = pending.get(k, 0) + int(v)

    async def ensure(self, task_id: str) -> None:
        """Read the task's service-wide totals the first time this process sees it (one read, however many
        of its calls arrive at once)."""
        if self._load is None or task_id in self._base:
            return
        loading = self._loading.get(task_id)
        if loading is None:
            loading = self._loading[task_id] = asyncio.ensure_future(asyncio.to_thread(self._load, task_id))
            loading.add_done_callback(lambda _: self._loading.pop(task_id, None))
        self._learn({task_id: await asyncio.shield(loading)})

    def committed(
        self, usage: list[tuple[str, Mapping[str, int]]], totals: dict[str, tuple[int, dict[str, int]]] | None
    ) -> None:
        """The audit writer's report on a batch: its deltas left pending, and the new totals (None: rolled back)."""
        with self._lock:
            for task_id, deltas in usage:
                pending = self._pending.get(task_id)
                if pending is None:
                    continue
                for k, v in deltas.items():
                    left = pending.get(k, 0) - int(v)
                    if left:
                        pending[k] = left
                    else:
                        pending.pop(k, None)
                if not pending:
                    del self._pending[task_id]
            if totals:
                self._learn_locked(totals)

    def poll(self) -> int:
        """Take in the rows other processes changed since the last poll (for tasks seen here); how many."""
        if self._changed is None:
            return 0
        if self._watermark is None:
            self._watermark = self._head() if self._head is not None else 0
            return 0
        rows = self._changed(self._watermark)
        if rows:
            self._watermark = max(self._watermark, rows[-1][1][0])
            with self._lock:
                self._learn_locked({task: t for task, t in rows if task in self._base})
        return len(rows)

    async def start(self) -> None:
        if self._changed is not None and self._poller is None:
            await asyncio.to_thread(self.poll)  # sets the watermark: older changes come with `ensure`
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        await stop_task(self._poller)
        self._poller = None

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.POLL_SECONDS)
            if not self._base:
                continue
            try:
                await asyncio.to_thread(self.poll)
            except Exception as exc:  # noqa: BLE001 — a watcher logs and keeps watching
                log.error("task usage poll failed", error=repr(exc))

    def _learn(self, totals: Mapping[str, tuple[int, dict[str, int]]]) -> None:
        with self._lock:
            self._learn_locked(totals)

    def _learn_locked(self, totals: Mapping[str, tuple[int, dict[str, int]]]) -> None:
        for task_id, (seq, counters) in totals.items():
            known = self._base.get(task_id)
            if known is None or seq >= known[0]:  # a reading never replaces a newer one
                self._base[task_id] = (seq, counters)
        if len(self._base) > MAX_TASKS:  # the database keeps the totals: a task seen again is read again
            for task_id in [t for t in itertools.islice(self._base, len(self._base) - MAX_TASKS // 2)
                            if t not in self._pending]:  # fmt: skip
                del self._base[task_id]


class Enforcer:
    def __init__(
        self,
        *,
        policy: _Policy | None,
        audit: Any,
        approvals: Any = None,
        metrics: Any = None,
        usage: TaskUsage | None = None,
        instance: str | None = None,
    ) -> None:
        #: this server process's instance id, on every decision (recovery leaves a live instance's calls alone)
        self.instance = instance
        self.policy = policy
        self.audit = audit
        self.approvals = approvals
        self.metrics = metrics
        self.usage = usage if usage is not None else TaskUsage()

    def request(self, call: Call) -> Any:
        """The DecisionRequest for a call: identity comes from the verified token only."""
        from tether.policy import DecisionRequest

        t = call.token
        usage = dict(self.usage.of(t.task_id))
        return DecisionRequest(
            agent_id=t.agent_id,
            person_id=t.person_id,
            actors=tuple(t.actors[1:]),
            task_id=t.task_id,
            scopes=t.scopes,
            action=call.action,
            resource=call.resource,
            facts=dict(call.facts),
            usage=usage,
            constraints=t.constraints,
        )

    async def check(self, call: Call) -> Verdict:
        if self.policy is None:
            raise Unavailable("no policy is loaded: calls are refused until one is")
        if self.audit is None:
            raise Unavailable("the audit log is not available: calls are refused")
        t = call.token
        await self.usage.ensure(t.task_id)
        req = self.request(call)
        prompt_digest, prompt_text = self._prompt(call.prompt)
        requested_id, decided_id = event_id(), event_id()  # time-ordered: the id index grows at its edge
        common: dict[str, Any] = {
            "actor": t.agent_id,
            "task_id": t.task_id,
            "trace_id": call.trace_id,
            "agent_id": t.agent_id,
            "person_id": t.person_id,
            "action": call.action,
            "resource": _resource_doc(call.resource),
            "request_digest": call.request_digest,
        }
        requested = Event(
            id=requested_id,
            type="tool.requested",
            parent_id=call.parent_id,
            prompt_digest=prompt_digest,
            detail={
                "gateway": call.gateway,
                "upstream": call.upstream,
                "actors": list(t.actors),
                "prompt_source": "agent_asserted" if call.prompt is not None else None,
            },
            **common,
        )
        # The content (arguments, prompt, decision input) rides with tool.requested: one fsync per call.
        content = self._content(requested_id, call, req, prompt_text)
        events: list[Event] = [requested]
        lifted: frozenset[str] = frozenset()
        consumed: str | None = None
        if call.approval_id:
            if self.approvals is None:
                raise Unavailable("approvals are not available")
            # A retry is on record before its approval is spent, so the story reads in order:
            # tool.requested, approval.used (or approval.refused), policy.decided. One more commit, retries only.
            await self.audit.record_many(events, content=content)
            events, content = [], []
            lifted = await self.approvals.consume(
                call.approval_id, task_id=t.task_id, request_digest=call.request_digest
            )
            consumed = call.approval_id
        from tether.policy import Effect

        breakglass = self.approvals.breakglass_for(t.agent_id, t.task_id) if self.approvals else None
        decision = self.policy.decide(req, lifted_forbids=lifted, breakglass=breakglass is not None)
        events.append(
            Event(
                id=decided_id,
                type="policy.decided",
                parent_id=requested_id,
                decision=decision.effect.value,
                policy_ids=tuple(decision.policy_ids),
                approval_id=consumed,
                detail={
                    "decision_id": decision.id,
                    "reasons": list(decision.reasons),
                    "bundle": decision.bundle,
                    "lifted": list(decision.lifted),
                    "enforcement": call.gateway,
                    "breakglass_id": getattr(breakglass, "id", None),
                    "instance": self.instance,
                },
                **common,
            )
        )
        if breakglass is not None and decision.lifted and not consumed:
            events.append(
                Event(
                    type="breakglass.used",
                    parent_id=decided_id,
                    detail={"breakglass_id": breakglass.id, "lifted": list(decision.lifted)},
                    **common,
                )
            )
        allowed = decision.effect is Effect.ALLOW
        counted: tuple[str, dict[str, int]] | None = None
        if allowed:  # counted now (pending); a decision whose record is refused counts nothing
            counted = (
                t.task_id,
                {"calls": 1, "external_recipients": int(call.facts.get("external_recipients", 0) or 0)},
            )
            self.usage.add(counted[0], **counted[1])
        await self.audit.record_many(events, content=content, usage=counted)
        if self.metrics is not None:
            self.metrics.child(self.metrics.decisions, decision.effect.value, call.gateway).inc()

        approval_id = consumed
        if decision.effect is Effect.APPROVAL_REQUIRED:
            if self.approvals is None:
                raise Unavailable("this call needs approval, and approvals are not available")
            approval = await self.approvals.request(
                decision=decision,
                req=req,
                token=t,
                request_digest=call.request_digest,
                summary=call.summary,
                prompt=call.prompt,
                gateway=call.gateway,
            )
            approval_id = approval.id
        return Verdict(decision, allowed, approval_id, requested_id, decided_id, getattr(breakglass, "id", None))

    async def completed(
        self, call: Call, verdict: Verdict, *, outcome: Mapping[str, Any], event_id: str | None = None
    ) -> None:
        """Record the outcome of a forwarded call (status, size, latency) and count usage (`event_id`: the
        record's id, when the caller has already named it to the client).

        Lazy: the answer has left already, so the record rides in the next decision's commit (or is
        committed alone within a few milliseconds) instead of costing an fsync of its own.
        """
        t = call.token
        deltas = {"items": int(outcome.get("items", 0) or 0), "bytes": int(outcome.get("bytes", 0) or 0)}
        self.usage.add(t.task_id, **deltas)
        await self.audit.record(
            Event(
                type="tool.completed",
                actor=t.agent_id,
                task_id=t.task_id,
                trace_id=call.trace_id,
                parent_id=verdict.decision_event_id,
                agent_id=t.agent_id,
                person_id=t.person_id,
                action=call.action,
                resource=_resource_doc(call.resource),
                request_digest=call.request_digest,
                decision=verdict.decision.effect.value,
                approval_id=verdict.approval_id,
                outcome=dict(outcome),
                id=event_id,
            ),
            lazy=True,
            usage=(t.task_id, deltas),
        )

    async def record(self, event: Event) -> None:
        """Gateways' own security events (leak blocked, budget exceeded, pin changed)."""
        if self.audit is None:
            raise Unavailable("the audit log is not available")
        await self.audit.record(event)

    def _prompt(self, prompt: str | None) -> tuple[str | None, str | None]:
        if prompt is None:
            return None, None
        fields = getattr(self.audit, "prompt_fields", None)
        if fields is not None:
            digest, text = fields(prompt)
            return digest, text
        return self.audit.keyed_digest(prompt.encode()), None

    def _content(
        self, event_id: str, call: Call, req: Any, prompt_text: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Arguments (redacted), prompt and the full decision input, for the erasable content store."""
        from tether.policy import decision_input

        return [(event_id, {"summary": dict(call.summary), "prompt": prompt_text, "input": decision_input(req)})]


def _resource_doc(r: Resource) -> dict[str, Any]:
    return {"type": r.type, "id": r.id, "system": r.system, "sensitivity": r.sensitivity, "owner": r.owner}


__all__ = ["Call", "Enforcer", "TaskUsage", "Verdict"]
