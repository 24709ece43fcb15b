"""The MCP gateway: `/mcp`, a lean JSON-RPC handler over streamable HTTP (JSON responses).

    POST /mcp ─► Origin allowed? ─► size cap ─► verify task token (aud = {base}/mcp, exact)
             ─► JSON-RPC shape ─► Mcp-Session-Id bound to (person, task)
             ─► initialize | ping | tools/* | resources/* | prompts/* | completion/complete | notifications
    tools/call ─► "<server>__<tool>" ─► current definition pinned? ─► catalog mapping (action, resource, facts)
               ─► request digest (§8, with the tool pin) ─► Enforcer.check (decision durable before any effect)
               ─► deny / approval: tool error (isError) naming policy, reason, approval_id
               ─► io.tether/* _meta stripped ─► upstream session (server, person, task) ─► size cap
               ─► Enforcer.completed (tool.completed)

The upstream side is the official SDK's `ClientSession` (see `upstream.py`). Server-to-client
requests (sampling, elicitation) and SSE streams are not relayed: every answer is one JSON body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from secrets import token_bytes, token_hex
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from tether import __version__
from tether.audit import results
from tether.audit.model import Event
from tether.canon import canonical_fast, digest
from tether.errors import TetherError
from tether.gateway.mcp.catalog import PIN_FIELDS, Mapped, MappingFailed, make_resource, map_call, tool_pin
from tether.gateway.mcp.config import McpGatewayConfig, ServerSpec
from tether.gateway.mcp.upstream import HeaderSource, Key, UpstreamError, UpstreamPool, UpstreamUnavailable
from tether.gateway.mcp.wire import dumps
from tether.gateway.scan import LeakScanner
from tether.log import get_logger

log = get_logger("tether.gateway.mcp")

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST = HANDSHAKE_VERSIONS[-1]
SEP = "__"
META_PREFIX = "io.tether/"
META_APPROVAL = "io.tether/approval"
META_PROMPT = "io.tether/prompt"
META_PARENT = "io.tether/parent"
#: on a result: the id of its `tool.completed` event, which a later call of the task may name as its parent
META_EVENT = "io.tether/event"
MAX_PROMPT = 8192
MAX_SESSIONS = 50_000
PIN_REFRESH = 2.0
VISIBILITY_TTL = 5.0
LEAK_TEXT = "The upstream's answer contained the credential the gateway injects for this server; it was withheld"
BAD_TEXT = "The upstream's answer holds text that is not valid Unicode; it can be neither relayed nor recorded"
MAX_NAME = 512  # of a tool name in a record of a refusal
SECRETISH = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential)", re.I)
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

# JSON-RPC error codes
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = -32700, -32600, -32601, -32602, -32603
RESOURCE_NOT_FOUND = -32002
DENIED = -32003  # Tether: a resources/read or prompts/get refused by policy (data carries the decision)
UNAVAILABLE = -32004

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None, status: int = 200) -> None:
        super().__init__(message)
        self.code, self.message, self.data, self.status = code, message, data, status


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None,
                 code: int = INVALID_REQUEST) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.headers, self.code = status, message, headers or [], code


@dataclass
class Downstream:
    """One client session on /mcp, bound to the person and task of the token that opened it."""

    id: str
    person_id: str
    task_id: str
    agent_id: str
    protocol_version: str
    created: float = field(default_factory=time.monotonic)
    #: SHA-256 (hex) of the id: how an ended session is known to every process (EndedSessions)
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = hashlib.sha256(self.id.encode()).hexdigest()


class SessionEnds(Protocol):
    """Sessions ended with DELETE, shared by every process serving this deployment (tether.tokens.EndedSessions)."""

    def ended(self, key: str) -> bool: ...

    def end(self, key: str) -> None: ...  # a blocking write: run off the event loop


@dataclass
class ToolList:
    fetched: float
    tools: dict[str, dict[str, Any]]
    pins: dict[str, str] = field(default_factory=dict)  # tool → pin of its current definition


#: a JSON escape of a UTF-16 surrogate: only then can parsed text hold one on its own
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_json(name: str) -> Any:
    """`NaN`, `Infinity` and `-Infinity` are not JSON (RFC 8259), though Python's parser reads them."""
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number as a float, refused when it is too large for one (1e400 would become infinity, which
    JSON cannot write: the upstream would be sent another value than the one decided)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


