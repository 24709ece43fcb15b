"""The audit log every context writes through: group commit, durable before it returns.

    record(event) ─► queue ─► writer thread: take up to MAX_BATCH events (or what arrived
                                 within WINDOW), one write transaction, chain.append, COMMIT
                   ◄── future resolved with the Receipt once that commit (one fsync) is done

Callers wait only for their own batch. Records that nothing waits on before an effect (a
call's outcome, written after its answer has left) are `lazy`: they still return only once
durable, but they ride in the next commit someone needs at once, or are committed on their own
after LAZY_WINDOW — so an outcome never costs the next call's decision an fsync of its own.
If the transaction fails, every caller in that batch gets `Unavailable` and nothing of the
batch is stored (one transaction); the next batch tries again, so writing resumes when the
store returns.

On SQLite, records made on an event loop skip the thread when they can: they are held until
the loop's current callbacks are done, then committed on the loop in one transaction, if no
other thread or process holds the write lock (else they go to the writer thread, which waits
for it while the loop serves on). The hand-off to a thread and back cost more than the commit
itself at one client; the price is that the loop waits for its own fsync. PostgreSQL, where a
commit is a network round trip, and callers off a loop always use the writer thread.

A record may carry a task's usage deltas (calls, items, bytes, external recipients), added to the
shared `task_usage` counters at most every COUNT_EVERY seconds, summed: on a loop, inside the
commit that finds the count due (with that batch's own deltas); on the writer thread, once its
batch is committed and its callers released, in a transaction that does not wait for the disk
(the counters are derived from the durable events). The new totals go to `usage_sink`, so every
process serving one database counts the same budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tether.audit import chain, keys
from tether.audit.keys import KEYS_BATCH, KEYS_DUE, KEYS_EVERY
from tether.audit.model import Event, Receipt
from tether.crypto import AUDIT_CONTENT_KEY, AUDIT_DIGEST_KEY, derive_key, seal
from tether.errors import Unavailable
from tether.log import get_logger
from tether.store.db import Busy, Database
from tether.store.schema.audit import audit_events
from tether.store.usage import Totals, add_usage, merge

log = get_logger("tether.audit")

MAX_BATCH = 512
WINDOW = 0.002  # at most this long the writer lingers for more events once it has one
GAP = 0.0003  # …and stops lingering when none arrived for this long
LAZY_WINDOW = 0.02  # a batch of only lazy records waits this long for an urgent one to ride with
COUNT_EVERY = 0.05  # committed usage deltas are added to task_usage at most this far apart


#: a task's usage deltas, (task id, counter → amount), counted once the record that carries them is committed
Usage = tuple[str, Mapping[str, int]]
#: told when deltas were counted: the deltas, and the tasks' new (seq, totals) (None: not counted)
UsageSink = Callable[[list[Usage], dict[str, Totals] | None], None]


class _Tick:
    """Wakes the idle writer thread: usage was committed on an event loop and is to be counted."""


_TICK = _Tick()


class _Held:
    """An event loop's records waiting for its next inline commit."""

    __slots__ = ("jobs", "later", "soon")

    def __init__(self) -> None:
        self.jobs: list[_Job] = []
        self.soon = False
        self.later: asyncio.TimerHandle | None = None


class _Job:
    """Events to chain (and content rows to seal) in the next batch; resolved on commit."""

    __slots__ = ("content", "events", "future", "lazy", "loop", "usage")

    def __init__(
        self,
        events: Sequence[Event],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        content: list[tuple[str, dict[str, Any]]] | None = None,
        lazy: bool = False,
        usage: Usage | None = None,
    ) -> None:
        self.events = events
        self.content = content
        self.usage = usage
        self.loop = loop
        self.lazy = lazy or not events  # content-only jobs never hurry a commit
        # an asyncio future for callers on an event loop (resolved in one hop per batch), else a thread future
        self.future: asyncio.Future[list[Receipt]] | Future[list[Receipt]] | None = (
            None if not events else (loop.create_future() if loop is not None else Future())
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(pairs: list[tuple[asyncio.Future[list[Receipt]], list[Receipt] | BaseException]]) -> None:
    for fut, value in pairs:
        if fut.done():
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)


