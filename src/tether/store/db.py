"""Engine set-up for both backends and the two kinds of transaction the contexts use.

SQLite runs in WAL mode with `synchronous=FULL` (a committed audit record survives power
loss). Write transactions on SQLite start with `BEGIN IMMEDIATE`, so a read-then-write
(the audit chain head, a conditional state change) is serialised across processes; on
PostgreSQL the audit chain takes an advisory lock instead.

SQLite writers of every Tether process on one database also take a `WriterLock` (an flock on
`<database>-writer.lock`) around each write transaction. SQLite itself makes a second writer
wait by sleeping and retrying (its busy handler), which under load from several processes
(`tether serve --workers`) left calls waiting hundreds of milliseconds for a lock freed long
before; a writer waiting on the flock is woken by the kernel the moment it is released.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tether.errors import Unavailable
from tether.log import get_logger

_log = get_logger("tether.store")

#: WAL pages after which a committing connection checkpoints by itself: SQLite's default, and the backstop
#: while a background checkpointer runs
DEFAULT_WAL_PAGES = 1000
BACKSTOP_PAGES = 20_000
#: a fully checkpointed WAL longer than this is restarted, so commits write over it instead of growing it
RESTART_FRAMES = 2_000
#: how long a SQLite writer waits for a lock another connection holds
BUSY_TIMEOUT_MS = 30_000
#: PostgreSQL advisory lock ("tether-audit" as int64) serialising chain appends and usage stamps
CHAIN_LOCK_KEY = 0x7465746865726175


class Busy(Unavailable):
    """The write lock is held elsewhere and the caller asked not to wait (`raw_write(wait=False)`)."""


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        #: SQLite's auto-checkpoint threshold for connections opened from now on (raised while a WalCheckpointer runs)
        self.wal_autocheckpoint = DEFAULT_WAL_PAGES
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(url, **kwargs)
        self.writer_lock: WriterLock | None = None
        #: SQLite: the durable raw writers' own connections (by `wait`), used only under the writer lock
        self._kept: dict[bool, _Kept] = {}
        if self.is_sqlite:
            _configure_sqlite(self.engine, lambda: self.wal_autocheckpoint)
            if path and path != ":memory:":
                self.writer_lock = WriterLock(Path(path + "-writer.lock"))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (deferred on SQLite)."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, serialised with every other writer on SQLite."""
        with self._writer():
            try:
                with self.engine.connect().execution_options(tether_immediate=True) as conn, conn.begin():
                    yield conn
            except SQLAlchemyError as exc:
                raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc

    def _writer(self) -> Any:
        return self.writer_lock.held() if self.writer_lock is not None else _NO_LOCK

    @contextmanager
    def raw_write(self, *, durable: bool = True, wait: bool = True) -> Iterator[Any]:
        """A DB-API cursor in a write transaction (`BEGIN IMMEDIATE` on SQLite), committed on exit.

        For the audit writer's loop, where SQLAlchemy's per-transaction work costs more than the
        statements. Durable transactions on a SQLite file run on a connection kept for them (see
        `_kept_write`); the others borrow one from the engine's pool. Either way it was opened with
        the pool's connect-time settings, and `engine.dispose()` retires it.

        `durable=False`: the commit does not wait for the disk (SQLite `synchronous=NORMAL` for this
        transaction, PostgreSQL `synchronous_commit=off`): atomic, but the last such commits can be
        lost in a power failure (the next durable commit makes them durable too). For data derived
        from what is durable already, never for the audit record itself.

        `wait=False` (SQLite, for a caller on an event loop): if a connection that does not take the
        writer lock (a `sqlite3` shell, another tool) holds SQLite's write lock, raise `Busy` at once
        instead of waiting up to the busy timeout.
        """
        with self._writer():
            if durable and self.writer_lock is not None:
                yield from self._kept_write(wait)
            else:
                yield from self._raw_write(durable, wait)

    def _kept_write(self, wait: bool) -> Iterator[Any]:
        """`raw_write` on SQLite on a connection of its own, kept open (one per `wait`).

        The audit writer commits every few milliseconds: a pooled connection costs a checkout, a
        reset on return and, for `wait=False`, two PRAGMAs around each transaction, together more
        CPU than SQLite's own inserts (measured here: 0.20 against 0.13 ms a commit). The writer
        lock, held around this, makes each kept connection one thread's at a time. A connection
        that fails is closed, and the next transaction opens a new one.
        """
        kept = self._kept.get(wait)
        if kept is None or kept.pool is not self.engine.pool:  # `engine.dispose()` reaches kept connections too
            self._drop_kept(wait)
            kept = self._kept[wait] = self._open_kept(wait)
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        cur = kept.cursor
        try:
            try:
                cur.execute("BEGIN IMMEDIATE")
            except dbapi_error as exc:
                if not wait and _busy(exc):
                    raise Busy("another connection holds the database's write lock") from exc
                raise
            try:
                yield cur
                kept.conn.commit()
            except BaseException:
                if kept.conn.in_transaction:
                    kept.conn.rollback()
                raise
        except Busy:
            raise
        except dbapi_error as exc:
            self._drop_kept(wait)
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc

    def _open_kept(self, wait: bool) -> _Kept:
        try:
            fairy = self.engine.raw_connection()  # the pool's connect-time settings apply
        except SQLAlchemyError as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        conn = fairy.driver_connection
        assert conn is not None
        fairy.detach()  # ours, not the pool's: `dispose()` closes it, not the pool's reset or recycling
        cur = conn.cursor()
        if not wait:
            cur.execute("PRAGMA busy_timeout=0")  # SQLite's lock held elsewhere: `Busy` at once, never a wait
        return _Kept(fairy, conn, cur, self.engine.pool)

    def _drop_kept(self, wait: bool) -> None:
        kept = self._kept.pop(wait, None)
        if kept is not None:
            with suppress(Exception):  # closing a broken connection may fail as well
                kept.fairy.close()

    def _raw_write(self, durable: bool = True, wait: bool = True) -> Iterator[Any]:
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        try:
            cur = raw.cursor()
            relaxed = not durable and self.is_sqlite
            hasty = not wait and self.is_sqlite
            try:
                if relaxed:
                    cur.execute("PRAGMA synchronous=NORMAL")
                if hasty:
                    cur.execute("PRAGMA busy_timeout=0")
                    try:
                        cur.execute("BEGIN IMMEDIATE")
                    except dbapi_error as exc:
                        if _busy(exc):
                            raise Busy("another connection holds the database's write lock") from exc
                        raise
                    finally:
                        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                elif self.is_sqlite:
                    cur.execute("BEGIN IMMEDIATE")
                elif not durable:
                    cur.execute("SET LOCAL synchronous_commit TO OFF")
                yield cur
                raw.commit()
            except BaseException:
                try:
                    raw.rollback()
                except dbapi_error:
                    raw.invalidate()  # a connection that cannot roll back is not put back in the pool
                raise
            finally:
                try:
                    if relaxed:
                        cur.execute("PRAGMA synchronous=FULL")  # the pooled connection goes back durable
                finally:
                    cur.close()
        except dbapi_error as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        finally:
            raw.close()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def dispose(self) -> None:
        for wait in list(self._kept):
            self._drop_kept(wait)
        self.engine.dispose()
        if self.writer_lock is not None:
            self.writer_lock.close()


