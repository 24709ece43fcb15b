"""Shared fixtures: a fresh database on each backend, wired services, an app, a live server.

`db_url` is parametrised over SQLite and PostgreSQL. PostgreSQL runs when
TETHER_TEST_DATABASE_URL names a database Tether may create databases next to (CI sets
it); without it those cases skip with a reason. Each test gets its own PostgreSQL
database, cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tether.api.wiring import Services, build_services
from tether.config import Settings
from tether.identity.model import Role
from tether.store.migrate import upgrade

PG_ENV = "TETHER_TEST_DATABASE_URL"
_template: dict[str, str] = {}


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    return url if "+psycopg" in url else url.replace("postgresql://", "postgresql+psycopg://", 1)


def _pg_template(admin_url: str) -> str:
    """A database migrated to head once per test run, cloned by every PostgreSQL test."""
    if "name" not in _template:
        name = f"tether_tpl_{os.getpid()}_{secrets.token_hex(3)}"
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        upgrade(make_url(admin_url).set(database=name).render_as_string(hide_password=False))
        _template["name"] = name
    return _template["name"]


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_template() -> Iterator[None]:
    yield
    admin = _pg_admin_url()
    if admin and "name" in _template:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_template["name"]}" WITH (FORCE)'))
        engine.dispose()


def fresh_pg_database() -> Iterator[str]:
    admin = _pg_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL backend: set {PG_ENV} (CI does) to run it")
    template = _pg_template(admin)
    name = f"tether_t_{secrets.token_hex(6)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tether.db'}"
        upgrade(url)
        yield url
    else:
        yield from fresh_pg_database()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = build_services(settings, migrate=False)
    yield svc
    svc.close()


@pytest.fixture
def admin(services: Services) -> tuple[str, str]:
    """(person id, admin token) of a first administrator."""
    p = services.identity.create_person(
        "system", email="root@example.com", name="Root", roles=[Role.ADMIN.value], subject="root"
    )
    return p.id, services.admin_tokens.issue(p.id, Role.ADMIN, "test")


# Ports for test servers come from below the kernel's ephemeral range (32768-60999 by default), so an
# outgoing connection made elsewhere in the run can never take a port between choosing it and binding it.
_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range."""
    for _ in range(200):
        port = secrets.choice(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-32000")


def listening_socket(port: int) -> socket.socket:
    """A socket bound to `port` on loopback, to hand to uvicorn so that the port is held from now on."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class LiveServer:
    """The real app under uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, services: Services) -> None:
        import uvicorn

        from tether.api.app import create_app

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.app = create_app(services)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([listening_socket(self.port)],), daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server(services: Services) -> Iterator[LiveServer]:
    with LiveServer(services) as server:
        yield server
