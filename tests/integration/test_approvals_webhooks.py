"""Webhook deliveries: signed, retried, and recorded."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from tests.approvals_world import make_world, pending
from tether.approvals import WebhookNotifier, verify_signature

SECRET = b"s" * 32


@pytest.fixture
async def receiver():
    """A local webhook receiver that fails its first call, then accepts."""
    got: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        got.append((dict(request.headers), body))
        return web.Response(status=503 if len(got) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hook", got
    await runner.cleanup()


async def test_request_is_notified_signed_retried_and_recorded(services, receiver):
    """A failed delivery is retried; the body verifies with the secret; the record says delivered."""
    url, got = receiver
    svc = services.approvals
    svc.notifier = WebhookNotifier(svc.store, urls=[url], secret=SECRET, retries=3, backoff=0.01)
    w = make_world(services)
    a = await pending(w, summary={"to": ["x@y.example"], "password": "[redacted]"}, prompt="secret prompt")
    await svc.notifier.drain()
    assert len(got) == 2
    headers, body = got[-1]
    assert verify_signature(SECRET, headers["Tether-Signature"], body)
    doc = json.loads(body)
    assert doc["event"] == "approval.requested"
    assert doc["approval_id"] == a.id
    assert "secret prompt" not in body.decode()
    assert "x@y.example" not in body.decode()
    (delivery,) = svc.deliveries(a.id)
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 2, 204)


async def test_unreachable_webhook_is_recorded_failed(services):
    """When every attempt fails the delivery is recorded as failed with the error."""
    svc = services.approvals
    svc.notifier = WebhookNotifier(svc.store, urls=["http://127.0.0.1:9/none"], secret=SECRET, retries=2, backoff=0.01)
    a = await pending(make_world(services))
    await svc.notifier.drain()
    (delivery,) = svc.deliveries(a.id)
    assert delivery.status == "failed"
    assert delivery.attempts == 2
    assert delivery.last_error