class WriterLock:
    """One SQLite writer at a time across processes and threads, each waiter woken by the kernel.

    Re-entrant within a thread (a write inside a write shares the lock). A thread waits at most
    LOCK_WAIT seconds for another thread of its process (which could be waiting on it: fail, not
    hang); across processes the flock waits as long as the holder's transaction lasts.
    """

    LOCK_WAIT = 30.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.RLock()
        self._depth = threading.local()
        self._fd: int | None = None
        # which thread of this process holds the lock, and who wants to hear when it lets go (`when_free`)
        self._owner: int | None = None
        self._on_free: list[Callable[[], None]] = []
        self._owner_lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        self._acquire(wait=True)
        try:
            yield
        finally:
            self.release()

    def try_acquire(self) -> bool:
        """Take the lock only if no thread or process holds it (never waits); `release()` gives it back."""
        return self._acquire(wait=False)

    def when_free(self, callback: Callable[[], None]) -> bool:
        """If another thread of this process holds the lock, call `callback` (on that thread) once it lets go,
        and True; False when it is not held here (another process holds it, or it was just let go)."""
        with self._owner_lock:
            if self._owner is None or self._owner == threading.get_ident():
                return False
            self._on_free.append(callback)
            return True

    def _acquire(self, *, wait: bool) -> bool:
        """Take the lock (re-entrant per thread); without `wait`, False at once when another holds it."""
        taken = self._local.acquire(timeout=self.LOCK_WAIT) if wait else self._local.acquire(blocking=False)
        if not taken:
            if wait:
                raise Unavailable("database unavailable: the write lock is held too long")
            return False
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._owner_lock:  # held here (waiting for the flock, maybe): this process's others wait for us
                self._owner = threading.get_ident()
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._let_go()
                return False
            except BaseException:
                self._let_go()
                raise
        self._depth.n = depth + 1
        return True

    def release(self) -> None:
        depth = self._depth.n - 1
        self._depth.n = depth
        if depth:
            self._local.release()
            return
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._let_go()

    def _let_go(self) -> None:
        """The outermost release: free the lock, then tell those waiting for it."""
        with self._owner_lock:
            self._owner = None
            waiting, self._on_free = self._on_free, []
        self._local.release()
        for callback in waiting:
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 — a waiter's failure is not the releaser's
                with suppress(Exception):
                    _log.error("writer lock waiter failed", error=repr(exc))

    def close(self) -> None:
        with self._local:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _file(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise Unavailable(f"database unavailable: cannot open {self.path.name}: {exc.strerror}") from exc
        return self._fd


class _Kept:
    """A connection `raw_write` keeps for itself, its cursor, and the engine's pool when it was opened: when
    that pool is disposed (a new auto-checkpoint threshold, a database moved away) it is retired as well."""

    __slots__ = ("conn", "cursor", "fairy", "pool")

    def __init__(self, fairy: Any, conn: Any, cursor: Any, pool: Any) -> None:
        self.fairy, self.conn, self.cursor, self.pool = fairy, conn, cursor, pool


#: SQLite's primary result codes for a lock held by another connection (SQLITE_BUSY, SQLITE_LOCKED)
_LOCK_CODES = frozenset({5, 6})


def _busy(exc: BaseException) -> bool:
    """Whether a SQLite error is a lock held elsewhere (by its result code, not its message)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _LOCK_CODES


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def _configure_sqlite(engine: Engine, wal_pages: Callable[[], int]) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred-only).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Switching to WAL needs the write lock, and SQLite does not wait for it there: a connection opened
        # while another holds that lock would fail. The mode is kept in the file, so switch only once.
        if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA wal_autocheckpoint={int(wal_pages())}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("tether_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class WalCheckpointer:
    """Moves SQLite's WAL checkpoints off the commit path: a thread checkpoints (PASSIVE) every interval.

    By default the connection whose commit pushes the WAL past 1,000 pages copies it into the database
    and fsyncs it, inside that commit — for the audit writer, a request that waits many times longer
    than its neighbours. While this runs, connections of this process auto-checkpoint only past
    BACKSTOP_PAGES (so the WAL stays bounded if the thread falls behind); PASSIVE never blocks a writer.
    Other processes (the CLI) keep SQLite's default. On PostgreSQL it does nothing.
    """

    def __init__(self, db: Database, *, interval: float = 0.5) -> None:
        self.db = db
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.restarts = 0

    def start(self) -> None:
        if not self.db.is_sqlite or self._thread is not None:
            return
        self.db.wal_autocheckpoint = BACKSTOP_PAGES
        self.db.engine.dispose()  # pooled connections reopen with the new threshold
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tether-wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(10)
        self._thread = None
        self.db.wal_autocheckpoint = DEFAULT_WAL_PAGES
        try:
            self.db.engine.dispose()
            self.checkpoint()  # leave the WAL short for whoever opens the database next
        except Exception:  # noqa: BLE001 — shutting down: the database may be gone already; SQLite recovers the WAL
            return

    async def astart(self) -> None:
        self.start()

    async def astop(self) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    def checkpoint(self) -> bool:
        """One PASSIVE checkpoint; False when the database could not be reached (tried again next time)."""
        try:
            raw = self.db.engine.raw_connection()
        except (SQLAlchemyError, self.db.engine.dialect.loaded_dbapi.Error):
            return False
        try:
            cur = raw.cursor()
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
            busy, frames, done = cur.fetchone() or (1, 0, 0)
            if not busy and frames >= RESTART_FRAMES and done == frames:
                # Every frame is in the database file, yet writers keep appending to the end of an ever
                # longer WAL (an fsync after an append also writes the file's new size: measured here,
                # 0.33 against 0.26 ms a commit). RESTART makes the next writer start again at the top;
                # with nothing left to copy it holds writers off only for a moment, on the writer lock.
                with self.db._writer():
                    cur.execute("PRAGMA wal_checkpoint(RESTART)")
                    cur.fetchall()
                    self.restarts += 1
            cur.close()
            self.checkpoints += 1
            return True
        except self.db.engine.dialect.loaded_dbapi.Error:
            return False
        finally:
            raw.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.checkpoint()


def null_pool_engine(url: str) -> Engine:
    """An engine without pooling, for migrations and one-shot CLI work."""
    return create_engine(url, poolclass=NullPool, future=True)


R = TypeVar("R")


class RepoStore(Generic[R]):
    """A context's repository, one transaction at a time: `read()` or serialised `write()`."""

    def __init__(self, db: Database, repo: Callable[[Connection], R]) -> None:
        self.db = db
        self._repo = repo

    @contextmanager
    def read(self) -> Iterator[R]:
        with self.db.read() as conn:
            yield self._repo(conn)

    @contextmanager
    def write(self) -> Iterator[R]:
        with self.db.write() as conn:
            yield self._repo(conn)


__all__ = ["BACKSTOP_PAGES", "Busy", "Database", "RepoStore", "WalCheckpointer", "null_pool_engine"]
