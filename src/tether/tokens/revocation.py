"""The revocation cache and the watcher that feeds it from the sequenced `revocations` table.

Every process keeps, in memory, what was revoked during the last hour (no token lives
longer). A watcher thread reads the table from its watermark: on PostgreSQL a
`LISTEN tether_revocations` connection wakes it as soon as a row commits (the 0004 trigger
NOTIFYs); it also polls every `poll_seconds` on both backends, which is how SQLite learns and
how the watermark is *confirmed*. A verifier whose watermark is older than `STALE_SECONDS`
fails closed.

The same table carries the MCP sessions ended with DELETE (kind `mcp_session`, subject the
SHA-256 of the session id): a session id is signed, not stored, so every process would otherwise
accept it again. A session lives no longer than its task, so those rows are kept for
SESSION_HORIZON (the longest task plus the longest token) instead of HORIZON.

Sequence gaps: on PostgreSQL two writers may commit seq 6 before seq 5. A seq missing below
the highest seen is remembered as a gap and re-read until it appears or `GAP_SECONDS` pass
(a rolled-back insert leaves a permanent gap).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from tether.config import MAX_TASK_LIFETIME, MAX_TOKEN_LIFETIME
from tether.log import get_logger
from tether.tokens.ports import RevocationRow, TokenStore
from tether.types import utcnow

log = get_logger("tether.tokens.revocation")

STALE_SECONDS = 1.0
#: a verifier that finds the state stale confirms it inline at most this often (then fails closed)
CONFIRM_RETRY_SECONDS = 0.25
#: how long an inline confirmation waits for a refresh already under way
CONFIRM_WAIT_SECONDS = 0.5
GAP_SECONDS = 30.0
#: revocations older than this cannot touch a live token
HORIZON = timedelta(seconds=MAX_TOKEN_LIFETIME + 120)
#: ended MCP sessions older than this cannot touch a live one (a session dies with its task)
SESSION_HORIZON = timedelta(seconds=MAX_TASK_LIFETIME + MAX_TOKEN_LIFETIME + 120)
SESSION_KIND = "mcp_session"
CHANNEL = "tether_revocations"


class RevocationState:
    """What is revoked, as seen by this process; read lock-free on the hot path."""

    def __init__(self) -> None:
        self.jti: dict[str, float] = {}
        self.task: dict[str, float] = {}
        #: person / agent / delegation → epoch of the latest revocation (tokens issued at or before it die)
        self.person: dict[str, float] = {}
        self.agent: dict[str, float] = {}
        self.delegation: dict[str, float] = {}
        #: SHA-256 (hex) of MCP session ids ended with DELETE → when
        self.session: dict[str, float] = {}
        self.confirmed_at = float("-inf")  # time.monotonic() of the last successful read
        self.watermark = 0
        #: set by a running watcher: reads the table now (so a starved watcher thread does not fail calls)
        self.confirm: Callable[[], None] | None = None
        self._last_attempt = float("-inf")

    def fresh(self) -> bool:
        return time.monotonic() - self.confirmed_at <= STALE_SECONDS

    def ensure_fresh(self) -> bool:
        """Fresh, or made fresh by one inline read; False (fail closed) when the watermark cannot be confirmed.

        The watcher thread confirms the watermark every 0.4 s at most; on a loaded machine it can miss the
        1-second bound. Then the first verification to notice reads the table itself (at most every
        CONFIRM_RETRY_SECONDS): the contract is "cannot confirm", not "did not happen to confirm".
        """
        if self.fresh():
            return True
        confirm = self.confirm
        now = time.monotonic()
        if confirm is None or now - self._last_attempt < CONFIRM_RETRY_SECONDS:
            return False
        self._last_attempt = now
        try:
            confirm()
        except Exception as exc:  # noqa: BLE001 — any failure to read leaves the state stale: fail closed
            log.warning("revocation state could not be confirmed", error=type(exc).__name__)
            return False
        return self.fresh()

    def why_revoked(
        self, *, jti: str, task_id: str, person_id: str, actors: tuple[str, ...], delegation_id: str | None, iat: int
    ) -> str | None:
        if jti in self.jti:
            return "token revoked"
        if task_id in self.task:
            return "task ended"
        t = self.person.get(person_id)
        if t is not None and iat <= t:
            return "person revoked"
        for a in actors:
            t = self.agent.get(a)
            if t is not None and iat <= t:
                return f"agent {a} revoked"
        if delegation_id is not None:
            t = self.delegation.get(delegation_id)
            if t is not None and iat <= t:
                return "delegation revoked"
        return None

    def apply(self, rows: list[RevocationRow]) -> bool:
        """Add rows; True when one of them asks the key ring to reload."""
        keyring = False
        for r in rows:
            ts = r.created_at.timestamp()
            if r.kind == "keyring":
                keyring = True
                continue
            table = {"jti": self.jti, "task": self.task, "person": self.person, "agent": self.agent,
                     "delegation": self.delegation, SESSION_KIND: self.session}.get(r.kind)  # fmt: skip
            if table is not None and table.get(r.subject_id, float("-inf")) < ts:
                table[r.subject_id] = ts
        return keyring

    def prune(self, older_than: float, sessions_older_than: float | None = None) -> None:
        """Forget revocations from before `older_than` (ended sessions: before `sessions_older_than`)."""
        tables = [(t, older_than) for t in (self.jti, self.task, self.person, self.agent, self.delegation)]
        tables.append((self.session, older_than if sessions_older_than is None else sessions_older_than))
        for table, before in tables:
            stale = [k for k, ts in table.items() if ts < before]
            for k in stale:
                del table[k]


class RevocationWatcher:
    """Feeds a RevocationState from the store; one thread per process."""

    def __init__(
        self,
        store: TokenStore,
        state: RevocationState,
        *,
        poll_seconds: float = 0.25,
        listen_url: str | None = None,
        on_keyring: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.state = state
        self.poll_seconds = poll_seconds
        self.listen_url = listen_url
        self.on_keyring = on_keyring
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._gaps: dict[int, float] = {}
        self._refresh_lock = threading.Lock()
        self._last_prune = time.monotonic()

    # -------------------------------------------------------------- control

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.refresh()
        self.state.confirm = self._confirm_now
        self._thread = threading.Thread(target=self._run, name="tether-revocations", daemon=True)
        self._thread.start()
        if self.listen_url:
            self._listener = threading.Thread(target=self._listen, name="tether-revocations-listen", daemon=True)
            self._listener.start()

    def stop(self) -> None:
        self.state.confirm = None
        self._stop.set()
        self._wake.set()
        for t in (self._thread, self._listener):
            if t is not None:
                t.join(5)
        self._thread = self._listener = None

    async def astart(self) -> None:
        self.start()

    async def astop(self) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    # ---------------------------------------------------------------- work

    def refresh(self) -> None:
        """Read every revocation past the watermark (and any gap) and confirm the watermark."""
        with self._refresh_lock:
            self._refresh()

    def _confirm_now(self) -> None:
        """An inline refresh for a verifier that found the state stale; joins one already under way."""
        if not self._refresh_lock.acquire(timeout=CONFIRM_WAIT_SECONDS):
            return
        try:
            if not self.state.fresh():
                self._refresh()
        finally:
            self._refresh_lock.release()

    def _refresh(self) -> None:
        s = self.state
        low = min(self._gaps) - 1 if self._gaps else s.watermark
        now = self.clock()
        with self.store.read() as repo:
            rows = repo.revocations_after(low, now - HORIZON, kept_longer={SESSION_KIND: now - SESSION_HORIZON})
        now_m = time.monotonic()
        for r in rows:
            self._gaps.pop(r.seq, None)
            if r.seq > s.watermark:
                for missing in range(s.watermark + 1, r.seq):
                    if s.watermark > 0:  # before the first read, lower seqs are simply old
                        self._gaps[missing] = now_m
                s.watermark = r.seq
        self._gaps = {k: t for k, t in self._gaps.items() if now_m - t < GAP_SECONDS}
        reload_keys = s.apply(rows)
        if now_m - self._last_prune > 60:
            s.prune((now - HORIZON).timestamp(), (now - SESSION_HORIZON).timestamp())
            self._last_prune = now_m
            reload_keys = True  # also drops retired keys whose last token has expired from the JWKS
        if reload_keys and self.on_keyring is not None:
            self.on_keyring()
        s.confirmed_at = now_m

    def _run(self) -> None:
        # Confirm the watermark well inside STALE_SECONDS whatever the configured poll interval.
        interval = min(self.poll_seconds, STALE_SECONDS * 0.4)
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 — the watcher must survive; staleness fails verify closed
                log.warning("revocation refresh failed", error=type(exc).__name__)

    def _listen(self) -> None:
        import psycopg

        assert self.listen_url is not None
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.listen_url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake.set()
            except psycopg.Error as exc:
                log.warning("revocation listener lost its connection", error=type(exc).__name__)
                self._stop.wait(0.5)


class EndedSessions:
    """MCP sessions ended with DELETE, as every process of the deployment sees them (the `revocations` table).

    Keys are the SHA-256 (hex) of the session ids. `end` records one and returns once it is committed (a
    database write: call it off the event loop); `ended` reads this process's RevocationState, which the
    watcher keeps current, so other processes refuse the session within the watcher's poll interval, as
    they refuse a revoked token.
    """

    def __init__(self, store: TokenStore, state: RevocationState, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.state = state
        self.clock = clock

    def ended(self, key: str) -> bool:
        return key in self.state.session

    def end(self, key: str) -> None:
        now = self.clock()
        with self.store.write() as repo:
            repo.add_revocation(SESSION_KIND, key, "MCP session ended (DELETE)", now)
        self.state.session[key] = now.timestamp()


__all__ = [
    "CHANNEL", "CONFIRM_RETRY_SECONDS", "HORIZON", "SESSION_HORIZON", "SESSION_KIND", "STALE_SECONDS", "EndedSessions",
    "RevocationState", "RevocationWatcher",
]  # fmt: skip
