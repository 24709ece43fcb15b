"""Outer layer: the HTTP API (FastAPI), its wiring and its error rendering."""
