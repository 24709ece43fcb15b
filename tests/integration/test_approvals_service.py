"""Approval requests, one-time grants, four eyes and break-glass, on both backends."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.approvals_world import make_world, pending, request_for
from tether.approvals import (
    ApprovalClosed,
    ApprovalInvalid,
    ApprovalStatus,
    BreakglassInvalid,
    BreakglassRefused,
    NotAnApprover,
)
from tether.errors import Conflict
from tether.store.schema.approvals import approvals as approvals_table
from tether.store.schema.audit import audit_events
from tether.types import utcnow


@pytest.fixture
def world(services):
    return make_world(services)


def _events(services, kind):
    with services.db.read() as conn:
        rows = conn.execute(
            select(audit_events.c.body).where(audit_events.c.type == kind).order_by(audit_events.c.seq)
        ).all()
    return [json.loads(r.body) for r in rows]


async def test_request_records_full_context_and_audits_in_one_transaction(world):
    """A pending approval keeps who, what, why and the digest; approval.requested names them."""
    a = await pending(world)
    assert a.status is ApprovalStatus.PENDING
    got = world.services.approvals.get(a.id)
    assert (got.agent_id, got.person_id, got.sponsor_id, got.task_id) == (
        world.agent,
        world.person,
        world.sponsor,
        world.task,
    )
    assert got.summary == {"to": ["partner@external.example"], "subject": "Q3 report"}
    assert got.prompt == "send the report"
    assert got.forbid_ids == ("confidential-external-send",)
    assert got.expires_at - got.created_at == timedelta(seconds=900)
    (ev,) = _events(world.services, "approval.requested")
    assert ev["approval_id"] == a.id
    assert ev["request_digest"] == a.request_digest
    assert ev["sponsor_id"] == world.sponsor
    assert ev["detail"]["approver"] == "sponsor"


async def test_prompt_is_sealed_at_rest(world):
    """The prompt is not stored in clear text in the approvals table."""
    a = await pending(world, prompt="secret plan for the merger")
    with world.services.db.read() as conn:
        blob = conn.execute(select(approvals_table.c.prompt_sealed).where(approvals_table.c.id == a.id)).scalar_one()
    assert b"merger" not in bytes(blob)


async def test_approved_request_is_used_exactly_once(world):
    """consume lifts the recorded forbids once; a replay of the same approval is refused."""
    svc = world.services.approvals
    a = await pending(world)
    await svc.decide(world.sponsor, a.id, approve=True, reason="expected report")
    lifted = await svc.consume(a.id, task_id=world.task, request_digest=a.request_digest)
    assert lifted == frozenset({"confidential-external-send"})
    assert svc.get(a.id).status is ApprovalStatus.USED
    with pytest.raises(ApprovalInvalid) as exc:
        await svc.consume(a.id, task_id=world.task, request_digest=a.request_digest)
    assert exc.value.status == 403
    assert exc.value.code == "approval_invalid"
    assert exc.value.extra["why"] == "already_used"
    assert len(_events(world.services, "approval.used")) == 1
    assert [e["detail"]["why"] for e in _events(world.services, "approval.refused")] == ["already_used"]


async def test_approval_for_other_arguments_is_refused(world):
    """An approval made for one recipient does not authorise a call with another."""
    svc = world.services.approvals
    a = await pending(world)
    await svc.decide(world.sponsor, a.id, approve=True, reason="ok")
    _, other_digest = request_for(world, to="attacker@evil.example")
    with pytest.raises(ApprovalInvalid) as exc:
        await svc.consume(a.id, task_id=world.task, request_digest=other_digest)
    assert exc.value.extra["why"] == "other_request"
    assert svc.get(a.id).status is ApprovalStatus.APPROVED  # still usable by the exact request


async def test_approval_from_another_task_is_refused(world):
    """An approval is bound to its task: the same digest under another task is refused."""
    svc = world.services.approvals
    a = await pending(world)
    await svc.decide(world.sponsor, a.id, approve=True, reason="ok")
    with pytest.raises(ApprovalInvalid) as exc:
        await svc.consume(a.id, task_id=world.other_task, request_digest=a.request_digest)
    assert exc.value.extra["why"] == "unknown"


async def test_expired_approval_is_refused(world):
    """An approval past its expiry cannot be used, nor decided."""
    svc = world.services.approvals
    a, b = await pending(world), await pending(world)
    await svc.decide(world.sponsor, a.id, approve=True, reason="ok")
    svc.clock = lambda: utcnow() + timedelta(seconds=901)
    with pytest.raises(ApprovalInvalid) as exc:
        await svc.consume(a.id, task_id=world.task, request_digest=a.request_digest)
    assert exc.value.extra["why"] == "expired"
    with pytest.raises(ApprovalClosed):
        await svc.decide(world.sponsor, b.id, approve=True, reason="late")
    assert svc.expire_due() == 2
    assert svc.get(b.id).status is ApprovalStatus.EXPIRED


async def test_pending_or_denied_approval_is_refused(world):
    """Only an approved request can be consumed; a denial stays a denial."""
    svc = world.services.approvals
    a = await pending(world)
    with pytest.raises(ApprovalInvalid):
        await svc.consume(a.id, task_id=world.task, request_digest=a.request_digest)
    await svc.decide(world.sponsor, a.id, approve=False, reason="not to that partner")
    with pytest.raises(ApprovalInvalid) as exc:
        await svc.consume(a.id, task_id=world.task, request_digest=a.request_digest)
    assert exc.value.extra["why"] == "denied"
    with pytest.raises(ApprovalClosed):
        await svc.decide(world.sponsor, a.id, approve=True, reason="changed my mind")


async def test_sponsor_rule_refuses_everyone_else(world):
    """Under the default rule only the agent's sponsor decides; the agent never does."""
    svc = world.services.approvals
    a = await pending(world, approver=None)
    assert a.approver_rule == "sponsor"
    for who in (world.outsider, world.person, world.agent):
        with pytest.raises(NotAnApprover):
            await svc.decide(who, a.id, approve=True, reason="let me")
    await svc.decide(world.sponsor, a.id, approve=True, reason="fine")


