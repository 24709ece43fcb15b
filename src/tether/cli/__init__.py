"""The `tether` command line (Typer + rich)."""
