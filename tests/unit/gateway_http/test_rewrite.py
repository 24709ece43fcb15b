"""JSON answers: pre-authenticated URLs dropped and paging links sent through the gateway, at any depth, values kept."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.gateway.http.config import HttpGatewayConfig, Upstream
from tether.gateway.http.proxy import HttpGateway

UP = "https://graph.example"
GW = "https://tether.example"


@functools.cache
def gateway() -> tuple[HttpGateway, Any]:
    up = Upstream(name="m365", base_url=UP)
    gw = HttpGateway(HttpGatewayConfig(upstreams={"m365": up}), base_url=GW, verifier=lambda: None,
                     enforcer=lambda: None, providers=None)  # fmt: skip
    return gw, SimpleNamespace(upstream=up)


def rewrite(raw: bytes, items_key: str | None = "value") -> tuple[Any, int, bytes]:
    gw, ctx = gateway()
    out, items = gw._rewrite_json(ctx, raw, items_key)
    return json.loads(out), items, out


def test_a_page_s_link_goes_through_the_gateway_and_the_rest_is_kept() -> None:
    page = [{"id": "1", "n": 1.5, "big": 2**70, "neg": -(2**63) - 1}]
    doc = {"value": page, "@odata.nextLink": f"{UP}/v1.0/me/x?a=1"}
    back, items, out = rewrite(json.dumps(doc).encode())
    assert back == {**doc, "@odata.nextLink": f"{GW}/proxy/m365/v1.0/me/x?a=1"}
    assert items == 1
    assert str(2**70).encode() in out  # integers past 64 bits stay exact


def test_nested_and_escaped_keys_are_found() -> None:
    """Keys below the top, and keys spelled with JSON escapes, are rewritten or dropped like plain ones."""
    raw = (
        b'{"value":[{"@microsoft.graph.downloadUrl":"https://x/pre","name":"a","sub":{"@odata.next\\u004cink":"'
        + UP.encode()
        + b'/v1.0/y"}}],"@odata.deltaLink":"https://elsewhere.example/d","t":"\\u00e9"}'
    )
    back, items, _ = rewrite(raw)
    assert back == {"value": [{"name": "a", "sub": {"@odata.nextLink": f"{GW}/proxy/m365/v1.0/y"}}], "t": "é"}
    assert items == 1


@pytest.mark.parametrize("items_key", [None, "value"])
def test_a_pre_authenticated_url_under_an_escaped_key_alone_is_dropped(items_key: str | None) -> None:
    """No plain marker anywhere in the text: the escaped spelling alone must not let the URL through."""
    raw = b'{"id":"1","@microsoft.graph.download\\u0055rl":"https://x/pre?sig=secret","value":[]}'
    back, _, out = rewrite(raw, items_key)
    assert back == {"id": "1", "value": []}
    assert b"sig=secret" not in out


def test_a_responses_member_that_is_not_a_list_is_counted_as_one_item() -> None:
    """An upstream's odd `responses` value is passed on, not turned into a gateway error."""
    back, items, _ = rewrite(b'{"responses": 3, "x": "\\u00e9"}', None)
    assert (back, items) == ({"responses": 3, "x": "\u00e9"}, 1)


def test_unchanged_answers_pass_as_sent() -> None:
    raw = b'{"value": [1, 2, 3], "note": "Link in text only"}'
    _, items, out = rewrite(raw)
    assert out == raw
    assert items == 3
    assert rewrite(b"[1, NaN]", None)[2] == b"[1, NaN]"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="[]/"), max_size=6)
    | st.sampled_from([f"{UP}/v1.0/p?q=1", "https://elsewhere.example/z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=4) | st.sampled_from(["@odata.nextLink", "@odata.deltaLink", "downloadUrl", "value"]),
        inner, max_size=4,
    ),
    max_leaves=20,
)  # fmt: skip


def reference(doc: Any) -> Any:
    """What the rewrite means, written plainly."""
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in ("downloadUrl", "@microsoft.graph.downloadUrl", "uploadUrl", "@content.downloadUrl"):
                continue
            if k in ("@odata.nextLink", "@odata.deltaLink") and isinstance(v, str):
                if v.startswith(f"{UP}/"):
                    out[k] = f"{GW}/proxy/m365/" + v[len(UP) + 1 :]
                continue
            out[k] = reference(v)
        return out
    if isinstance(doc, list):
        return [reference(v) for v in doc]
    return doc


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_any_document_is_rewritten_as_meant(doc: Any, ascii_only: bool) -> None:
    raw = json.dumps(doc, ensure_ascii=ascii_only, allow_nan=True).encode()
    back, _, _ = rewrite(raw, None)
    assert json.dumps(back) == json.dumps(reference(json.loads(raw)))


@pytest.mark.parametrize("raw", [b"not json", b'{"a": "Link"'])
def test_unreadable_json_passes_as_sent(raw: bytes) -> None:
    gw, ctx = gateway()
    assert gw._rewrite_json(ctx, raw, "value") == (raw, 0)
