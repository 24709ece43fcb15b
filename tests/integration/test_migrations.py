"""Migrations from an empty database on SQLite and PostgreSQL; init and server start run them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from tests.conftest import _pg_admin_url
from tether.api.wiring import build_services
from tether.cli.main import app
from tether.config import Settings
from tether.store.migrate import current, head
from tether.store.schema import metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = _pg_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL backend: set TETHER_TEST_DATABASE_URL to run it")
    name = f"tether_empty_{secrets.token_hex(5)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_init_migrates_an_empty_database_to_head(tmp_path: Path, empty_url: str) -> None:
    """`tether init` on an empty database creates every table the schema declares, at the head revision."""
    assert current(empty_url) is None
    r = CliRunner().invoke(app, ["init", "--json"], env={"TETHER_DATA_DIR": str(tmp_path / "d"),
                                                        "TETHER_DATABASE_URL": empty_url})  # fmt: skip
    assert r.exit_code == 0, r.output
    assert current(empty_url) == head()
    assert set(metadata.tables) <= _tables(empty_url)


def test_server_start_migrates(tmp_path: Path, empty_url: str) -> None:
    """Building the server's services (what `tether serve` does first) migrates an empty database."""
    svc = build_services(Settings(data_dir=tmp_path / "d", database_url=empty_url))
    svc.close()
    assert current(empty_url) == head()
    assert {"persons", "agents", "delegations", "tasks", "audit_events"} <= _tables(empty_url)


def test_migrating_twice_is_a_no_op(tmp_path: Path, empty_url: str) -> None:
    """A second start on a migrated database changes nothing and fails nothing."""
    for _ in range(2):
        build_services(Settings(data_dir=tmp_path / "d", database_url=empty_url)).close()
    assert current(empty_url) == head()
