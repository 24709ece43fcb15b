"""Every CLI command is in docs/cli.md and every setting in docs/configuration.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from typer.main import get_command

from tether.cli.main import app
from tether.config import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _commands(cmd: Any, prefix: tuple[str, ...]) -> Iterator[str]:
    if hasattr(cmd, "list_commands"):
        ctx = cmd.context_class(cmd)
        for name in cmd.list_commands(ctx):
            yield from _commands(cmd.get_command(ctx, name), (*prefix, name))
    else:
        yield " ".join(prefix)


def test_every_cli_command_is_documented() -> None:
    """A command added without a line in docs/cli.md fails here."""
    text = (DOCS / "cli.md").read_text()
    commands = list(_commands(get_command(app), ("tether",)))
    assert len(commands) > 20
    missing = [c for c in commands if f"`{c}`" not in text]
    assert not missing, f"undocumented commands: {missing}"


def test_every_setting_is_documented() -> None:
    """A Settings field added without a line in docs/configuration.md fails here."""
    text = (DOCS / "configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"`TETHER_{n.upper()}`" not in text]
    assert not missing, f"undocumented settings: {missing}"
