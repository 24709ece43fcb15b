"""`tether.api.http_protocol`: a response's writes leave in pairs, and nothing is held while the loop idles.

The transport here records what reaches it; the protocol itself serves every integration test (`Served` runs
it) and `tether serve`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tether.api.http_protocol import HttpProtocol, PairedWrites


class Recorder:
    """What a transport was asked to send, call by call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, chunks: Any) -> None:
        self.calls.append(("writelines", b"".join(chunks)))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed


async def test_a_head_and_its_body_leave_in_one_call() -> None:
    t = Recorder()
    w = PairedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert t.calls == []  # held for its body
    w.write(b"ok")
    assert t.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    await asyncio.sleep(0)
    assert len(t.calls) == 1  # nothing left to flush


async def test_a_lone_write_leaves_before_the_loop_waits() -> None:
    t = Recorder()
    w = PairedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert w.get_write_buffer_size() == len(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)  # one iteration of the loop
    assert t.calls == [("write", b"HTTP/1.1 100 Continue\r\n\r\n")]


async def test_a_stream_pairs_its_chunks_and_flushes_the_last() -> None:
    t = Recorder()
    w = PairedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    for chunk in (b"head", b"one", b"two"):
        w.write(chunk)
    assert t.calls == [("writelines", b"headone")]
    await asyncio.sleep(0)
    assert t.calls == [("writelines", b"headone"), ("write", b"two")]


async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    t = Recorder()
    w = PairedWrites(t, loop)  # type: ignore[arg-type]
    w.write(b"last words")
    w.close()
    assert t.calls == [("write", b"last words")]
    assert t.closed
    t2 = Recorder()
    w2 = PairedWrites(t2, loop)  # type: ignore[arg-type]
    w2.write(b"never")
    w2.abort()
    await asyncio.sleep(0)
    assert t2.calls == []
    assert t2.aborted
    assert not w2.is_closing()  # everything else is the transport's


async def test_what_is_held_when_the_connection_goes_away_is_dropped() -> None:
    t = Recorder()
    w = PairedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.closed = True  # the client went away before the end of the iteration
    await asyncio.sleep(0)
    assert t.calls == []


async def test_a_real_server_on_the_protocol_answers_plain_and_streamed_responses() -> None:
    """uvicorn with `http=HttpProtocol` on a loopback port: whole answers, streamed answers, keep-alive."""
    from tests.conftest import free_port

    async def plain(_: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def stream(_: Any) -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(5):
                yield f"chunk{i};".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/plain")

    port = free_port()
    app = Starlette(routes=[Route("/plain", plain), Route("/stream", stream)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=HttpProtocol))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(3):  # one connection, kept alive
                r = await c.get("/plain")
                assert (r.status_code, r.text) == (200, "hello")
            r = await c.get("/stream")
            assert r.text == "".join(f"chunk{i};" for i in range(5))
            assert r.headers["transfer-encoding"] == "chunked"
    finally:
        server.should_exit = True
        await task
