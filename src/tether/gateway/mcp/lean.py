"""An opt-in lean client for streamable-HTTP upstreams (`transport: lean` on a URL server).

The SDK's `ClientSession` over httpx2/anyio is the default and the reference. On the hot path
it costs more than the rest of the gateway together (measured with `bench/mcp_gateway.py`), so
a URL server may instead be reached with this small aiohttp client: `initialize` +
`notifications/initialized`, then one POST per request carrying `Mcp-Session-Id` and
`MCP-Protocol-Version`, answers read as JSON or as an SSE stream (the event whose `id`
matches), `DELETE` on close. It speaks exactly what the gateway needs: requests and
notifications from the client side; server-to-client requests are answered "method not found".
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import aiohttp

from tether.gateway.mcp.config import ServerSpec
from tether.gateway.mcp.upstream import AnswerTooLarge, HeaderSource, UpstreamError, UpstreamUnavailable
from tether.gateway.mcp.wire import dumps, loads

PROTOCOL = "2025-11-25"


class LeanSession:
    def __init__(
        self, spec: ServerSpec, person: str, task: str, headers: HeaderSource | None, *,
        max_answer: int = 1024 * 1024 * 1024,
    ) -> None:  # fmt: skip
        assert spec.url is not None
        self.spec, self.person, self.task, self.source = spec, person, task, headers
        self.max_answer = max_answer  # read no more of an answer than this
        self.url = spec.url
        self.session_id: str | None = None
        self.protocol = PROTOCOL
        self.init_result: dict[str, Any] = {}
        self._ids = itertools.count(1)
        timeout = aiohttp.ClientTimeout(total=None, connect=spec.connect_timeout, sock_read=spec.timeout)
        self.http = aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                          connector=aiohttp.TCPConnector(limit=spec.max_concurrency))  # fmt: skip

    async def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": self.protocol}  # fmt: skip
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
        if self.source is not None:
            h.update(await self.source(self.spec, self.person, self.task))
        return h

    async def start(self) -> None:
        try:
            res = await self.request("initialize", {
                "protocolVersion": PROTOCOL, "capabilities": {},
                "clientInfo": {"name": "tether-mcp-gateway", "version": "1"},
            }, timeout=self.spec.connect_timeout)  # fmt: skip
        except UpstreamError as exc:
            raise UpstreamUnavailable(f"MCP server {self.spec.name} refused initialize: {exc.rpc_message}") from None
        self.init_result = res
        if isinstance(res.get("protocolVersion"), str):
            self.protocol = res["protocolVersion"]
        await self.notify("notifications/initialized", None)

    async def request(
        self, method: str, params: Mapping[str, Any] | None, timeout: float | None = None
    ) -> dict[str, Any]:
        rid = next(self._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params:
            msg["params"] = dict(params)
        limit = timeout or self.spec.timeout
        try:
            async with self.http.post(self.url, data=dumps(msg), headers=await self._headers(),
                                      timeout=aiohttp.ClientTimeout(total=limit)) as r:  # fmt: skip
                if method == "initialize" and r.headers.get("mcp-session-id"):
                    self.session_id = r.headers["mcp-session-id"]
                if r.status == 404 and self.session_id:
                    raise UpstreamUnavailable(f"MCP server {self.spec.name} ended the session")
                if r.status >= 400:
                    raise UpstreamUnavailable(f"MCP server {self.spec.name} answered HTTP {r.status}")
                ctype = r.headers.get("content-type", "")
                if ctype.startswith("text/event-stream"):
                    answer = await self._from_sse(r, rid)
                else:
                    answer = loads(await self._read(r))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise UpstreamUnavailable(
                f"MCP server {self.spec.name} could not be reached: {type(exc).__name__}: {exc}"[:300]
            ) from None
        if not isinstance(answer, dict):
            raise UpstreamUnavailable(f"MCP server {self.spec.name} sent no answer")
        if "error" in answer:
            err = answer["error"] if isinstance(answer["error"], dict) else {}
            raise UpstreamError(int(err.get("code", -32603)), str(err.get("message", "error")), err.get("data"))
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def _read(self, r: aiohttp.ClientResponse) -> bytes:
        """The answer's body, refused once it passes `max_answer` bytes (before it is all in memory)."""
        length = r.content_length
        if length is not None:  # the usual answer: its length is known (and aiohttp reads no more than it)
            if length > self.max_answer:
                raise AnswerTooLarge(self.max_answer)
            return await r.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in r.content.iter_any():
            size += len(chunk)
            if size > self.max_answer:
                raise AnswerTooLarge(self.max_answer)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _from_sse(self, r: aiohttp.ClientResponse, rid: int) -> Any:
        data: list[str] = []
        size = 0
        async for raw in r.content:
            size += len(raw)
            if size > self.max_answer:
                raise AnswerTooLarge(self.max_answer)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line == "" and data:
                try:
                    msg = loads("\n".join(data))
                except ValueError:
                    msg = None
                data = []
                if isinstance(msg, dict) and msg.get("id") == rid and ("result" in msg or "error" in msg):
                    return msg
        return None

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            msg["params"] = dict(params)
        try:
            async with self.http.post(self.url, data=dumps(msg), headers=await self._headers(),
                                      timeout=aiohttp.ClientTimeout(total=5)) as r:  # fmt: skip
                await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, UpstreamUnavailable):  # best effort
            return

    async def close(self) -> None:
        try:
            if self.session_id:
                async with self.http.delete(self.url, headers=await self._headers(),
                                            timeout=aiohttp.ClientTimeout(total=2)) as r:  # fmt: skip
                    await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError, UpstreamUnavailable):  # ending it is best effort
            pass
        finally:
            await self.http.close()


__all__ = ["LeanSession"]
