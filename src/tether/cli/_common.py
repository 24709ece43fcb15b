"""What every CLI command shares: settings from flags and environment, output, errors."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from tether.api.wiring import Services, build_services
from tether.config import Settings
from tether.errors import TetherError
from tether.store import migrate
from tether.store.schema.identity import persons

out = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="TETHER_DATA_DIR", help="Data directory (default ./.tether)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

F = TypeVar("F", bound=Callable[..., Any])


def settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"invalid setting {'.'.join(str(p) for p in first['loc'])}: {first['msg']}")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def services(data_dir: Path | None, *, require_init: bool = True) -> Iterator[Services]:
    s = settings(data_dir)
    if require_init and migrate.current(s.url) is None:
        fail(f"no Tether database at {s.url.split('@')[-1]}: run `tether init` first")
    svc = build_services(s, migrate=False)
    try:
        yield svc
    except TetherError as exc:
        extra = f" (field: {exc.field})" if exc.field else ""
        fail(f"{exc.detail}{extra}", 2 if exc.status < 500 else 1)
    finally:
        svc.close()


def operator(svc: Services) -> str:
    """The person the CLI acts as: the earliest active admin (created by `tether init`)."""
    with svc.db.read() as conn:
        rows = conn.execute(
            select(persons.c.id, persons.c.roles).where(persons.c.status == "active").order_by(persons.c.created_at)
        ).all()
    for pid, roles in rows:
        if "admin" in roles:
            return str(pid)
    return f"cli:{getpass.getuser()}"


def plain(value: Any) -> Any:
    """Dataclasses, enums and datetimes as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(plain(value), indent=None, sort_keys=True) + "\n")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(
            *[", ".join(map(str, v)) if isinstance(v, list | tuple) else ("" if v is None else str(v)) for v in r]
        )
    out.print(t)


def details(title: str, obj: Any) -> None:
    data = plain(obj)
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in data.items():
        t.add_row(k, json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else str(v)))
    out.print(t)
