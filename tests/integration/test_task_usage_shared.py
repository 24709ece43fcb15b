"""Task budgets are one set of counters for the whole service, not one per server process.

Two `Services` on one database stand in for two `tether serve` processes: each has its own
audit writer and its own view of the counters, as separate processes would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tether.api.wiring import Services, build_services
from tether.audit import log as audit_log
from tether.audit.model import Event
from tether.config import Settings
from tether.errors import Unavailable
from tether.gateway._enforce import TaskUsage
from tether.store.schema.gateway import task_usage


@pytest.fixture(autouse=True)
def _count_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage is counted after every commit here (the writer normally sums 50 ms of commits), so one more
    record is enough to wait for it; `test_usage_is_counted_soon_without_more_traffic` covers the wait."""
    monkeypatch.setattr(audit_log, "COUNT_EVERY", 0.0)


@pytest.fixture
def pair(settings: Settings) -> Iterator[tuple[Services, Services]]:
    a, b = build_services(settings, migrate=False), build_services(settings, migrate=False)
    yield a, b
    a.close()
    b.close()


def _usage(svc: Services) -> TaskUsage:
    assert svc.enforcer is not None
    return svc.enforcer.usage


def _count(svc: Services, task: str, **deltas: int) -> None:
    """What the gateways do for a call: count now, commit the deltas with the call's record."""
    usage = _usage(svc)
    usage.add(task, **deltas)
    assert svc.audit is not None
    asyncio.run(svc.audit.record(Event(type="tool.completed", task_id=task), usage=(task, deltas)))
    _settled(svc)


def _settled(svc: Services) -> None:
    """The counters are added after a batch's callers are released: one more record waits that out."""
    assert svc.audit is not None
    asyncio.run(svc.audit.record(Event(type="test.flush")))


def test_a_second_process_sees_the_budget_the_first_one_used(pair: tuple[Services, Services]) -> None:
    a, b = pair
    _count(a, "tsk_1", items=480, bytes=9000, calls=3)
    assert _usage(a).of("tsk_1") == {"items": 480, "bytes": 9000, "calls": 3, "external_recipients": 0}

    asyncio.run(_usage(b).ensure("tsk_1"))
    assert _usage(b).of("tsk_1")["items"] == 480

    _count(b, "tsk_1", items=25, calls=1)
    assert _usage(b).of("tsk_1")["items"] == 505
    # The first process learns the service-wide total with its next commit for the task.
    _count(a, "tsk_1", calls=1)
    assert _usage(a).of("tsk_1") == {"items": 505, "bytes": 9000, "calls": 5, "external_recipients": 0}

    with a.db.read() as conn:
        row = conn.execute(select(task_usage).where(task_usage.c.task_id == "tsk_1")).one()
    assert (row.items, row.bytes, row.calls) == (505, 9000, 5)


def test_what_another_process_counted_reaches_this_one_by_the_poll(pair: tuple[Services, Services]) -> None:
    """No commit of its own needed: a process that saw the task once learns the other's counts by polling."""
    a, b = pair
    asyncio.run(_usage(b).ensure("tsk_5"))
    _usage(b).poll()  # the watermark
    _count(a, "tsk_5", items=300)
    _count(a, "tsk_6", items=1)  # a task b never saw: not taken in
    assert _usage(b).of("tsk_5")["items"] == 0
    assert _usage(b).poll() == 2
    assert _usage(b).of("tsk_5")["items"] == 300
    assert "tsk_6" not in _usage(b)._base


def test_an_older_reading_never_replaces_a_newer_one(pair: tuple[Services, Services]) -> None:
    a, _ = pair
    usage = _usage(a)
    usage.committed([], {"tsk_7": (20, {"items": 9, "bytes": 0, "calls": 0, "external_recipients": 0})})
    usage.committed([], {"tsk_7": (12, {"items": 4, "bytes": 0, "calls": 0, "external_recipients": 0})})
    assert usage.of("tsk_7")["items"] == 9


def test_two_processes_counting_at_once_lose_no_update(pair: tuple[Services, Services]) -> None:
    """Concurrent batches from two writers on one task: the totals are the exact sum."""
    a, b = pair

    async def burst(svc: Services, n: int) -> None:
        assert svc.audit is not None
        await asyncio.gather(*(
            svc.audit.record(Event(type="tool.completed", task_id="tsk_2"), usage=("tsk_2", {"items": 2, "calls": 1}))
            for _ in range(n)
        ))  # fmt: skip

    async def both() -> None:
        await asyncio.gather(asyncio.to_thread(asyncio.run, burst(a, 60)), asyncio.to_thread(asyncio.run, burst(b, 40)))

    asyncio.run(both())
    _settled(a)
    _settled(b)
    with a.db.read() as conn:
        row = conn.execute(select(task_usage).where(task_usage.c.task_id == "tsk_2")).one()
    assert (row.items, row.calls) == (200, 100)


