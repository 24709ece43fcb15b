"""A tiny MCP server for the demo (`python -m tether.sim.notes_mcp`): team notes over stdio.

Three tools with honest annotations, so the default policy pack has something to decide:
`search_notes` and `read_note` are read-only; `delete_note` is destructive and waits for
approval. The notes live in memory and reset with the process.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

NOTES: dict[str, str] = {
    "standup": "Standup moved to 09:30 on Thursdays.",
    "q3-plan": "Q3: ship the approvals console, then the Graph route map.",
    "offsite": "Offsite in Lisbon, 14-16 October. Book by Friday.",
}

server = MCPServer("notes")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False))
def search_notes(query: str) -> list[str]:
    """Names of the notes whose text contains `query` (case-insensitive)."""
    q = query.lower()
    return sorted(name for name, text in NOTES.items() if q in text.lower() or q in name)


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False))
def read_note(name: str) -> str:
    """The text of one note."""
    return NOTES.get(name, f"no note named {name!r}")


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False))
def delete_note(name: str) -> str:
    """Delete a note for good."""
    return "deleted" if NOTES.pop(name, None) is not None else f"no note named {name!r}"


def main() -> None:
    server.run("stdio")


if __name__ == "__main__":
    main()
