"""Sessions to upstream MCP servers, on the official SDK's `ClientSession`.

Sessions are pooled by (server, person, task) and never shared across persons: a stdio
server runs one process per key, a URL server gets one MCP session per key with the
credential injected for that person and task. A session whose transport died (a crashed
stdio process, a dropped connection) is discarded and the next request starts a fresh one.
Every step has a deadline: connecting (`connect_timeout`), each request (`timeout`);
calls in flight per server are capped (`max_concurrency`); idle sessions are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import httpx2
from pydantic import TypeAdapter

from tether.background import stop_task
from tether.errors import TetherError
from tether.gateway.mcp.config import ServerSpec
from tether.log import get_logger

log = get_logger("tether.gateway.mcp")

_RAW: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
Key = tuple[str, str, str]  # (server, person, task)
Slot = tuple[str, str, str, int]  # a key's session number `n` (see ServerSpec.sessions_per_task)
_STARTING = 1 << 20  # the load `_slot` gives a session still starting
#: (task_id, person_id) → headers to add to a URL upstream's requests (credential injection)
HeaderSource = Callable[[ServerSpec, str, str], Awaitable[Mapping[str, str]]]


class UpstreamUnavailable(TetherError):
    code, status, title = "upstream_unavailable", 502, "Upstream MCP server unavailable"


class UpstreamError(TetherError):
    """The upstream answered a request with a JSON-RPC error; `rpc_code`/`rpc_message`/`rpc_data` carry it."""

    code, status, title = "upstream_error", 502, "Upstream MCP error"

    def __init__(self, rpc_code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.rpc_message = message
        self.rpc_data = data


class _CappedStream(httpx2.AsyncByteStream):
    """An answer's body, refused (`AnswerTooLarge`) once it passes the cap: a JSON answer in total, a stream of
    server-sent events per event (the bytes since the last blank line), so a long-lived stream of small
    notifications lives on while no single message can grow past the cap in memory."""

    def __init__(self, inner: Any, cap: int, sse: bool, overflow: Callable[[str], None]) -> None:
        self._inner, self._cap, self._sse, self._overflow = inner, cap, sse, overflow

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        tail = b""
        async for chunk in self._inner:
            if self._sse:
                joined = tail + chunk  # an event boundary may straddle two chunks
                cut = max(joined.rfind(b"\n\n"), joined.rfind(b"\r\n\r\n"), joined.rfind(b"\r\r"))
                seen = len(joined) - cut if cut >= 0 else seen + len(chunk)
                tail = joined[-3:]
            else:
                seen += len(chunk)
            if seen > self._cap:
                raise _too_large(self._cap, self._overflow)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class AnswerTooLarge(ValueError):
    """An upstream's answer passed the gateway's cap while it was read (a ValueError: the lean transport reports
    the server unavailable for the call; the SDK transport's session ends)."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the answer is larger than the gateway's cap of {cap} bytes")


def _too_large(cap: int, overflow: Callable[[str], None]) -> AnswerTooLarge:
    """The error for an answer past `cap`, `overflow` told why."""
    exc = AnswerTooLarge(cap)
    overflow(str(exc))
    return exc


def _capped(cap: int, overflow: Callable[[str], None]) -> Callable[[httpx2.Response], Awaitable[None]]:
    """A response hook for the SDK transport's HTTP client: an answer that declares a length over `cap` is refused
    before its body is read, any other is read through `_CappedStream`; `overflow` is told why. A hook rather than
    a transport, so answers through a proxy mounted from the environment are capped too."""

    async def hook(response: httpx2.Response) -> None:
        sse = response.headers.get("content-type", "").lower().startswith("text/event-stream")
        length = response.headers.get("content-length", "")
        if not sse and length.isdigit() and int(length) > cap:
            raise _too_large(cap, overflow)
        response.stream = _CappedStream(response.stream, cap, sse, overflow)

    return hook


class _InjectAuth(httpx2.Auth):
    """Adds the credential headers to every request, fetched fresh (tokens may be refreshed)."""

    def __init__(self, spec: ServerSpec, person: str, task: str, source: HeaderSource) -> None:
        self.spec, self.person, self.task, self.source = spec, person, task, source

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        for k, v in (await self.source(self.spec, self.person, self.task)).items():
            request.headers[k] = v
        yield request


class UpstreamSession:
    """One live MCP session; its transport and ClientSession live in one runner task."""

    def __init__(self, spec: ServerSpec, key: Key, headers: HeaderSource | None,
                 on_notification: Callable[[str, Any], None] | None = None,
                 max_answer: int = 1024 * 1024 * 1024) -> None:  # fmt: skip
        self.max_answer = max_answer
        self.spec = spec
        self.key = key
        self.headers = headers
        self.on_notification = on_notification
        self.session: Any = None
        self.init_result: dict[str, Any] = {}
        self.last_used = time.monotonic()
        self.inflight = 0
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dead = False
        self.lean: Any = None
        self.overflow: str | None = None  # why the SDK transport's session ended on an answer past the cap

    async def start(self) -> None:
        if self.spec.transport == "lean":
            from tether.gateway.mcp.lean import LeanSession

            lean = LeanSession(self.spec, self.key[1], self.key[2], self.headers, max_answer=self.max_answer)
            try:
                await asyncio.wait_for(lean.start(), self.spec.connect_timeout + 1)
            except TimeoutError:
                await lean.close()
                raise UpstreamUnavailable(f"MCP server {self.spec.name} did not complete its handshake") from None
            except UpstreamUnavailable:
                await lean.close()
                raise
            self.lean = lean
            self.init_result = lean.init_result
            return
        self._task = asyncio.create_task(self._run(), name=f"mcp-upstream-{self.key[0]}")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.spec.connect_timeout)
        except TimeoutError:
            await self.close()
            raise UpstreamUnavailable(
                f"MCP server {self.spec.name} did not complete its handshake within {self.spec.connect_timeout:g} s"
            ) from None
        except UpstreamUnavailable:
            await self.close()
            raise

    async def _run(self) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.spec.command is not None:
                    from mcp import StdioServerParameters, stdio_client

                    params = StdioServerParameters(
                        command=self.spec.command, args=list(self.spec.args), env=dict(self.spec.env) or None,
                        cwd=self.spec.cwd,
                    )  # fmt: skip
                    read, write = await stack.enter_async_context(stdio_client(params, errlog=_errlog(stack)))
                else:
                    from mcp.client.streamable_http import streamable_http_client

                    auth = _InjectAuth(self.spec, self.key[1], self.key[2], self.headers) if self.headers else None
                    timeout = httpx2.Timeout(self.spec.timeout + 5, connect=self.spec.connect_timeout)
                    hooks = {"response": [_capped(self.max_answer, self._overflowed)]}
                    client = await stack.enter_async_context(
                        httpx2.AsyncClient(timeout=timeout, auth=auth, event_hooks=hooks)
                    )
                    assert self.spec.url is not None
                    read, write = await stack.enter_async_context(
                        streamable_http_client(self.spec.url, http_client=client)
                    )
                session = await stack.enter_async_context(
                    ClientSession(read, write, read_timeout_seconds=self.spec.timeout, message_handler=self._message)
                )
                init = await session.initialize()
                self.init_result = init.model_dump(by_alias=True, mode="json", exclude_none=True)
                self.session = session
                if not self._ready.done():
                    self._ready.set_result(None)
                await self._stop.wait()
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 — any transport failure means this session is gone
            if not self._ready.done():
                self._ready.set_exception(
                    UpstreamUnavailable(f"MCP server {self.spec.name} could not be reached: {_describe(exc)}")
                )
            else:
                log.warning("upstream session ended", server=self.spec.name, error=_describe(exc))
        finally:
            self.dead = True
            if not self._ready.done():
                self._ready.set_exception(UpstreamUnavailable(f"MCP server {self.spec.name} closed the session"))

    def _overflowed(self, why: str) -> None:
        self.overflow = why

    def _gone(self, fallback: str) -> UpstreamUnavailable:
        """The error for a call whose session ended: the cap's reason when an answer passed it."""
        self.dead = True
        return UpstreamUnavailable(f"MCP server {self.spec.name}: {self.overflow}" if self.overflow else fallback)

    async def _message(self, message: Any) -> None:
        if self.on_notification is None or isinstance(message, Exception):
            return
        method = getattr(message, "method", None)
        if isinstance(method, str):
            self.on_notification(method, self.key)

    async def request(
        self, method: str, params: Mapping[str, Any] | None, timeout: float | None = None
    ) -> dict[str, Any]:
        from mcp import MCPError, types

        if self.lean is not None:
            if self.dead:
                raise UpstreamUnavailable(f"the session to MCP server {self.spec.name} has ended")
            self.last_used = time.monotonic()
            self.inflight += 1
            try:
                async with asyncio.timeout((timeout or self.spec.timeout) + 1):  # a timer, not wait_for's task
                    answer: dict[str, Any] = await self.lean.request(method, params, timeout)
                return answer
            except TimeoutError:
                raise UpstreamUnavailable(f"MCP server {self.spec.name} did not answer in time") from None
            except UpstreamUnavailable:
                self.dead = True
                raise
            finally:
                self.inflight -= 1
                self.last_used = time.monotonic()
        if self.dead or self.session is None:
            raise UpstreamUnavailable(f"the session to MCP server {self.spec.name} has ended")
        self.last_used = time.monotonic()
        self.inflight += 1
        limit = timeout or self.spec.timeout
        req = types.Request[dict[str, Any] | None, str](method=method, params=dict(params) if params else None)
        try:
            result: dict[str, Any] = await asyncio.wait_for(
                self.session.send_request(req, _RAW, request_read_timeout_seconds=limit), limit + 1
            )
            return result
        except TimeoutError:
            raise UpstreamUnavailable(f"MCP server {self.spec.name} did not answer within {limit:g} s") from None
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                raise UpstreamUnavailable(f"MCP server {self.spec.name} did not answer within {limit:g} s") from None
            if exc.code == types.CONNECTION_CLOSED or self.overflow:
                raise self._gone(f"MCP server {self.spec.name} closed the connection") from None
            raise UpstreamError(exc.code, exc.error.message, exc.error.data) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
            raise self._gone(f"MCP server {self.spec.name} went away: {_describe(exc)}") from None
        finally:
            self.inflight -= 1
            self.last_used = time.monotonic()

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        from mcp import types

        if self.lean is not None:
            await self.lean.notify(method, params)
            return
        if self.dead or self.session is None:
            return
        note = types.Notification[dict[str, Any] | None, str](method=method, params=dict(params) if params else None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.session.send_notification(note), 5)

    async def close(self) -> None:
        if self.lean is not None:
            self.dead = True
            await self.lean.close()
            return
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except (TimeoutError, Exception):  # noqa: BLE001 — closing: make sure it ends
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.dead = True