async def test_four_eyes_refuses_the_tasks_person_and_the_sponsor(world):
    """@approver("not-self"): neither the person nor the sponsor may approve; a third approver may."""
    svc = world.services.approvals
    a = await pending(world, approver="not-self")
    for who in (world.person, world.sponsor):
        with pytest.raises(NotAnApprover, match="four eyes"):
            await svc.decide(who, a.id, approve=True, reason="my own agent")
    decided = await svc.decide(world.outsider, a.id, approve=True, reason="checked")
    assert decided.decided_by == world.outsider
    (ev,) = _events(world.services, "approval.decided")
    assert ev["actor"] == world.outsider
    assert ev["decision"] == "approved"


async def test_group_rule_needs_membership(world):
    """@approver("group:security"): a member decides, a non-member approver is refused."""
    svc = world.services.approvals
    a = await pending(world, approver="group:security")
    with pytest.raises(NotAnApprover):
        await svc.decide(world.sponsor, a.id, approve=True, reason="I sponsor it")
    await svc.decide(world.security, a.id, approve=True, reason="reviewed")


async def test_unknown_approver_rule_fails_closed(world):
    """A rule Tether does not know lets nobody decide."""
    a = await pending(world, approver="anyone")
    with pytest.raises(NotAnApprover, match="unknown approver rule"):
        await world.services.approvals.decide(world.sponsor, a.id, approve=True, reason="ok")


async def test_deprovisioned_sponsor_cannot_decide(world):
    """A decider must be active."""
    a = await pending(world)
    world.services.identity.deprovision_person("system", world.sponsor)
    with pytest.raises(NotAnApprover):
        await world.services.approvals.decide(world.sponsor, a.id, approve=True, reason="ok")


async def test_wait_returns_when_decided(world):
    """wait() returns the decision once it is made, and pending at the timeout."""
    import asyncio

    svc = world.services.approvals
    a = await pending(world)
    assert await svc.wait(a.id, 0.05) is ApprovalStatus.PENDING
    waiter = asyncio.create_task(svc.wait(a.id, 10))
    await asyncio.sleep(0.05)
    await svc.decide(world.sponsor, a.id, approve=True, reason="ok")
    assert await asyncio.wait_for(waiter, 5) is ApprovalStatus.APPROVED


async def test_breakglass_needs_role_justification_and_bounded_duration(world):
    """Break-glass: breakglass role only, a real justification, at most the configured duration."""
    svc = world.services.approvals
    with pytest.raises(BreakglassRefused):
        await svc.start_breakglass(world.sponsor, agent_id=world.agent, task_id=None,
                                   justification="outage in the mail flow", duration=600)  # fmt: skip
    with pytest.raises(BreakglassInvalid):
        await svc.start_breakglass(
            world.breakglass, agent_id=world.agent, task_id=None, justification="x", duration=600
        )
    with pytest.raises(BreakglassInvalid):
        await svc.start_breakglass(world.breakglass, agent_id=world.agent, task_id=None,
                                   justification="outage in the mail flow", duration=3601)  # fmt: skip
    assert svc.breakglass_for(world.agent, world.task) is None


