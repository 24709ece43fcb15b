"""The MCP gateway's config, argument expressions, pins and call mapping."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tether.gateway.mcp.catalog import MCP_DEFAULTS, MappingFailed, annotations_for, map_call, tool_pin
from tether.gateway.mcp.config import Expr, ExpressionError, McpGatewayConfig, Missing, ServerSpec

DEF = {"name": "send", "description": "Send a message", "inputSchema": {"type": "object"},
       "annotations": {"readOnlyHint": True, "destructiveHint": False}}  # fmt: skip


def server(**tools: Any) -> ServerSpec:
    cfg = McpGatewayConfig.model_validate({"servers": {"chat": {"command": "chat-mcp", "tools": tools}}})
    return cfg.servers["chat"]


def test_expressions_are_checked_when_the_config_loads() -> None:
    """Bad pointers, unknown functions and reserved fact names are refused at load, not at call time."""
    for bad in ("nope(/a)", "len(a)", "/a~2"):
        with pytest.raises(ExpressionError):
            Expr.parse(bad)
    with pytest.raises(ValidationError, match="reserved"):
        server(send={"action": "mcp:call", "facts": {"approved": "/x"}})
    with pytest.raises(ValidationError, match="not known"):
        server(send={"action": "chat:post"})
    with pytest.raises(ValidationError, match="annotation"):
        server(send={"annotations": {"harmlessHint": True}})


def test_expressions_read_pointers_literals_and_functions() -> None:
    """Pointers (with ~1 escapes), literals and the small function set evaluate as documented."""
    args = {"a/b": "X", "to": ["p@Ext.example"], "path": "/srv/repo/./sub/../x", "url": "https://Host.example/p"}
    assert Expr.parse("/a~1b").evaluate(args) == "X"
    assert Expr.parse("/to/0").evaluate(args) == "p@Ext.example"
    assert Expr.parse("domain(/to/0)").evaluate(args) == "ext.example"
    assert Expr.parse("path(/path)").evaluate(args) == "/srv/repo/x"
    assert Expr.parse("host(/url)").evaluate(args) == "host.example"
    assert Expr.parse("len(/to)").evaluate(args) == 1
    assert Expr.parse("=confidential").evaluate(args) == "confidential"
    with pytest.raises(Missing):
        Expr.parse("/missing").evaluate(args)


def test_path_refuses_what_the_upstream_would_resolve_on_its_own() -> None:
    """A relative path means whatever the upstream's working directory makes of it: refused, not guessed."""
    from tether.gateway.mcp.config import ExpressionError

    for rel in ("repo", "./repo", "../repo", "~/repo"):
        with pytest.raises(ExpressionError, match="absolute"):
            Expr.parse("path(/p)").evaluate({"p": rel})
    assert Expr.parse("path(/p)").evaluate({"p": "//srv//repo/.."}) == "/srv"


def test_namespace_off_is_refused_with_two_servers() -> None:
    """Flat tool names are allowed only when no two servers could shadow each other."""
    with pytest.raises(ValidationError, match="only allowed with one server"):
        McpGatewayConfig.model_validate({"namespace": False, "servers": {"a": {"command": "x"}, "b": {"command": "y"}}})
    with pytest.raises(ValidationError, match="no underscores"):
        McpGatewayConfig.model_validate({"servers": {"a__b": {"command": "x"}}})
    with pytest.raises(ValidationError, match="exactly one"):
        McpGatewayConfig.model_validate({"servers": {"a": {"command": "x", "url": "http://h/mcp"}}})


def test_pin_covers_the_fields_a_rug_pull_would_change() -> None:
    """Changing the description, schemas or annotations changes the pin; unrelated members do not."""
    base = tool_pin(DEF)
    assert tool_pin({**DEF, "description": "Send a message (and forward it elsewhere)"}) != base
    assert tool_pin({**DEF, "inputSchema": {"type": "object", "properties": {"bcc": {}}}}) != base
    assert tool_pin({**DEF, "annotations": {"readOnlyHint": True}}) != base
    assert tool_pin({**DEF, "icons": [{"src": "x"}]}) == base
    assert len(base) == 64


def test_unmapped_tool_is_mcp_call_on_its_tool_resource_with_safe_default_annotations() -> None:
    """Without a catalog entry or pin the tool counts as destructive and open-world."""
    m = map_call(server(), "send", {"text": "hi"}, None)
    assert (m.action, m.resource.type, m.resource.id, m.resource.system) == (
        "mcp:call",
        "Tool",
        "chat/send",
        "mcp:chat",
    )
    assert m.resource.attrs["destructive"] is True
    assert m.resource.attrs["open_world"] is True
    assert annotations_for(server(), "send", None) == MCP_DEFAULTS


def test_annotations_come_from_catalog_then_pin_never_from_the_live_listing() -> None:
    """The pinned definition's hints apply, and the catalog overrides them."""
    pinned = annotations_for(server(), "send", DEF)
    assert pinned["readOnlyHint"] is True
    assert pinned["destructiveHint"] is False
    cat = annotations_for(server(send={"annotations": {"readOnlyHint": False}}), "send", DEF)
    assert cat["readOnlyHint"] is False


def test_mapped_tool_reads_resource_and_facts_from_arguments() -> None:
    """A catalogued tool maps to its action, resource and request facts."""
    spec = server(send={"action": "mcp:call", "resource": {"type": "Site", "id": "lower(/channel)",
                                                            "sensitivity": "/label"},
                        "facts": {"recipients": "/to", "size": "len(/text)"}})  # fmt: skip
    m = map_call(spec, "send", {"channel": "General", "label": "confidential", "to": ["a", "b"], "text": "hey"}, DEF)
    assert (m.resource.type, m.resource.id, m.resource.sensitivity) == ("Site", "general", "confidential")
    assert m.facts["recipients"] == ["a", "b"]
    assert m.facts["size"] == 3


def test_arguments_that_do_not_give_a_clean_resource_are_refused() -> None:
    """Missing, structured, over-long or control-character ids, and made-up sensitivities, fail the mapping."""
    spec = server(send={"resource": {"type": "Site", "id": "/channel", "sensitivity": "/label"}})
    for args in ({}, {"channel": {"$gt": ""}, "label": "public"}, {"channel": "a\nb", "label": "public"},
                 {"channel": "x" * 5000, "label": "public"}, {"channel": "c", "label": "top-secret"},
                 {"channel": True, "label": "public"}):  # fmt: skip
        with pytest.raises(MappingFailed):
            map_call(spec, "send", args, None)