def _errlog(stack: contextlib.AsyncExitStack) -> Any:
    """Where a stdio server's stderr goes: ours when it is a real file, else nowhere."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return stack.enter_context(open(os.devnull, "w"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


class UpstreamPool:
    """Sessions by (server, person, task), started on first use, restarted when dead, closed when idle.

    A key has one session, or for a server with `sessions_per_task` n > 1 up to n: everything but tool
    calls goes to the first (lists, reads, subscriptions, the logging level: what a server may keep per
    session), and a tool call to an idle one, or to a new one while fewer than n are open, else to the
    least busy.
    """

    def __init__(self, servers: Mapping[str, ServerSpec], *, headers: HeaderSource | None = None,
                 on_notification: Callable[[str, Any], None] | None = None,
                 max_answer: int = 1024 * 1024 * 1024) -> None:  # fmt: skip
        self.servers = dict(servers)
        self.headers = headers
        #: the largest answer a URL upstream's lean session reads (past it: unavailable, never held in memory)
        self.max_answer = max_answer
        self.on_notification = on_notification
        self._sessions: dict[Slot, UpstreamSession] = {}
        self._starting: dict[Slot, asyncio.Future[UpstreamSession]] = {}
        self._caps: dict[str, asyncio.Semaphore] = {n: asyncio.Semaphore(s.max_concurrency) for n, s in servers.items()}
        self._reaper: asyncio.Task[None] | None = None

    def spec(self, server: str) -> ServerSpec:
        return self.servers[server]

    async def session(self, key: Key, slot: int = 0) -> UpstreamSession:
        at: Slot = (*key, slot)
        s = self._sessions.get(at)
        if s is not None and not s.dead:
            return s
        pending = self._starting.get(at)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[UpstreamSession] = asyncio.get_running_loop().create_future()
        self._starting[at] = fut
        try:
            if s is not None:
                self._sessions.pop(at, None)
                await s.close()
                log.info("restarting upstream session", server=key[0])
            spec = self.servers[key[0]]
            if sum(1 for k in self._sessions if k[0] == key[0]) >= spec.max_sessions:
                await self._evict_oldest(key[0])
            s = UpstreamSession(spec, key, self.headers, self.on_notification, max_answer=self.max_answer)
            await s.start()
            self._sessions[at] = s
            fut.set_result(s)
            self._ensure_reaper()
            return s
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._starting.pop(at, None)

    def _slot(self, key: Key, n: int) -> int:
        """The session a tool call of `key` goes to: an idle one, else a new one (while fewer than n are
        open), else the least busy; one still starting is joined only when nothing open is less busy."""
        best, load, free = 0, -1, -1
        for i in range(n):
            at = (*key, i)
            s = self._sessions.get(at)
            if s is not None and not s.dead:
                if s.inflight == 0:
                    return i
                busy = s.inflight
            elif at in self._starting:
                busy = _STARTING
            else:
                free = i if free < 0 else free
                continue
            if load < 0 or busy < load:
                best, load = i, busy
        return free if free >= 0 else best

    async def request(self, key: Key, method: str, params: Mapping[str, Any] | None, *, retry: bool = False,
                      timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """One request on the key's session, under the server's concurrency cap.

        `retry` (for requests without effects: lists, reads) tries once more on a fresh
        session when the first one turns out dead; tool calls are never replayed.
        """
        spec = self.servers[key[0]]
        cap = self._caps[key[0]]
        try:
            if cap.locked():
                await asyncio.wait_for(cap.acquire(), spec.timeout)
            else:  # free: acquire() takes it at once, without wait_for's task and timer
                await cap.acquire()
        except TimeoutError:
            raise UpstreamUnavailable(
                f"MCP server {key[0]} is at its concurrency cap ({spec.max_concurrency})"
            ) from None
        slot = self._slot(key, spec.sessions_per_task) if spec.sessions_per_task > 1 and method == "tools/call" else 0
        try:
            for attempt in (0, 1):
                s = await self.session(key, slot)
                try:
                    return await s.request(method, params, timeout)
                except UpstreamUnavailable:
                    if not (s.dead and retry and attempt == 0):
                        raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            cap.release()

    async def notify(self, key: Key, method: str, params: Mapping[str, Any] | None) -> None:
        s = self._sessions.get((*key, 0))
        if s is not None:
            await s.notify(method, params)

    def live(self, server: str | None = None) -> list[UpstreamSession]:
        return [s for k, s in self._sessions.items() if not s.dead and (server is None or k[0] == server)]

    async def drop(self, *, task_id: str | None = None) -> None:
        for key in [k for k in self._sessions if task_id is None or k[2] == task_id]:
            s = self._sessions.pop(key)
            await s.close()

    async def _evict_oldest(self, server: str) -> None:
        idle = [(s.last_used, k) for k, s in self._sessions.items() if k[0] == server and s.inflight == 0]
        if idle:
            key = min(idle)[1]
            await self._sessions.pop(key).close()

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_forever(), name="mcp-upstream-reaper")

    async def _reap_forever(self) -> None:
        while self._sessions:
            await asyncio.sleep(5)
            now = time.monotonic()
            for key, s in list(self._sessions.items()):
                if s.dead or (s.inflight == 0 and now - s.last_used > s.spec.idle_seconds):
                    self._sessions.pop(key, None)
                    await s.close()

    async def close(self) -> None:
        await stop_task(self._reaper)
        await self.drop()


__all__ = ["HeaderSource", "Key", "Slot", "UpstreamError", "UpstreamPool", "UpstreamSession", "UpstreamUnavailable"]