async def test_breakglass_for_one_task_covers_only_that_task_until_it_expires(world):
    """A task-scoped grant covers that task only; it lapses at its expiry, with no database read."""
    svc = world.services.approvals
    bg = await svc.start_breakglass(world.breakglass, agent_id=world.agent, task_id=world.task,
                                    justification="customer escalation, CEO asked", duration=120)  # fmt: skip
    assert svc.breakglass_for(world.agent, world.task) == bg
    assert svc.breakglass_for(world.agent, world.other_task) is None
    (ev,) = _events(world.services, "breakglass.started")
    assert ev["detail"]["justification"] == "customer escalation, CEO asked"
    world.services.db.dispose()  # the hot path must not need the database
    assert svc.breakglass_for(world.agent, world.task) is not None
    svc.clock = lambda: utcnow() + timedelta(seconds=121)
    assert svc.breakglass_for(world.agent, world.task) is None


async def test_breakglass_for_a_task_of_another_agent_is_refused(world):
    """The task must belong to the agent named."""
    svc = world.services.approvals
    other = world.services.identity.create_agent("system", name="Other", sponsor_id=world.sponsor,
                                                 owner_team="platform", purpose="x", ceiling=["mail:read"])  # fmt: skip
    with pytest.raises(BreakglassInvalid):
        await svc.start_breakglass(world.breakglass, agent_id=other.id, task_id=world.task,
                                   justification="outage in the mail flow", duration=60)  # fmt: skip


async def test_breakglass_review_needs_a_second_person(world):
    """The invoker cannot close their own review; a second person can, once."""
    svc = world.services.approvals
    bg = await svc.start_breakglass(world.breakglass, agent_id=world.agent, task_id=None,
                                    justification="outage in the mail flow", duration=300)  # fmt: skip
    with pytest.raises(BreakglassRefused, match="second person"):
        await svc.review_breakglass(world.breakglass, bg.id, note="all fine")
    closed = await svc.review_breakglass(world.security, bg.id, note="checked the log: justified")
    assert closed.review_status.value == "closed"
    assert closed.reviewed_by == world.security
    with pytest.raises(Conflict):
        await svc.review_breakglass(world.outsider, bg.id, note="again")
    ended = await svc.end_breakglass(world.breakglass, bg.id)
    assert ended.ended_at is not None
    assert svc.breakglass_for(world.agent, world.task) is None


async def test_list_paginates_and_filters(world):
    """list_approvals pages newest first and filters by status."""
    svc = world.services.approvals
    ids = [(await pending(world)).id for _ in range(5)]
    await svc.decide(world.sponsor, ids[0], approve=False, reason="no")
    page1 = svc.list_approvals(limit=2)
    page2 = svc.list_approvals(limit=2, after=page1.next_cursor)
    page3 = svc.list_approvals(limit=2, after=page2.next_cursor)
    seen = [a.id for a in page1.items + page2.items + page3.items]
    assert sorted(seen) == sorted(ids)
    assert len(set(seen)) == 5
    assert page3.next_cursor is None
    assert [a.id for a in svc.list_approvals(status="denied").items] == [ids[0]]


async def test_concurrent_uses_of_one_approval_let_exactly_one_through(world):
    """Eight racing retries of the same approved request: one consume wins, seven are refused."""
    import concurrent.futures

    svc = world.services.approvals
    a = await pending(world)
    await svc.decide(world.sponsor, a.id, approve=True, reason="ok")

    def attempt() -> bool:
        try:
            svc.consume_sync(a.id, task_id=world.task, request_digest=a.request_digest)
        except ApprovalInvalid:
            return False
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: attempt(), range(8)))
    assert results.count(True) == 1
    assert len(_events(world.services, "approval.used")) == 1


async def test_another_process_sees_a_breakglass_grant_after_its_refresh(world, settings):
    """A second server process picks up a grant from the table on its watcher's next refresh."""
    from tether.api.wiring import build_services

    other = build_services(settings, migrate=False)
    try:
        assert other.approvals.breakglass_for(world.agent, world.task) is None
        await world.services.approvals.start_breakglass(
            world.breakglass, agent_id=world.agent, task_id=None, justification="outage in the mail flow", duration=60
        )
        other.approvals.refresh_breakglass()
        assert other.approvals.breakglass_for(world.agent, world.task) is not None
    finally:
        other.close()