class AuditLog:
    def __init__(
        self,
        db: Database,
        *,
        digest_key: bytes,
        on_commit: Callable[[int], None] | None = None,
        prompt_mode: str = "digest",
        content_key: bytes | None = None,
        lazy_window: float = LAZY_WINDOW,
        inline: bool = True,
    ) -> None:
        self.db = db
        self.lazy_window = lazy_window
        self._digest_key = digest_key
        self.prompt_mode = prompt_mode
        self._content_key = content_key
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Job | _Tick | None] = queue.SimpleQueue()
        # SQLite: a loop's records are committed on the loop itself when no other writer holds the lock
        self._inline = inline and db.is_sqlite and db.writer_lock is not None
        self._held: dict[asyncio.AbstractEventLoop, _Held] = {}
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.listeners: list[Callable[[list[Receipt]], None]] = []
        #: told of counted usage deltas and the new totals (the gateways' TaskUsage)
        self.usage_sink: UsageSink | None = None
        self._uncounted: list[Usage] = []  # committed batches' deltas not yet in task_usage
        self._uncounted_seq = 0
        self._counted_at = float("-inf")  # never counted: the first count is due at once
        self._unkeyed = 0  # events this process committed since it last keyed the chain (`tether.audit.keys`)
        self._keyed_at = float("-inf")

    # ------------------------------------------------------------------ API

    async def record(self, event: Event, *, lazy: bool = False, usage: Usage | None = None) -> Receipt:
        return (await self.record_many([event], lazy=lazy, usage=usage))[0]

    async def record_many(
        self,
        events: Sequence[Event],
        *,
        content: Sequence[tuple[str, dict[str, Any]]] = (),
        lazy: bool = False,
        usage: Usage | None = None,
    ) -> list[Receipt]:
        """Append `events` (contiguous in the chain); returns once they are durable.

        `content` rows (event id, document) go to the sealed content store in the same commit.
        `lazy`: no effect waits on these records, so they may wait up to LAZY_WINDOW for company.
        `usage`: a task's counter deltas, added to `task_usage` once these records are committed.
        """
        loop = asyncio.get_running_loop()
        job = self._job(events, loop, content, lazy=lazy, usage=usage)
        if self._inline:
            self._hold(loop, job)
        else:
            self._to_thread([job])
        fut = job.future
        assert isinstance(fut, asyncio.Future)
        return await fut

    def record_sync(self, events: Sequence[Event]) -> list[Receipt]:
        job = self._job(events, None)
        self._to_thread([job])
        fut = job.future
        assert isinstance(fut, Future)
        return fut.result()

    def prompt_fields(self, prompt: str) -> tuple[str, str | None]:
        """(keyed digest, text to keep in the content store or None) per `prompt_mode`."""
        digest = self.keyed_digest(prompt.encode())
        if self.prompt_mode == "full":
            return digest, prompt
        if self.prompt_mode == "redacted":
            from tether.audit.redact import redact

            return digest, redact(prompt)
        return digest, None

    def store_content(self, event_id: str, content: dict[str, Any]) -> None:
        """Queue `content` for the encrypted, erasable content store (sealed by the writer; not awaited)."""
        if self._content_key is None:
            return
        job = _Job((), content=[(event_id, content)])
        loop = _running_loop()
        if self._inline and loop is not None:
            self._hold(loop, job)  # rides the loop's next commit
        else:
            self._to_thread([job])

    def keyed_digest(self, data: bytes) -> str:
        """HMAC-SHA-256 with the audit key: for prompts and arguments (never a plain hash)."""
        return hmac.new(self._digest_key, data, hashlib.sha256).hexdigest()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._ensure_thread()

    async def stop(self) -> None:
        self._hand_over_held()
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join, 10)
        self._thread = None

    def close(self) -> None:
        self._hand_over_held()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    # ------------------------------------------------------------- internals

    def _job(
        self,
        events: Sequence[Event],
        loop: asyncio.AbstractEventLoop | None,
        content: Sequence[tuple[str, dict[str, Any]]] = (),
        *,
        lazy: bool = False,
        usage: Usage | None = None,
    ) -> _Job:
        if not events:
            raise ValueError("nothing to record")
        self._ensure_thread()
        rows = list(content) if content and self._content_key is not None else None
        return _Job(events, loop=loop, content=rows, lazy=lazy, usage=usage)

    def _to_thread(self, jobs: list[_Job]) -> None:
        """Hand `jobs` to the writer thread (started if it is not running)."""
        if not jobs:
            return
        self._ensure_thread()
        for job in jobs:
            self._queue.put(job)

    # Inline commits. Handing a record to the writer thread and back costs two thread wake-ups (and
    # the GIL changing hands while the loop has work): measured here, a forwarder that committed one
    # SQLite row per call on a thread added 1.6 ms a call, on its event loop 0.7 ms. So a loop's
    # records are held until the loop's current callbacks are done (every call that reached its
    # decision in this turn of the loop joins: group commit without a thread) and then committed on
    # the loop — if no other thread or process holds the write lock. If one does, they go to the
    # writer thread, which waits for the lock and commits them with whatever else arrived meanwhile,
    # while the loop keeps serving. Lazy records are held up to `lazy_window` for an urgent one.

    def _hold(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        held = self._held.get(loop)
        if held is None:
            held = self._held[loop] = _Held()
        held.jobs.append(job)
        if not job.lazy:
            if not held.soon:
                held.soon = True
                loop.call_soon(self._flush, loop)
        elif held.later is None and not held.soon:
            held.later = loop.call_later(self.lazy_window, self._flush, loop)

    def _take(self, loop: asyncio.AbstractEventLoop) -> list[_Job]:
        """The records `loop` holds, its pending flush disarmed (a loop that stops recording leaves nothing)."""
        held = self._held.pop(loop, None)
        if held is None:
            return []
        if held.later is not None:
            held.later.cancel()
        return held.jobs

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._take(loop)
        if not jobs:
            return
        lock = self.db.writer_lock
        if lock is None or not lock.try_acquire():
            if lock is None or not self._wait_for_lock(lock, loop, jobs):
                self._to_thread(jobs)  # another process holds it: the thread waits for it, the loop serves on
            return
        try:
            self._commit(jobs, here=loop)
        except Busy:  # a connection outside the writer lock holds SQLite's: the thread waits for it, not the loop
            self._to_thread(jobs)
        except Exception as exc:  # noqa: BLE001 — never leave a waiter hanging
            self._fail(jobs, exc, here=loop)
        finally:
            lock.release()

    def _wait_for_lock(self, lock: Any, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> bool:
        """If another thread of this process holds the write lock (the writer thread, the checkpoint signer),
        hold `jobs` again and flush when it lets go; False when another process holds it.

        Handing them to the writer thread instead would keep the lock busy longer still: a thread holding
        it waits for the GIL the loop holds, and every inline commit meanwhile would go the same way."""

        def wake() -> None:  # on the releasing thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (its records were handed over)
                loop.call_soon_threadsafe(self._flush, loop)

        if not lock.when_free(wake):
            return False
        held = self._held.get(loop)
        if held is None:
            held = self._held[loop] = _Held()
        held.jobs[:0] = jobs
        held.soon = True  # the wake-up flushes them; records arriving meanwhile need not try the lock
        return True

    def _hand_over_held(self) -> None:
        """Records still held for an inline commit go to the writer thread (stopping: it commits them)."""
        for loop in list(self._held):
            self._to_thread(self._take(loop))

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tether-audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        stopping = False
        linger = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self._count_wait())
            except queue.Empty:  # idle, with committed usage to count
                self._count_due()
                continue
            if first is None:
                break
            if isinstance(first, _Tick):
                continue  # usage committed inline: the next wait is bounded by when it is due
            jobs = [first]
            count = len(first.events)
            urgent = 0 if first.lazy else 1
            # Group commit: take whatever is waiting. Linger for more (up to WINDOW, while arrivals keep
            # coming at least every GAP) only when the last batch showed concurrent callers: a lone
            # caller never waits for company that is not coming. A batch of only lazy records waits up
            # to LAZY_WINDOW for an urgent one, and is committed with it.
            start = time.monotonic()
            deadline = start + WINDOW
            lazy_deadline = start + self.lazy_window
            while count < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    if urgent:
                        if not linger:
                            break
                        remaining = min(deadline - time.monotonic(), GAP)
                    else:
                        remaining = lazy_deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is None:
                    stopping = True
                    break
                if isinstance(nxt, _Tick):
                    continue
                jobs.append(nxt)
                count += len(nxt.events)
                if not nxt.lazy:
                    if not urgent:
                        deadline = time.monotonic() + WINDOW
                    urgent += 1
            linger = urgent > 1
            try:
                self._commit(jobs)
            except Exception as exc:  # noqa: BLE001 — never leave a waiter hanging, never let the writer die
                self._fail(jobs, exc)
            self._count_due()
        self._count_due(stopping=True)  # nothing is left uncounted

    def _commit(self, jobs: list[_Job], *, here: asyncio.AbstractEventLoop | None = None) -> None:
        """Chain and commit `jobs` in one transaction and resolve their callers (`here`: on that loop,
        without waiting for a lock held by a connection outside Tether's writer lock: `Busy`)."""
        events = [e for j in jobs for e in j.events]
        content = self._sealed([c for j in jobs if j.content for c in j.content])
        usage = [j.usage for j in jobs if j.usage is not None]
        # On the loop, usage due to be counted is counted in this very transaction: the writer thread would
        # hold the write lock for a transaction of its own while it waits for the GIL the loop holds, and
        # every inline commit meanwhile would have to go to the thread.
        earlier = self._take_due() if here is not None and events and (usage or self._uncounted) else None
        counting = merge(earlier + usage) if earlier is not None else None
        totals: dict[str, Totals] | None = None
        keyed = 0
        now = time.monotonic()
        keying = bool(events) and (
            self._unkeyed + len(events) >= KEYS_DUE or now - self._keyed_at >= KEYS_EVERY
        )  # fmt: skip
        try:
            with self.db.raw_write(wait=here is None) as cur:
                postgres = not self.db.is_sqlite
                # content rides in its event's row; content for an event of an earlier batch fills that row
                ids = {e.id for e in events} if content else set()
                records = chain.append_raw(cur, postgres=postgres, events=events, content=content)
                if keying:  # the lookup keys of recent events, in one batch (most commits touch no index page)
                    keyed = keys.catch_up_raw(cur)
                later = [(blob, eid) for eid, blob in content.items() if eid not in ids] if content else None
                if later:
                    cur.executemany(_CONTENT_PG if postgres else _CONTENT_SQLITE, later)
                if counting:
                    totals = add_usage(cur, postgres=postgres, seq=records[-1].seq, deltas=counting)
        except Exception as exc:  # every waiter learns the batch failed; the writer lives on
            if earlier:  # committed before: counted later, by whoever counts next
                self._put_back(earlier)
            if isinstance(exc, Busy):
                raise  # nothing was written: the caller hands the batch to the writer thread
            if self._renamed_taken(jobs, exc):
                self._commit(jobs, here=here)  # once more: the events it renamed cannot collide again
                return
            if isinstance(exc, (TypeError, ValueError, RecursionError)) and self._drop_unencodable(jobs, here):
                return
            err = exc if isinstance(exc, Unavailable) else Unavailable(f"audit write failed: {type(exc).__name__}")
            self._tell_usage(usage, None)
            self._settle(jobs, None, err, here=here)
            with contextlib.suppress(Exception):  # a broken log sink must not kill the writer
                log.error("audit batch failed", events=len(events), error=repr(exc))
            return
        receipts = [Receipt(r.seq, r.id, r.hash) for r in records]
        if keying and keyed < KEYS_BATCH:
            self._unkeyed, self._keyed_at = 0, now
        elif keying:  # a tail longer than one batch: the next commit keys on
            self._unkeyed = KEYS_DUE
        else:
            self._unkeyed += len(records)
        self._settle(jobs, receipts, None, here=here)
        if totals is not None:
            self._tell_usage((earlier or []) + usage, totals)
        elif usage and records:
            with self._count_lock:
                first = not self._uncounted
                self._uncounted.extend(usage)
                self._uncounted_seq = max(self._uncounted_seq, records[-1].seq)
            if first and here is not None:
                self._queue.put(_TICK)  # the writer thread may be waiting without a deadline
        if not receipts:
            return
        if self._on_commit is not None:
            self._on_commit(len(receipts))
        for listener in self.listeners:
            try:
                listener(receipts)
            except Exception as exc:  # noqa: BLE001 — a listener (checkpointer) must not break the writer
                with contextlib.suppress(Exception):
                    log.error("audit listener failed", error=repr(exc))

    def _renamed_taken(self, jobs: list[_Job], exc: BaseException) -> bool:
        """After a batch broke a unique constraint: its events named in advance whose id the log holds already
        get ids of their own, `detail.result_id` naming the one they were given; True when one did.

        An MCP result's `tool.completed` is named before it is written (its id went to the client with the
        result, `tether.audit.results`). If recovery took its process for gone meanwhile (a heartbeat older
        than the live window: a stalled writer, skewed clocks), it wrote the call's outcome "unknown" under
        that very id; the late, real outcome is kept beside it instead of failing every call of its batch."""
        named = [e.id for j in jobs for e in j.events if e.id]
        if not named or not _unique_violation(exc, self.db):
            return False
        try:
            with self.db.read() as conn:
                taken = set(conn.execute(select(audit_events.c.id).where(audit_events.c.id.in_(named))).scalars())
        except Exception:  # noqa: BLE001 — the batch fails as it would have
            return False
        if not taken:
            return False
        for job in jobs:
            if any(e.id in taken for e in job.events):
                job.events = [
                    replace(e, id=None, detail={**e.detail, "result_id": e.id}) if e.id in taken else e
                    for e in job.events
                ]
                if job.content:  # content never follows a renamed event to the row that holds its old id
                    job.content = [c for c in job.content if c[0] not in taken]
        with contextlib.suppress(Exception):
            log.warning("audit events renamed: their ids were taken", ids=sorted(taken))
        return True

    def _fail(self, jobs: list[_Job], exc: Exception, *, here: asyncio.AbstractEventLoop | None = None) -> None:
        """An unexpected error while committing `jobs`: every caller learns it, and it is logged."""
        with contextlib.suppress(Exception):
            self._settle(jobs, None, Unavailable(f"audit writer error: {type(exc).__name__}"), here=here)
        with contextlib.suppress(Exception):
            log.error("audit writer error", events=sum(len(j.events) for j in jobs), error=repr(exc))

    def _drop_unencodable(self, jobs: list[_Job], here: asyncio.AbstractEventLoop | None = None) -> bool:
        """After a batch failed to encode: refuse the jobs holding an event that cannot be chained (text that
        is not valid Unicode, say) and commit the others, so one caller's bad record never fails its
        neighbours. False when no job is to blame (the batch failed for another reason)."""
        bad = [j for j in jobs if not all(map(chain.encodable, j.events))]
        if not bad:
            return False
        self._tell_usage([j.usage for j in bad if j.usage is not None], None)
        self._settle(bad, None, Unavailable("the audit record cannot be encoded (invalid text): refused"), here=here)
        with contextlib.suppress(Exception):
            log.error("audit records refused: not encodable", events=sum(len(j.events) for j in bad))
        rest = [j for j in jobs if j not in bad]
        if rest:
            self._commit(rest, here=here)
        return True

    def _take_due(self) -> list[Usage] | None:
        """If counting is due, the committed deltas not yet counted (taken: whoever takes them counts them)."""
        if time.monotonic() - self._counted_at < COUNT_EVERY:
            return None
        with self._count_lock:
            if time.monotonic() - self._counted_at < COUNT_EVERY:
                return None
            taken, self._uncounted = self._uncounted, []
            self._counted_at = time.monotonic()
        return taken

    def _put_back(self, usage: list[Usage]) -> None:
        """Deltas taken for counting in a transaction that failed: back in line for the next count."""
        with self._count_lock:
            self._uncounted[:0] = usage

    def _count_wait(self) -> float | None:
        """How long the idle writer may wait for work before committed usage is due to be counted."""
        if not self._uncounted:
            return None
        return max(0.0, self._counted_at + self._thread_every() - time.monotonic())

    def _thread_every(self) -> float:
        """How far apart the writer thread counts: with inline commits it leaves the count to the loop's
        next commit, and counts only when a whole further period passed without one (the loop went quiet)."""
        return COUNT_EVERY * 2 if self._inline else COUNT_EVERY

    def _count_due(self, *, stopping: bool = False) -> None:
        """Count the committed batches' usage at most every COUNT_EVERY seconds (and when stopping).

        Not after every commit: at a few calls a second that would be a second transaction per call on
        the writer, taking the GIL and the write lock while the calls it serves are being forwarded.
        """
        due = stopping or time.monotonic() - self._counted_at >= self._thread_every()
        with self._count_lock:
            if not self._uncounted or not due:
                return
            usage, self._uncounted = self._uncounted, []
            seq = self._uncounted_seq
            self._counted_at = time.monotonic()
        self._count(usage, seq)

    def _count(self, usage: list[Usage], seq: int) -> None:
        """Add committed batches' usage deltas to `task_usage`, after their callers were released.

        The counters are derived from what the batches made durable (their outcomes and decisions),
        so their transaction does not wait for the disk: it costs the callers nothing, and the next
        durable commit carries it to the disk with itself. A crash in between loses these deltas
        from the counters (never from the chain). Batches' deltas are summed into one
        such transaction every COUNT_EVERY seconds, so the writer spends its time on the chain.
        """
        try:
            with self.db.raw_write(durable=False) as cur:
                totals = add_usage(cur, postgres=not self.db.is_sqlite, seq=seq, deltas=merge(usage))
        except Exception as exc:  # noqa: BLE001 — the events are committed; only the counters missed them
            with contextlib.suppress(Exception):
                log.error("task usage not counted", tasks=len(usage), error=repr(exc))
            self._tell_usage(usage, None)
            return
        self._tell_usage(usage, totals)

    def _tell_usage(self, usage: list[Usage], totals: dict[str, Totals] | None) -> None:
        if not usage or self.usage_sink is None:
            return
        try:
            self.usage_sink(usage, totals)
        except Exception as exc:  # noqa: BLE001 — counting must not break the writer
            with contextlib.suppress(Exception):
                log.error("usage sink failed", error=repr(exc))

    @staticmethod
    def _settle(
        jobs: list[_Job], receipts: list[Receipt] | None, err: BaseException | None,
        *, here: asyncio.AbstractEventLoop | None = None,
    ) -> None:  # fmt: skip
        """Resolve every waiter: thread futures and those of the loop we run on (`here`) directly, other
        loops' futures in one hop per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        i = 0
        for j in jobs:
            n = len(j.events)
            value: list[Receipt] | BaseException = err if err is not None else receipts[i : i + n]  # type: ignore[index]
            i += n
            fut = j.future
            if fut is None:
                continue
            if j.loop is not None:
                by_loop.setdefault(j.loop, []).append((fut, value))
            elif isinstance(fut, Future) and not fut.done():
                with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                    if isinstance(value, BaseException):
                        fut.set_exception(value)
                    else:
                        fut.set_result(value)
        for loop, pairs in by_loop.items():
            if loop is here:
                _resolve(pairs)
                continue
            with contextlib.suppress(RuntimeError):  # the loop closed while its callers waited
                loop.call_soon_threadsafe(_resolve, pairs)

    def _sealed(self, content: list[tuple[str, dict[str, Any]]]) -> dict[str, bytes]:
        """Event id → AES-GCM blob (the first content given for an id); content that cannot be encoded is
        dropped (logged), never the chain."""
        if not content or self._content_key is None:
            return {}
        rows: dict[str, bytes] = {}
        for event_id, doc in content:
            try:
                blob = seal(self._content_key, _content_json(doc), event_id.encode())
            except Exception as exc:  # noqa: BLE001
                log.error("audit content not kept", event_id=event_id, error=repr(exc))
                continue
            rows.setdefault(event_id, blob)
        return rows


def _unique_violation(exc: BaseException, db: Database) -> bool:
    """Whether `exc` (or what caused it) is the database refusing a duplicate key."""
    integrity = (db.engine.dialect.loaded_dbapi.IntegrityError, IntegrityError)
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, integrity):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _content_json(doc: dict[str, Any]) -> bytes:
    """The content as JSON. Nothing hashes it, so not RFC 8785: orjson, and for what orjson refuses
    (integers past 64 bits, text with lone surrogates) the standard encoder with escapes, which keeps
    them — the content of a call is never dropped for the shape of its arguments."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()


#: content for an event committed before: kept unless the event has (or had) content already
_CONTENT_SQLITE = "UPDATE audit_events SET content = ? WHERE id = ? AND content IS NULL AND content_erased_at IS NULL"
_CONTENT_PG = "UPDATE audit_events SET content = %s WHERE id = %s AND content IS NULL AND content_erased_at IS NULL"


def audit_key(master_key: bytes) -> bytes:
    """The HMAC key for digests of personal data, derived from the master key."""
    return derive_key(master_key, AUDIT_DIGEST_KEY)


def content_key(master_key: bytes) -> bytes:
    """The AES-GCM key of the erasable content store, derived from the master key."""
    return derive_key(master_key, AUDIT_CONTENT_KEY)


__all__ = ["AuditLog", "audit_key", "content_key"]

_ = Any
