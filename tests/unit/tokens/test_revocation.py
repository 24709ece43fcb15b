"""The revocation cache: what each kind revokes, out-of-order sequence numbers, staleness."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.tokens.ports import RevocationRow
from tether.tokens.revocation import HORIZON, SESSION_HORIZON, SESSION_KIND, RevocationState, RevocationWatcher

NOW = datetime.now(UTC)


def why(state: RevocationState, **kw: Any) -> str | None:
    args: dict[str, Any] = {"jti": "j", "task_id": "t", "person_id": "p", "actors": ("b", "a"),
                            "delegation_id": "d", "iat": int(NOW.timestamp())}  # fmt: skip
    args.update(kw)
    return state.why_revoked(**args)


def test_each_kind_revokes_its_tokens() -> None:
    """jti and task always; person, any actor and delegation for tokens issued up to the revocation."""
    for kind, subject, reason in [("jti", "j", "token revoked"), ("task", "t", "task ended"),
                                  ("person", "p", "person revoked"), ("agent", "a", "agent a revoked"),
                                  ("delegation", "d", "delegation revoked")]:  # fmt: skip
        s = RevocationState()
        s.apply([RevocationRow(1, kind, subject, NOW)])
        assert why(s) == reason


def test_agent_revocation_spares_tokens_issued_after_it() -> None:
    """A resumed agent's later tokens are not caught by its earlier suspension."""
    s = RevocationState()
    s.apply([RevocationRow(1, "agent", "a", NOW - timedelta(seconds=60))])
    assert why(s) is None
    assert why(s, iat=int(NOW.timestamp()) - 120) == "agent a revoked"


def test_ended_sessions_outlive_token_revocations_but_not_the_longest_task() -> None:
    """An ended MCP session is remembered for SESSION_HORIZON (a session lives as long as its task, past the
    hour a token lives); everything else for HORIZON."""
    s = RevocationState()
    old = NOW - HORIZON - timedelta(minutes=5)
    s.apply([RevocationRow(1, SESSION_KIND, "k-old", old), RevocationRow(2, "task", "t", old),
             RevocationRow(3, SESSION_KIND, "k-ancient", NOW - SESSION_HORIZON - timedelta(minutes=1))])  # fmt: skip
    assert set(s.session) == {"k-old", "k-ancient"}
    assert why(s) == "task ended"
    s.prune((NOW - HORIZON).timestamp(), (NOW - SESSION_HORIZON).timestamp())
    assert set(s.session) == {"k-old"}
    assert why(s) is None
    assert not s.task
    s.prune((NOW - HORIZON).timestamp())  # without a session horizon, sessions age like the rest
    assert not s.session


def test_a_new_watcher_loads_sessions_ended_before_the_token_horizon() -> None:
    """A process started now still refuses a session ended two hours ago (its task may be alive)."""
    store = FakeStore()
    store.rows += [RevocationRow(1, SESSION_KIND, "k", NOW - timedelta(hours=2)),
                   RevocationRow(2, "task", "t-old", NOW - timedelta(hours=2))]  # fmt: skip
    state = RevocationState()
    RevocationWatcher(store, state).refresh()  # type: ignore[arg-type]
    assert "k" in state.session
    assert "t-old" not in state.task  # no token of that age is alive to refuse


def test_keyring_rows_ask_for_a_reload() -> None:
    """A `keyring` row revokes nothing and signals a key-ring reload."""
    s = RevocationState()
    assert s.apply([RevocationRow(1, "keyring", "kid", NOW)]) is True
    assert why(s) is None


class FakeRepo:
    def __init__(self, rows: list[RevocationRow]) -> None:
        self.rows = rows

    def revocations_after(
        self, seq: int, since: datetime, *, kept_longer: Mapping[str, datetime] | None = None
    ) -> list[RevocationRow]:
        def recent(r: RevocationRow) -> bool:
            longer = (kept_longer or {}).get(r.kind)
            return r.created_at >= since or (longer is not None and r.created_at >= longer)

        return sorted((r for r in self.rows if r.seq > seq and recent(r)), key=lambda r: r.seq)


class FakeStore:
    def __init__(self) -> None:
        self.rows: list[RevocationRow] = []

    @contextmanager
    def read(self) -> Iterator[FakeRepo]:
        yield FakeRepo(self.rows)

    write = read


def test_a_late_commit_below_the_watermark_is_still_seen() -> None:
    """seq 3 commits after seq 4 was read (PostgreSQL out-of-order commit): the gap is re-read."""
    store = FakeStore()
    state = RevocationState()
    w = RevocationWatcher(store, state)  # type: ignore[arg-type]
    store.rows += [RevocationRow(1, "task", "t1", NOW), RevocationRow(2, "task", "t2", NOW)]
    w.refresh()
    store.rows.append(RevocationRow(4, "task", "t4", NOW))
    w.refresh()
    assert state.watermark == 4
    store.rows.append(RevocationRow(3, "task", "t3", NOW))
    w.refresh()
    assert set(state.task) == {"t1", "t2", "t3", "t4"}


def test_state_goes_stale_without_refresh() -> None:
    """Fresh right after a read, stale a second later (verify then fails closed)."""
    state = RevocationState()
    w = RevocationWatcher(FakeStore(), state)  # type: ignore[arg-type]
    assert not state.fresh()
    w.refresh()
    assert state.fresh()
    state.confirmed_at = time.monotonic() - 1.5
    assert not state.fresh()


class BrokenStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    @contextmanager
    def read(self) -> Iterator[FakeRepo]:
        self.reads += 1
        raise ConnectionError("database down")
        yield FakeRepo([])  # pragma: no cover


def test_a_running_watcher_confirms_a_stale_state_inline() -> None:
    """A starved watcher thread does not fail calls: the verifier's check reads the table itself."""
    store = FakeStore()
    state = RevocationState()
    w = RevocationWatcher(store, state, poll_seconds=60)  # type: ignore[arg-type]
    assert not state.ensure_fresh()  # no watcher running: nothing may confirm, fail closed
    w.start()
    try:
        store.rows.append(RevocationRow(1, "task", "t", NOW))
        state.confirmed_at = time.monotonic() - 5
        assert state.ensure_fresh()
        assert "t" in state.task  # the inline read applied what was new
    finally:
        w.stop()
    state.confirmed_at = time.monotonic() - 5
    assert not state.ensure_fresh()  # a stopped watcher no longer confirms


def test_a_state_that_cannot_be_confirmed_fails_closed_and_retries_sparingly() -> None:
    """With the store down the inline read fails: stale stays stale, and the next attempt waits its turn."""
    good = FakeStore()
    state = RevocationState()
    w = RevocationWatcher(good, state, poll_seconds=60)  # type: ignore[arg-type]
    w.start()
    try:
        broken = BrokenStore()
        w.store = broken  # type: ignore[assignment]
        state.confirmed_at = time.monotonic() - 5
        assert not state.ensure_fresh()
        reads = broken.reads
        assert reads >= 1
        assert not any(state.ensure_fresh() for _ in range(50))
        assert broken.reads - reads <= 1  # no read per call inside CONFIRM_RETRY_SECONDS (the thread may add one)
        w.store = good  # type: ignore[assignment]
        time.sleep(0.3)
        assert state.ensure_fresh()
    finally:
        w.stop()
