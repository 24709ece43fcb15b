"""Engine set-up for both backends and the two kinds of transaction the contexts use.

SQLite runs in WAL mode with `synchronous=FULL` (a committed audit record survives power
loss). Write transactions on SQLite start with `BEGIN IMMEDIATE`, so a read-then-write
(the audit chain head, a conditional state change) is serialised across processes; on
PostgreSQL the audit chain takes an advisory lock instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tether.errors import Unavailable

#: WAL pages after which a committing connection checkpoints by itself: SQLite's default, and the backstop
#: while a background checkpointer runs
DEFAULT_WAL_PAGES = 1000
BACKSTOP_PAGES = 20_000


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
        if self.is_sqlite:
            _configure_sqlite(self.engine, lambda: self.wal_autocheckpoint)

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
        try:
            with self.engine.connect().execution_options(tether_immediate=True) as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc

    @contextmanager
    def raw_write(self) -> Iterator[Any]:
        """A DB-API cursor in a write transaction (`BEGIN IMMEDIATE` on SQLite), committed on exit.

        For the audit writer's loop, where SQLAlchemy's per-transaction work costs more than the
        statements. The connection comes from the engine's pool (so its connect-time settings hold
        and `dispose()` reaches it) and goes back after each transaction.
        """
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        try:
            cur = raw.cursor()
            try:
                if self.is_sqlite:
                    cur.execute("BEGIN IMMEDIATE")
                yield cur
                raw.commit()
            except BaseException:
                try:
                    raw.rollback()
                except dbapi_error:
                    raw.invalidate()  # a connection that cannot roll back is not put back in the pool
                raise
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
        self.engine.dispose()


def _configure_sqlite(engine: Engine, wal_pages: Callable[[], int]) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred-only).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
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
            cur.fetchall()
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


__all__ = ["BACKSTOP_PAGES", "Database", "RepoStore", "WalCheckpointer", "null_pool_engine"]