def test_counts_of_a_record_that_was_not_committed_are_taken_back(pair: tuple[Services, Services]) -> None:
    a, _ = pair
    usage = _usage(a)
    usage.add("tsk_3", calls=1)
    assert a.audit is not None
    bad = Event(type="tool.completed", task_id="tsk_3", detail={"x": "\ud800"})  # not valid Unicode: refused
    with pytest.raises(Unavailable):
        asyncio.run(a.audit.record(bad, usage=("tsk_3", {"calls": 1})))
    assert usage.of("tsk_3")["calls"] == 0
    with a.db.read() as conn:
        assert conn.execute(select(task_usage).where(task_usage.c.task_id == "tsk_3")).first() is None


def test_counts_not_yet_committed_are_in_the_view(pair: tuple[Services, Services]) -> None:
    """Between counting and the commit, this process's own deltas are already part of what it decides on."""
    a, _ = pair
    usage = _usage(a)
    usage.add("tsk_4", items=7)
    assert usage.of("tsk_4")["items"] == 7
    usage.committed(
        [("tsk_4", {"items": 7})], {"tsk_4": (9, {"items": 7, "bytes": 0, "calls": 0, "external_recipients": 0})}
    )
    assert usage.of("tsk_4")["items"] == 7  # not counted twice


def test_many_first_calls_of_a_task_read_its_totals_once(pair: tuple[Services, Services]) -> None:
    a, b = pair
    _count(a, "tsk_8", items=42)
    usage = _usage(b)
    reads: list[str] = []
    load = usage._load
    assert load is not None

    def counting(task_id: str) -> tuple[int, dict[str, int]]:
        reads.append(task_id)
        return load(task_id)

    usage._load = counting

    async def burst() -> None:
        await asyncio.gather(*(usage.ensure("tsk_8") for _ in range(20)))

    asyncio.run(burst())
    assert reads == ["tsk_8"]
    assert usage.of("tsk_8")["items"] == 42


def test_usage_committed_before_the_writer_stops_is_counted(pair: tuple[Services, Services]) -> None:
    a, _ = pair
    assert a.audit is not None
    audit = a.audit

    async def run() -> None:
        await asyncio.gather(*(
            audit.record(Event(type="tool.completed", task_id="tsk_9"), usage=("tsk_9", {"bytes": 10}))
            for _ in range(30)
        ))  # fmt: skip
        await audit.stop()

    asyncio.run(run())
    with a.db.read() as conn:
        row = conn.execute(select(task_usage).where(task_usage.c.task_id == "tsk_9")).one()
    assert row.bytes == 300


def test_a_process_forgets_old_tasks_past_its_bound_and_reads_them_again(
    pair: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tether.gateway._enforce as enforce

    a, b = pair
    _count(a, "tsk_old", items=7)
    monkeypatch.setattr(enforce, "MAX_TASKS", 4)
    usage = _usage(b)

    async def see(*tasks: str) -> None:
        for t in tasks:
            await usage.ensure(t)

    asyncio.run(see("tsk_old", "t1", "t2", "t3", "t4"))
    assert "tsk_old" not in usage._base  # forgotten: the oldest seen
    asyncio.run(see("tsk_old"))
    assert usage.of("tsk_old")["items"] == 7  # read again from the database


def test_usage_is_counted_soon_without_more_traffic(
    pair: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer sums usage over COUNT_EVERY; an idle writer still counts what it committed, unprompted."""
    monkeypatch.setattr(audit_log, "COUNT_EVERY", 0.2)
    a, b = pair
    asyncio.run(_usage(b).ensure("tsk_9"))
    _usage(b).poll()
    usage = _usage(a)
    usage.add("tsk_9", items=7)
    assert a.audit is not None
    asyncio.run(a.audit.record(Event(type="tool.completed", task_id="tsk_9"), usage=("tsk_9", {"items": 7})))
    asyncio.run(a.audit.record(Event(type="tool.completed", task_id="tsk_9"), usage=("tsk_9", {"items": 3})))
    usage.add("tsk_9", items=3)
    deadline = time.monotonic() + 5
    while _usage(b).of("tsk_9")["items"] < 10 and time.monotonic() < deadline:
        _usage(b).poll()
        time.sleep(0.02)
    # the second commit came within COUNT_EVERY of the first one's count: the idle writer counted it later
    assert _usage(b).of("tsk_9")["items"] == 10
    with a.db.read() as conn:
        assert conn.execute(select(task_usage.c["items"]).where(task_usage.c.task_id == "tsk_9")).scalar_one() == 10


def test_a_count_of_an_older_batch_made_later_still_reaches_the_pollers(pair: tuple[Services, Services]) -> None:
    """Counts run apart from the commits they count: one process may count a batch committed at an older seq
    after another counted a newer one. Its stamp still rises past every earlier stamp, so the poll sees it."""
    from tether.store.usage import add_usage

    a, b = pair
    asyncio.run(_usage(b).ensure("tsk_old"))
    _usage(b).poll()  # the watermark
    postgres = not a.db.is_sqlite
    with a.db.raw_write() as cur:
        add_usage(cur, postgres=postgres, seq=100, deltas={"tsk_other": {"items": 1}})
    assert _usage(b).poll() == 1  # the watermark is now at that stamp
    with a.db.raw_write() as cur:
        stamped = add_usage(cur, postgres=postgres, seq=50, deltas={"tsk_old": {"items": 7}})
    assert stamped["tsk_old"][0] > 100
    assert _usage(b).poll() == 1
    assert _usage(b).of("tsk_old")["items"] == 7