class McpGateway:
    """ASGI app for `/mcp`. Collaborators are resolved late so wiring order does not matter."""

    def __init__(
        self,
        config: McpGatewayConfig,
        *,
        base_url: str,
        verifier: Callable[[], Any],
        enforcer: Callable[[], Any],
        pins: Any = None,
        headers: HeaderSource | None = None,
        metrics: Any = None,
        secrets: Callable[[str, str | None, str | None], tuple[str, ...]] | None = None,
        session_key: bytes | None = None,
        ended: SessionEnds | None = None,
    ) -> None:
        self.config = config
        #: MACs the session ids: every process with the same key accepts the sessions any of them opened
        self._session_key = session_key or token_bytes(32)
        #: (server, person, task) → the credential values last injected for it: results are scanned for them;
        #: (server, None, None) → those injected for anyone on that server (listings are scanned for all)
        self._secrets = secrets
        self.base_url = base_url.rstrip("/")
        self.resource_url = f"{self.base_url}/mcp"
        self.metadata_url = f"{self.base_url}/.well-known/oauth-protected-resource/mcp"
        self._verifier = verifier
        self._enforcer = enforcer
        self.pin_store = pins
        self.metrics = metrics
        self.servers: dict[str, ServerSpec] = dict(config.servers)
        self.pool = UpstreamPool(
            self.servers,
            headers=headers,
            on_notification=self._upstream_notification,
            max_answer=config.max_response_bytes + 64 * 1024,
        )  # the envelope around a result
        base = urlsplit(self.base_url)
        self.origins = {o.rstrip("/").lower() for o in config.allowed_origins}
        self.origins.add(f"{base.scheme}://{base.netloc}".lower())
        #: sessions this process has seen (opened here, or elsewhere and verified here), by id
        self.sessions: dict[str, Downstream] = {}
        self._ended: dict[str, None] = {}  # ids ended (DELETE) here: refused here even though their MAC holds
        #: ids ended on any process (None: this process only, as in tests that build a gateway alone)
        self._ended_anywhere = ended
        self._tools: dict[Key, ToolList] = {}  # per (server, person, task)
        self._pins: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._pins_at = -1e9
        self._pins_lock = asyncio.Lock()
        self._reported: set[tuple[str, str, str]] = set()
        self._visible: dict[tuple[Any, ...], tuple[float, bool]] = {}
        self._resource_servers: dict[str, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._www = f'Bearer resource_metadata="{self.metadata_url}"'.encode()

    # ------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)
        await self.pool.close()

    def protected_resource_metadata(self, issuer: str) -> dict[str, Any]:
        """RFC 9728 metadata of /mcp."""
        return {
            "resource": self.resource_url,
            "authorization_servers": [issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "Tether MCP gateway",
            "scopes_supported": sorted({
                (ts.action) for s in self.servers.values() for ts in s.tools.values()
            } | {"mcp:call", "mcp:read"}),
        }  # fmt: skip

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._http(scope, receive, send)
        except HttpError as exc:
            body = _rpc_error(None, exc.code, exc.message)
            await _respond(send, exc.status, body, exc.headers)
        except RpcError as exc:
            await _respond(send, exc.status or 200, _rpc_error(None, exc.code, exc.message, exc.data))

    async def _http(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        hmap: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            hmap.setdefault(k.lower(), v)
        origin = hmap.get(b"origin")
        if origin is not None and origin.decode("latin-1").rstrip("/").lower() not in self.origins:
            raise HttpError(403, "Forbidden: this Origin may not use the MCP gateway")
        method = scope["method"]
        if method == "OPTIONS":
            await _respond(send, 204, None, [(b"allow", b"POST, DELETE")])
            return
        token = self._authenticate(hmap)
        if method == "GET":
            raise HttpError(405, "this gateway offers no SSE stream; POST JSON-RPC messages",
                            [(b"allow", b"POST, DELETE")])  # fmt: skip
        if method == "DELETE":
            sid = hmap.get(b"mcp-session-id", b"").decode("latin-1")
            s = self._known(sid)
            if s is None or s.task_id != token.task_id or s.person_id != token.person_id:
                raise HttpError(404, "no such session")
            if self._ended_anywhere is not None:
                # On record first, so every process refuses the id; if that fails the session lives on, whole.
                try:
                    await asyncio.to_thread(self._ended_anywhere.end, s.key)
                except Exception as exc:
                    log.error("mcp session end not recorded", error=type(exc).__name__)
                    raise HttpError(503, "the session could not be ended now; try again") from exc
            self.sessions.pop(sid, None)
            self._ended[sid] = None
            if len(self._ended) > MAX_SESSIONS:
                del self._ended[next(iter(self._ended))]
            await _respond(send, 200, None)
            return
        if method != "POST":
            raise HttpError(405, "method not allowed", [(b"allow", b"POST, DELETE")])
        ctype = hmap.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, "Content-Type must be application/json")
        body = await self._read_body(receive, hmap)
        try:
            msg = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_not_json, parse_float=_finite)
            if _SURROGATE_ESCAPE.search(body):
                # JSON lets "\ud800" stand alone; such text is not Unicode and can be neither hashed nor recorded
                json.dumps(msg, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):
            raise HttpError(
                400,
                "Parse error: the body is not valid JSON (or repeats a key, or holds text that is not Unicode)",
                code=PARSE_ERROR,
            ) from None
        if isinstance(msg, list):
            raise HttpError(400, "JSON-RPC batches are not supported; send one message per request")
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            raise HttpError(400, "Invalid Request: not a JSON-RPC 2.0 message")
        rpc_method = msg.get("method")
        if rpc_method is None:  # a response to a server request, or junk: nothing to do
            if "id" in msg and ("result" in msg or "error" in msg):
                await _respond(send, 202, None)
                return
            raise HttpError(400, "Invalid Request: no method")
        if not isinstance(rpc_method, str):
            raise HttpError(400, "Invalid Request: method must be a string")
        params = msg.get("params")
        if params is not None and not isinstance(params, dict):
            raise HttpError(400, "Invalid Request: params must be an object")
        params = params or {}
        if "id" not in msg:  # a notification
            await self._notification(hmap, token, rpc_method, params)
            await _respond(send, 202, None)
            return
        rid = msg["id"]
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            raise HttpError(400, "Invalid Request: id must be a string or an integer")
        extra: list[tuple[bytes, bytes]] = []
        if rpc_method == "initialize":
            result, sid = self._initialize(token, params)
            extra.append((b"mcp-session-id", sid.encode()))
            await _respond(send, 200, {"jsonrpc": "2.0", "id": rid, "result": result}, extra)
            return
        session = self._session(hmap, token)
        try:
            result = await self._dispatch(rpc_method, params, token, session, hmap)
            doc = {"jsonrpc": "2.0", "id": rid, "result": result}
        except RpcError as exc:
            doc = _rpc_error(rid, exc.code, exc.message, exc.data)
        await _respond(send, 200, doc, extra)

    async def _read_body(self, receive: ASGIReceive, hmap: Mapping[bytes, bytes]) -> bytes:
        cap = self.config.max_request_bytes
        declared = hmap.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > cap
            except ValueError:
                raise HttpError(400, "Content-Length is not a number") from None
            if too_big:
                raise HttpError(413, f"the message is larger than the gateway's cap of {cap} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                raise HttpError(400, "the client went away")
            chunk = m.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise HttpError(413, f"the message is larger than the gateway's cap of {cap} bytes")
            chunks.append(chunk)
            if not m.get("more_body", False):
                return b"".join(chunks)

    def _authenticate(self, hmap: Mapping[bytes, bytes]) -> Any:
        from tether.tokens.errors import InvalidToken

        auth = hmap.get(b"authorization", b"").decode("latin-1")
        if auth[:7].lower() != "bearer " or not auth[7:].strip():
            raise HttpError(401, "Unauthorized: a task token is required (Authorization: Bearer)",
                            [(b"www-authenticate", self._www)])  # fmt: skip
        verifier = self._verifier()
        if verifier is None:
            raise HttpError(503, "token verification is not available", code=INTERNAL)
        try:
            return verifier.verify(auth[7:].strip(), audience=self.resource_url)
        except InvalidToken as exc:
            value = self._www + b', error="invalid_token", error_description="' + _quote(exc.detail) + b'"'
            raise HttpError(401, f"Unauthorized: {exc.detail}", [(b"www-authenticate", value)]) from None
        except TetherError as exc:  # stale revocation state and the like: fail closed
            raise HttpError(exc.status if exc.status >= 400 else 503, exc.detail, code=INTERNAL) from None

    def _initialize(self, token: Any, params: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        asked = params.get("protocolVersion")
        version = asked if isinstance(asked, str) and asked in HANDSHAKE_VERSIONS else LATEST
        sid = self._session_id(token, version)
        self._keep(Downstream(sid, token.person_id, token.task_id, token.agent_id, version))
        caps: dict[str, Any] = {"tools": {"listChanged": True}, "logging": {}}
        if any(True for _ in self.servers):
            caps["resources"] = {"listChanged": True}
            caps["prompts"] = {"listChanged": True}
            caps["completions"] = {}
        return {
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": {"name": "tether-mcp-gateway", "title": "Tether MCP gateway", "version": __version__},
            "instructions": "Tools are named <server>__<tool>. Calls are decided by policy and audited; "
            "a refused call returns a tool error naming the policy, and a call held for approval returns "
            'an approval_id: once approved, repeat the identical call with _meta {"io.tether/approval": id}.',
        }, sid

    def _session(self, hmap: Mapping[bytes, bytes], token: Any) -> Downstream:
        sid = hmap.get(b"mcp-session-id")
        if sid is None:
            raise HttpError(400, "Bad Request: Mcp-Session-Id is required (send initialize first)")
        s = self._known(sid.decode("latin-1"))
        if s is None or s.task_id != token.task_id or s.person_id != token.person_id:
            raise HttpError(404, "Session not found: initialize again")
        pv = hmap.get(b"mcp-protocol-version")
        if pv is not None and pv.decode("latin-1") not in HANDSHAKE_VERSIONS:
            raise HttpError(400, "Bad Request: unsupported MCP-Protocol-Version")
        return s

    # Session ids are signed, not stored: `mcs_` + base64url(JSON [version, person, task, agent, nonce])
    # + "." + base64url(HMAC-SHA-256). Any process holding the key accepts a session another opened
    # (`tether serve --workers`, or several servers behind one name); the id still binds the session to
    # the person and task of the token that opened it, and each request is authorised by its own token.

    def _session_id(self, token: Any, version: str) -> str:
        payload = base64.urlsafe_b64encode(
            json.dumps([version, token.person_id, token.task_id, token.agent_id, token_hex(8)],
                       separators=(",", ":")).encode()
        ).rstrip(b"=")  # fmt: skip
        mac = base64.urlsafe_b64encode(hmac.new(self._session_key, payload, hashlib.sha256).digest()).rstrip(b"=")
        return "mcs_" + payload.decode() + "." + mac.decode()

    def _known(self, sid: str) -> Downstream | None:
        """The live session `sid` names (verified by its MAC), or None: unknown, forged, or ended anywhere."""
        s = self.sessions.get(sid)
        if s is not None:
            if self._ended_anywhere is not None and self._ended_anywhere.ended(s.key):
                self.sessions.pop(sid, None)  # ended on another process
                return None
            return s
        if sid in self._ended or not sid.startswith("mcs_") or len(sid) > 1024:
            return None
        payload, _, mac = sid[4:].partition(".")
        good = base64.urlsafe_b64encode(
            hmac.new(self._session_key, payload.encode(), hashlib.sha256).digest()
        ).rstrip(b"=")  # fmt: skip
        if not hmac.compare_digest(good, mac.encode()):
            return None
        try:
            doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            version, person, task, agent, _nonce = doc
        except (ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (version, person, task, agent)) or version not in HANDSHAKE_VERSIONS:
            return None
        s = Downstream(sid, person, task, agent, version)
        if self._ended_anywhere is not None and self._ended_anywhere.ended(s.key):
            return None
        return self._keep(s)

    def _keep(self, s: Downstream) -> Downstream:
        if len(self.sessions) >= MAX_SESSIONS:  # a cache: an evicted session is verified again on its next call
            del self.sessions[next(iter(self.sessions))]
        self.sessions[s.id] = s
        return s

    async def _notification(
        self, hmap: Mapping[bytes, bytes], token: Any, method: str, params: Mapping[str, Any]
    ) -> None:
        if method in ("notifications/initialized", "notifications/cancelled", "notifications/progress"):
            return
        if method == "notifications/roots/list_changed":
            for name in self.servers:
                await self.pool.notify((name, token.person_id, token.task_id), method, None)

    # ------------------------------------------------------------ dispatch

    async def _dispatch(self, method: str, params: dict[str, Any], token: Any, session: Downstream,
                        hmap: Mapping[bytes, bytes]) -> dict[str, Any]:  # fmt: skip
        if method == "ping":
            return {}
        if method == "tools/list":
            return await self._tools_list(token)
        if method == "tools/call":
            return await self._tools_call(token, params, hmap)
        if method == "resources/list":
            return await self._resources_list(token, "resources/list", "resources")
        if method == "resources/templates/list":
            return await self._resources_list(token, "resources/templates/list", "resourceTemplates")
        if method == "resources/read":
            return await self._read(token, params, hmap, kind="resource")
        if method == "prompts/list":
            return await self._prompts_list(token)
        if method == "prompts/get":
            return await self._read(token, params, hmap, kind="prompt")
        if method == "completion/complete":
            return await self._complete(token, params, hmap)
        if method == "logging/setLevel":
            # Answered here: the gateway relays no server log messages (no stream to the client), so an
            # upstream's log level changes nothing the client sees, and nothing reaches an upstream undecided.
            return {}
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return {}
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def _key(self, server: str, token: Any) -> Key:
        return (server, token.person_id, token.task_id)

    def _public(self, server: str, name: str) -> str:
        return f"{server}{SEP}{name}" if self.config.namespace else name

    def _split(self, public: Any) -> tuple[str, str]:
        if not isinstance(public, str) or not public:
            raise RpcError(INVALID_PARAMS, "name must be a non-empty string")
        if not self.config.namespace:
            return next(iter(self.servers)), public
        server, sep, name = public.partition(SEP)
        if not sep or server not in self.servers or not name:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {public[:200]} (tools are named <server>{SEP}<tool>)")
        return server, name

    # ------------------------------------------------------------ pins and tool lists

    async def _pinned(self) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
        if self.pin_store is None:
            return self._pins
        if time.monotonic() - self._pins_at > PIN_REFRESH:
            async with self._pins_lock:
                if time.monotonic() - self._pins_at > PIN_REFRESH:
                    self._pins = await asyncio.to_thread(self.pin_store.all)
                    self._pins_at = time.monotonic()
        return self._pins

    def pins_changed(self) -> None:
        """Drop the pin cache (after `approve`), so the next call reads the store."""
        self._pins_at = -1e9

    async def list_upstream_tools(self, server: str, key: Key, *, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """The server's tools as the session of `key` (server, person, task) lists them, cached for `list_ttl`.

        Per key, not per server: a listing may differ per person (per-person credentials upstream), and
        what one person's session was told is never shown to another."""
        cached = self._tools.get(key)
        if cached is not None and not fresh and time.monotonic() - cached.fetched < self.config.list_ttl:
            return cached.tools
        tools: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        for _ in range(50):
            res = await self.pool.request(key, "tools/list", {"cursor": cursor} if cursor else None, retry=True)
            for t in res.get("tools") or []:
                if isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"] not in tools:
                    tools[t["name"]] = t
            cursor = res.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        if key not in self._tools and len(self._tools) >= MAX_SESSIONS:
            del self._tools[next(iter(self._tools))]
        self._tools[key] = ToolList(time.monotonic(), tools, {n: tool_pin(d) for n, d in tools.items()})
        await self._check_pins(server, tools)
        return tools

    def _pin_of(self, key: Key, name: str, definition: Mapping[str, Any]) -> str:
        cached = self._tools.get(key)
        if cached is not None and cached.tools.get(name) is definition:
            return cached.pins[name]
        return tool_pin(definition)

    async def _check_pins(self, server: str, tools: Mapping[str, dict[str, Any]]) -> None:
        pins = await self._pinned()
        for name, definition in tools.items():
            stored = pins.get((server, name))
            if stored is None:
                continue
            current = tool_pin(definition)
            if current != stored[0] and (server, name, current) not in self._reported:
                self._reported.add((server, name, current))
                log.warning("tool definition changed since it was pinned", server=server, tool=name)
                enforcer = self._enforcer()
                if enforcer is not None:
                    try:
                        await enforcer.record(Event(
                            type="tool.pin_changed", resource={"type": "Tool", "id": f"{server}/{name}",
                                                               "system": f"mcp:{server}"},
                            detail={"server": server, "tool": name, "pinned": stored[0], "current": current},
                        ))  # fmt: skip
                    except TetherError as exc:
                        log.error("could not record tool.pin_changed", error=exc.detail)

    def _upstream_notification(self, method: str, key: Any) -> None:
        if method == "notifications/tools/list_changed":  # every listing of that server is stale
            for k in [k for k in self._tools if k[0] == key[0]]:
                self._tools.pop(k, None)

    async def _tools_list(self, token: Any) -> dict[str, Any]:
        pins = await self._pinned()
        out: list[dict[str, Any]] = []
        for server in sorted(self.servers):
            spec = self.servers[server]
            key = self._key(server, token)
            try:
                tools = await self.list_upstream_tools(server, key)
            except (UpstreamUnavailable, UpstreamError) as exc:
                log.warning("tools/list: upstream unavailable", server=server, error=str(exc))
                continue
            listed: list[dict[str, Any]] = []
            for name, definition in tools.items():
                stored = pins.get((server, name))
                if stored is None or stored[0] != self._pin_of(key, name, definition):
                    continue  # unpinned or changed: hidden until approved
                if not self._may_use(token, spec, name, stored[1]):
                    continue
                # what the pin covers, nothing else: other members (_meta, icons, …) could change unseen
                entry = {k: definition[k] for k in PIN_FIELDS if k in definition}
                entry["name"] = self._public(server, name)
                listed.append(entry)
            out.extend(await self._clean(token, server, "tools/list", listed))
        return {"tools": out}

    async def _clean(self, token: Any, server: str, method: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A server's entries of a listing, less any that holds a credential injected for that server, for anyone
        (one loud event), and any that cannot be relayed (text that is not Unicode)."""
        encoded = []
        for item in items:
            try:
                encoded.append((item, dumps(item)))
            except ValueError:
                log.warning("listing entry that is not valid text dropped", server=server, method=method)
        scanner = self._server_scanner(server)
        if scanner is None or not any(scanner.contains(body) for _, body in encoded):
            return [item for item, _ in encoded]
        await self._withheld_event(token, server, method)
        return [item for item, body in encoded if not scanner.contains(body)]

    def _server_scanner(self, server: str) -> LeakScanner | None:
        """A scanner for every credential injected for `server` lately, whoever it was injected for: a listing
        may be cached, and an upstream may echo what another session sent it."""
        if self._secrets is None:
            return None
        found = self._secrets(server, None, None)
        return LeakScanner(found) if found else None

    async def _withheld_event(self, token: Any, server: str, method: str) -> None:
        log.error("credential in an upstream answer: withheld", server=server, method=method)
        try:
            await self._enforcer().record(self._leak_event(server, method, token))
        except TetherError as exc:
            log.error("could not record credential.leak_blocked", error=exc.detail)

    def _may_use(self, token: Any, spec: ServerSpec, tool: str, pinned: Mapping[str, Any]) -> bool:
        """Listed when the agent may call it: policy allow or approval-able for its Tool resource and action."""
        ts = spec.tools.get(tool)
        action = ts.action if ts is not None else "mcp:call"
        if action not in token.scopes:
            return False
        k = (token.task_id, token.agent_id, token.scopes, spec.name, tool)
        hit = self._visible.get(k)
        now = time.monotonic()
        if hit is not None and now - hit[0] < VISIBILITY_TTL:
            return hit[1]
        ok = True
        enforcer = self._enforcer()
        policy = getattr(enforcer, "policy", None)
        if policy is not None and (ts is None or ts.resource is None):
            try:
                mapped = map_call(spec, tool, {}, pinned)
                req = enforcer.request(_ListCall(token, mapped))
                ok = policy.decide(req).effect.value != "deny"
            except Exception as exc:  # noqa: BLE001 — a decision that cannot be made hides the tool
                log.warning("tools/list: could not decide visibility", tool=tool, error=repr(exc))
                ok = False
        if len(self._visible) > 100_000:
            self._visible.clear()
        self._visible[k] = (now, ok)
        return ok

    # ------------------------------------------------------------ tools/call

    async def _tools_call(self, token: Any, params: dict[str, Any], hmap: Mapping[bytes, bytes]) -> dict[str, Any]:
        name = params.get("name")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "arguments must be an object")
        try:
            server, tool = self._split(name)
        except RpcError:
            if not isinstance(name, str) or not name:
                raise
            await self._refused_early(token, None, name, arguments, "tether:tool-unknown", "no such tool")
            return _tool_error(f"Tool {name[:200]} not found (tools are named <server>{SEP}<tool>)",
                               {"reason": "unknown_tool"})  # fmt: skip
        spec = self.servers[server]
        key = self._key(server, token)
        meta, tether_meta = _split_meta(params.get("_meta"))
        try:
            tools = await self.list_upstream_tools(server, key)
        except (UpstreamUnavailable, UpstreamError) as exc:
            return _tool_error(f"MCP server {server} is unavailable: {_msg(exc)}")
        definition = tools.get(tool)
        if definition is None:
            tools = await self._refresh(server, key) or tools
            definition = tools.get(tool)
            if definition is None:  # a tool execution error, as the reference servers answer it
                await self._refused_early(token, server, tool, arguments, "tether:tool-unknown", "no such tool")
                return _tool_error(f"Tool {self._public(server, tool)} not found", {"reason": "unknown_tool"})
        pins = await self._pinned()
        stored = pins.get((server, tool))
        pin = self._pin_of(key, tool, definition)
        if stored is None or stored[0] != pin:
            why = "is not approved (no pin)" if stored is None else "changed since it was approved (pin mismatch)"
            text = (
                f"Tool {self._public(server, tool)} {why}; an operator must review it: tether mcp pin {server} {tool}"
            )
            await self._refused_early(token, server, tool, arguments, "tether:tool-not-pinned", f"the tool {why}")
            return _tool_error(text, {"reason": "tool_not_pinned", "pin": pin})
        try:
            mapped = map_call(spec, tool, arguments, stored[1])
        except MappingFailed as exc:
            await self._refused_early(token, server, tool, arguments, "tether:mapping-failed",
                                      f"the arguments do not map to a resource: {exc}")  # fmt: skip
            return _tool_error(f"Refused: the arguments do not map to a resource: {exc}", {"reason": "mapping_failed"})
        if META_PARENT in tether_meta and not self._parent_ok(token, tether_meta[META_PARENT]):
            why = f"_meta {META_PARENT} names no tool result of this task"
            await self._refused_early(token, server, tool, arguments, "tether:parent-invalid", why)
            return _tool_error(f"Refused: {why}", {"reason": "parent_invalid"})
        call = self._call(token, mapped, server, pin, arguments, tether_meta, hmap, name=f"{server}/{tool}")
        try:
            verdict = await self._check(call)
        except _Refused as exc:
            return _tool_error(f"Refused: {exc.error.detail}", {"reason": exc.error.code})
        if not verdict.allowed:
            return _refusal(verdict)
        forward: dict[str, Any] = {"name": tool, "arguments": arguments}
        if meta:
            forward["_meta"] = meta
        started = time.perf_counter()
        outcome: dict[str, Any]
        try:
            result = await self.pool.request(key, "tools/call", forward)
        except UpstreamUnavailable as exc:
            outcome = {"status": "unavailable", "error": exc.detail[:300]}
            await self._completed(call, verdict, outcome, started)
            return _tool_error(exc.detail)
        except UpstreamError as exc:
            raise await self._upstream_error(call, verdict, key, exc, started) from None
        try:
            body = dumps(result)
        except ValueError:  # text that is not Unicode (an escaped lone surrogate): it can be neither relayed nor kept
            await self._completed(call, verdict, {"status": "bad_result"}, started)
            return _tool_error(BAD_TEXT, {"reason": "bad_result"})
        size = len(body)
        if size > self.config.max_response_bytes:
            await self._completed(call, verdict, {"status": "too_large", "bytes": size}, started)
            return _tool_error(
                f"The tool's result is larger than the gateway's cap of {self.config.max_response_bytes} bytes"
            )
        if self._leaks(key, body):
            await self._leak_blocked(call, verdict, server, started)
            return _tool_error(LEAK_TEXT, {"reason": "credential_leak_blocked"})
        # the outcome is recorded after the answer leaves (an allowed call without one reads "unknown" at start-up)
        outcome = {"status": "error" if result.get("isError") else "ok", "bytes": size, "items": 1,
                   "latency_us": int((time.perf_counter() - started) * 1e6)}  # fmt: skip
        completed_id = self._result_id(token.task_id, verdict.decision_event_id)
        self._defer_completed(call, verdict, outcome, started, completed_id)
        return _with_event(result, completed_id)

    def _result_id(self, task_id: str, decision_event_id: str) -> str:
        """The id of a result's tool.completed event (`tether.audit.results`): derived from the call's decision
        event, it names the task to every process holding the session key, and start-up recovery names an
        outcome lost in a crash with it again."""
        return results.result_id(self._session_key, task_id, decision_event_id)

    def _parent_ok(self, token: Any, parent: Any) -> bool:
        """Whether `parent` is the tool.completed event of a result this deployment gave to this call's task."""
        return results.names_result_of(self._session_key, token.task_id, parent)

    def _defer_completed(
        self, call: Any, verdict: Any, outcome: dict[str, Any], started: float, completed_id: str
    ) -> None:
        """Write a tool.completed record (its id already given to the client) without holding up the answer: the
        audit log takes it as a lazy record, committed with the next call's decision (or alone within its lazy
        window)."""
        task = asyncio.create_task(self._completed(call, verdict, outcome, started, completed_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh(self, server: str, key: Key) -> dict[str, dict[str, Any]] | None:
        try:
            return await self.list_upstream_tools(server, key, fresh=True)
        except (UpstreamUnavailable, UpstreamError):
            return None

    def _call(self, token: Any, mapped: Mapped, server: str, pin: str, arguments: Mapping[str, Any],
              tmeta: Mapping[str, Any], hmap: Mapping[bytes, bytes], *, name: str) -> Any:  # fmt: skip
        from tether.gateway._enforce import Call

        r = mapped.resource
        args_sha = hashlib.sha256(_argument_bytes(arguments)).hexdigest()
        request_digest = digest({
            "task_id": token.task_id, "person": token.person_id, "actors": list(token.actors),
            "action": mapped.action, "resource": {"type": r.type, "id": r.id, "system": r.system},
            "upstream": server, "tool_pin": pin, "content_type": "application/json", "body_sha256": args_sha,
        })  # fmt: skip
        prompt = tmeta.get(META_PROMPT)
        approval = tmeta.get(META_APPROVAL)
        parent = tmeta.get(META_PARENT)
        tp = TRACEPARENT.match(hmap.get(b"traceparent", b"").decode("latin-1").strip())
        return Call(
            token=token, action=mapped.action, resource=r, facts=mapped.facts, request_digest=request_digest,
            summary={"tool": name, "arguments": _redact(arguments), "arguments_sha256": args_sha},
            gateway="mcp", upstream=server,
            prompt=prompt[:MAX_PROMPT] if isinstance(prompt, str) else None,
            approval_id=approval if isinstance(approval, str) and approval else None,
            trace_id=tp.group(1) if tp else None,
            parent_id=parent if isinstance(parent, str) else None,  # checked by both callers first (_parent_ok)
        )  # fmt: skip

    async def _check(self, call: Any) -> Any:
        enforcer = self._enforcer()
        if enforcer is None:
            raise RpcError(UNAVAILABLE, "no enforcement is available: calls are refused")
        try:
            return await enforcer.check(call)
        except TetherError as exc:
            if exc.status in (401, 403, 404, 409):  # an approval that is not valid for this call, and the like
                raise _Refused(exc) from None
            raise RpcError(UNAVAILABLE, f"refused (fail closed): {exc.detail}") from None

    def _leaks(self, key: Key, body: bytes) -> bool:
        """Whether an upstream's answer holds a credential the gateway injected for this key (any encoding)."""
        if self._secrets is None:
            return False
        found = self._secrets(*key)
        return bool(found) and LeakScanner(found).contains(body)

    def _leak_event(self, server: str, where: str, token: Any, **links: Any) -> Event:
        """The metric and the `credential.leak_blocked` event for an answer of `server` withheld at `where`."""
        if self.metrics is not None:
            self.metrics.child(self.metrics.upstream_calls, "mcp", server, "leak_blocked").inc()
        return Event(
            type="credential.leak_blocked", actor=token.agent_id, task_id=token.task_id, agent_id=token.agent_id,
            person_id=token.person_id, **links,
            detail={"gateway": "mcp", "upstream": server, "credential": self.servers[server].credential,
                    "where": where},
        )  # fmt: skip

    async def _leak_blocked(self, call: Any, verdict: Any, server: str, started: float, where: str = "result") -> None:
        """The answer is withheld: a loud event, the outcome, the metric."""
        try:
            await self._enforcer().record(self._leak_event(
                server, where, call.token, trace_id=call.trace_id, parent_id=verdict.decision_event_id,
                action=call.action, request_digest=call.request_digest,
            ))  # fmt: skip
        finally:
            await self._completed(call, verdict, {"status": "leak_blocked"}, started)

    async def _upstream_error(self, call: Any, verdict: Any, key: Key, exc: UpstreamError, started: float) -> RpcError:
        """The error to relay for an upstream's JSON-RPC error to a decided call, its outcome recorded.

        Scanned like a result (an upstream that echoes the request into its error would hand over the
        injected credential); Tether's own codes (a refusal, fail closed) are not the upstream's to use."""
        code = INTERNAL if exc.rpc_code in (DENIED, UNAVAILABLE) else exc.rpc_code
        data = exc.rpc_data
        try:
            relayed = dumps({"message": exc.rpc_message, "data": data})
        except ValueError:  # not valid text: the message alone, never the data
            data = None
            relayed = json.dumps(exc.rpc_message, ensure_ascii=True).encode()
        if self._leaks(key, relayed):
            await self._leak_blocked(call, verdict, key[0], started, where="error")
            return RpcError(INTERNAL, LEAK_TEXT)
        await self._completed(call, verdict, {"status": "error", "rpc_code": exc.rpc_code}, started)
        return RpcError(code, exc.rpc_message, data)

    async def _refused_early(
        self, token: Any, server: str | None, tool: str, arguments: Mapping[str, Any], policy_id: str, reason: str,
        *, action: str = "mcp:call", rtype: str = "Tool",
    ) -> None:  # fmt: skip
        """A call refused before any decision (no such tool, not pinned, arguments that do not map, a parent that
        is no result of the task): on record as a deny, as the HTTP gateway records an unmapped route. Fail closed
        when it cannot be. `action` and `rtype` name what was asked (a read of a prompt or resource)."""
        enforcer = self._enforcer()
        if enforcer is None:
            raise RpcError(UNAVAILABLE, "no enforcement is available: calls are refused")
        name = f"{server}/{tool}" if server is not None else tool
        try:
            await enforcer.record(Event(
                type="policy.decided", actor=token.agent_id, task_id=token.task_id, agent_id=token.agent_id,
                person_id=token.person_id, action=action, decision="deny", policy_ids=(policy_id,),
                resource={"type": rtype, "id": name[:MAX_NAME], "system": f"mcp:{server}" if server else "mcp"},
                detail={"gateway": "mcp", "upstream": server, "tool": name[:MAX_NAME], "reasons": [reason[:500]],
                        "arguments_sha256": hashlib.sha256(_argument_bytes(arguments)).hexdigest()},
            ))  # fmt: skip
        except TetherError as exc:
            raise RpcError(UNAVAILABLE, f"refused (fail closed): {exc.detail}") from None

    async def _completed(
        self, call: Any, verdict: Any, outcome: dict[str, Any], started: float, completed_id: str | None = None
    ) -> None:
        outcome.setdefault("latency_us", int((time.perf_counter() - started) * 1e6))
        enforcer = self._enforcer()
        try:
            await enforcer.completed(call, verdict, outcome=outcome, event_id=completed_id)
        except Exception as exc:  # noqa: BLE001 — recorded after the answer: log, never lose the loop
            log.error("could not record tool.completed", error=repr(exc))

    # ------------------------------------------------------------ resources and prompts

    async def _resources_list(self, token: Any, method: str, field_name: str) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for server in sorted(self.servers):
            if "mcp:read" not in token.scopes:
                break
            try:
                res = await self.pool.request(self._key(server, token), method, None, retry=True)
            except (UpstreamUnavailable, UpstreamError):
                continue
            items = [item for item in res.get(field_name) or [] if isinstance(item, dict)]
            for item in await self._clean(token, server, method, items):
                uri = item.get("uri") or item.get("uriTemplate")
                if isinstance(uri, str):
                    if len(self._resource_servers) > 100_000:
                        self._resource_servers.clear()
                    if self._resource_servers.setdefault(uri, server) != server:
                        # two servers claim it: neither is trusted with it (one may be shadowing the other)
                        self._resource_servers[uri] = AMBIGUOUS
                        log.warning("resource listed by more than one server: refused", uri=uri[:200])
                out.append(item)
        return {field_name: out}

    async def _prompts_list(self, token: Any) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for server in sorted(self.servers):
            if "mcp:read" not in token.scopes:
                break
            try:
                res = await self.pool.request(self._key(server, token), "prompts/list", None, retry=True)
            except (UpstreamUnavailable, UpstreamError):
                continue
            items = [i for i in res.get("prompts") or [] if isinstance(i, dict) and isinstance(i.get("name"), str)]
            items = await self._clean(token, server, "prompts/list", items)
            out.extend({**item, "name": self._public(server, item["name"])} for item in items)
        return {"prompts": out}

    def _resource_server(self, uri: str) -> str:
        """The one server a resource URI belongs to: the server that listed it, else the one whose template's
        fixed prefix it starts with. Claimed by several (listed, or matched by several templates): refused."""
        server = self._resource_servers.get(uri)
        if server is AMBIGUOUS:
            raise RpcError(INVALID_PARAMS, "more than one MCP server lists this resource: refused", {"uri": uri[:500]})
        if server is not None:
            return server
        if len(self.servers) == 1:
            return next(iter(self.servers))
        matched = {
            srv
            for known, srv in self._resource_servers.items()  # a template's fixed prefix
            if "{" in known and (prefix := known.split("{", 1)[0]) and uri.startswith(prefix)
        }
        if AMBIGUOUS in matched or len(matched) > 1:
            raise RpcError(INVALID_PARAMS, "more than one MCP server's template matches this resource: refused",
                           {"uri": uri[:500]})  # fmt: skip
        if matched:
            return matched.pop()
        raise RpcError(RESOURCE_NOT_FOUND, "Resource not found (list resources first)", {"uri": uri[:500]})

    async def _read(
        self, token: Any, params: dict[str, Any], hmap: Mapping[bytes, bytes], *, kind: str
    ) -> dict[str, Any]:
        meta, tmeta = _split_meta(params.get("_meta"))
        if kind == "completion":  # argument completions for a prompt or a resource template: a read of it
            ref = params.get("ref")
            if not isinstance(ref, dict):
                raise RpcError(INVALID_PARAMS, "ref must be an object")
            forward = {k: v for k, v in params.items() if k != "_meta"}
            if ref.get("type") == "ref/prompt":
                server, name = self._split(ref.get("name"))
                forward["ref"] = {**ref, "name": name}
                rid, rtype = f"{server}/{name}", "Prompt"
            elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str) and ref["uri"]:
                uri = _plain_uri(ref["uri"])
                server = self._resource_server(uri)
                rid, rtype = f"{server}/{uri}", "McpResource"
            else:
                raise RpcError(INVALID_PARAMS, "ref.type must be ref/prompt or ref/resource")
            method = "completion/complete"
        elif kind == "resource":
            given = params.get("uri")
            if not isinstance(given, str) or not given:
                raise RpcError(INVALID_PARAMS, "uri must be a non-empty string")
            uri = _plain_uri(given)
            server = self._resource_server(uri)
            forward = {"uri": uri}
            rid, rtype, method = f"{server}/{uri}", "McpResource", "resources/read"
        else:
            server, name = self._split(params.get("name"))
            args = params.get("arguments")
            if args is not None and not isinstance(args, dict):
                raise RpcError(INVALID_PARAMS, "arguments must be an object")
            rid, rtype, method = f"{server}/{name}", "Prompt", "prompts/get"
            forward = {"name": name, **({"arguments": args} if args is not None else {})}
        spec = self.servers[server]
        if META_PARENT in tmeta and not self._parent_ok(token, tmeta[META_PARENT]):
            why = f"_meta {META_PARENT} names no result of this task"
            await self._refused_early(token, server, rid[len(server) + 1 :], forward, "tether:parent-invalid", why,
                                      action="mcp:read", rtype=rtype)  # fmt: skip
            raise RpcError(INVALID_PARAMS, f"Refused: {why}", {"reason": "parent_invalid"})
        resource = make_resource(rtype, rid, spec.system_name, "internal", None, {"server": server})
        mapped = Mapped("mcp:read", resource, {"kind": kind})
        call = self._call(token, mapped, server, method, forward, tmeta, hmap, name=rid)
        try:
            verdict = await self._check(call)
        except _Refused as exc:
            raise RpcError(DENIED, f"Refused: {exc.error.detail}", {"code": exc.error.code}) from None
        if not verdict.allowed:
            d = verdict.decision
            data = {"decision_id": d.id, "effect": d.effect.value, "policy_ids": list(d.policy_ids),
                    "reasons": list(d.reasons), "approval_id": verdict.approval_id}  # fmt: skip
            raise RpcError(DENIED, _refusal_text(verdict), data)
        if meta:
            forward["_meta"] = meta
        started = time.perf_counter()
        try:
            result = await self.pool.request(self._key(server, token), method, forward, retry=True)
        except UpstreamUnavailable as exc:
            await self._completed(call, verdict, {"status": "unavailable"}, started)
            raise RpcError(UNAVAILABLE, exc.detail) from None
        except UpstreamError as exc:
            raise await self._upstream_error(call, verdict, self._key(server, token), exc, started) from None
        try:
            body = dumps(result)
        except ValueError:
            await self._completed(call, verdict, {"status": "bad_result"}, started)
            raise RpcError(INTERNAL, BAD_TEXT) from None
        size = len(body)
        if size > self.config.max_response_bytes:
            await self._completed(call, verdict, {"status": "too_large", "bytes": size}, started)
            raise RpcError(
                INTERNAL, f"the result is larger than the gateway's cap of {self.config.max_response_bytes} bytes"
            )
        if self._leaks(self._key(server, token), body):
            await self._leak_blocked(call, verdict, server, started)
            raise RpcError(INTERNAL, LEAK_TEXT)
        completed_id = self._result_id(token.task_id, verdict.decision_event_id)
        await self._completed(call, verdict, {"status": "ok", "bytes": size, "items": 1}, started, completed_id)
        return _with_event(result, completed_id)

    async def _complete(self, token: Any, params: dict[str, Any], hmap: Mapping[bytes, bytes]) -> dict[str, Any]:
        """Completions of a prompt's or resource's arguments: decided and recorded as a read of that prompt or
        resource (a completion can reveal what it holds), then forwarded without Tether's own _meta."""
        if "mcp:read" not in token.scopes:
            return {"completion": {"values": [], "hasMore": False}}
        return await self._read(token, params, hmap, kind="completion")


@dataclass(frozen=True)
class _ListCall:
    token: Any
    mapped: Mapped

    @property
    def action(self) -> str:
        return self.mapped.action

    @property
    def resource(self) -> Any:
        return self.mapped.resource

    @property
    def facts(self) -> Mapping[str, Any]:
        return self.mapped.facts


class _Refused(RpcError):
    """Enforcement refused the call itself (e.g. an approval id that is not valid for it)."""

    def __init__(self, error: TetherError) -> None:
        super().__init__(DENIED, error.detail)
        self.error = error


def _with_event(result: dict[str, Any], completed_id: str) -> dict[str, Any]:
    """`result` naming its tool.completed event; an upstream's own io.tether/* keys dropped (it does not speak for
    Tether)."""
    meta, _ = _split_meta(result.get("_meta"))
    return {**result, "_meta": {**meta, META_EVENT: completed_id}}


def _split_meta(meta: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta to forward, Tether's own io.tether/* keys); Tether's keys never reach the upstream."""
    if not isinstance(meta, dict):
        return {}, {}
    # any spelling of the prefix is Tether's and stays here; only the exact keys are read
    keep = {k: v for k, v in meta.items() if not str(k).lower().startswith(META_PREFIX)}
    mine = {k: v for k, v in meta.items() if str(k).startswith(META_PREFIX)}
    return keep, mine


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        return "…"
    if isinstance(value, dict):
        return {str(k)[:64]: ("***" if SECRETISH.search(str(k)) else _redact(v, depth + 1))
                for k, v in list(value.items())[:64]}  # fmt: skip
    if isinstance(value, list):
        return [_redact(v, depth + 1) for v in value[:32]]
    if isinstance(value, str):
        return value if len(value) <= 256 else value[:256] + f"…({len(value)} chars)"
    return value


#: a resource URI that more than one server claims
AMBIGUOUS = "\x00ambiguous"


def _plain_uri(uri: str) -> str:
    """A resource URI the policy sees as the upstream will: refused when its path holds dot segments or
    separators in disguise (`file:///pub/../secret` would be decided as one path and read as another)."""
    if len(uri) > 4096:
        raise RpcError(INVALID_PARAMS, "the resource URI is too long")
    raw = urlsplit(uri).path
    path = unquote(raw)
    if "\\" in path or "\x00" in path or "%2f" in raw.lower() or any(seg in (".", "..") for seg in path.split("/")):
        raise RpcError(INVALID_PARAMS, "resource URIs with dot segments or encoded separators are refused",
                       {"uri": uri[:500]})  # fmt: skip
    return uri


def _argument_bytes(arguments: Mapping[str, Any]) -> bytes:
    """The bytes a call's arguments are digested from: their RFC 8785 JSON, or, for arguments it cannot
    write (integers past 2^53, as 64-bit ids are), a marked sorted-key JSON, stable for equal arguments."""
    try:
        return canonical_fast(dict(arguments))
    except ValueError:
        return b"tether:sorted-json:" + json.dumps(
            arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8", "surrogatepass")


def _msg(exc: TetherError) -> str:
    return exc.detail


def _tool_error(text: str, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if meta:
        out["_meta"] = {"io.tether/refusal": dict(meta)}
    return out


def _refusal_text(verdict: Any) -> str:
    d = verdict.decision
    policies = ", ".join(d.policy_ids) or "default deny"
    reasons = "; ".join(d.reasons) or "no policy permits this call"
    if d.effect.value == "approval_required":
        return (f"Approval required (policy {policies}: {reasons}). approval_id={verdict.approval_id} — once a "
                f'person approves it, repeat the identical call with _meta {{"io.tether/approval": '
                f'"{verdict.approval_id}"}}. Decision {d.id}.')  # fmt: skip
    return f"Denied by policy {policies}: {reasons}. Decision {d.id}."


def _refusal(verdict: Any) -> dict[str, Any]:
    d = verdict.decision
    return _tool_error(_refusal_text(verdict), {
        "effect": d.effect.value, "decision_id": d.id, "policy_ids": list(d.policy_ids), "reasons": list(d.reasons),
        "approval_id": verdict.approval_id,
    })  # fmt: skip


def _rpc_error(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": err}


def _quote(text: str) -> bytes:
    return text.replace("\\", "").replace('"', "'").encode("latin-1", "replace")[:200]


async def _respond(send: ASGISend, status: int, doc: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = b"" if doc is None else dumps(doc)
    h = [(b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"), *(headers or [])]
    if doc is not None:
        h.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})


__all__ = ["HANDSHAKE_VERSIONS", "McpGateway", "RpcError"]
