"""Webhook notifications: HMAC-SHA-256 signed JSON, or a Slack-compatible message.

Every delivery is recorded (`webhook_deliveries`: attempts, last status, error) and
retried with back-off. A notification only *tells* someone a decision is waiting; it
never carries a link that decides (deciders sign in and decide in the console, the API
or the CLI), so a forwarded or previewed message cannot approve anything.

Signature header, as receivers check it (`verify_signature` does exactly this):

    Tether-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256(secret, "<t>." + body)>
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tether.approvals.model import Delivery
from tether.approvals.ports import ApprovalStore
from tether.log import get_logger
from tether.types import new_id, utcnow

log = get_logger("tether.approvals.notify")
SIGNATURE_HEADER = "Tether-Signature"


def sign(secret: bytes, body: bytes, ts: int | None = None) -> str:
    t = int(time.time()) if ts is None else ts
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, *, tolerance: int = 300) -> bool:
    """True when `header` is a valid signature of `body`, made within `tolerance` seconds."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _slack_escape(text: str) -> str:
    # Slack's own escaping: assistant-controlled text must not become links or mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: plain facts, a link to *view* in the console."""
    lines = [f"*Tether: {_slack_escape(event)}*"]
    for key in ("approval_id", "breakglass_id", "agent_id", "person_id", "action", "justification", "status"):
        if payload.get(key):
            lines.append(f"{key.replace('_', ' ')}: `{_slack_escape(str(payload[key]))}`")
    if payload.get("reasons"):
        lines.append("reasons: " + _slack_escape("; ".join(map(str, payload["reasons"]))))
    if payload.get("console_url"):
        lines.append(f"<{payload['console_url']}|Open in the Tether console to review>")
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


class WebhookNotifier:
    """Sends notifications in the background; `drain()` waits for the ones in flight."""

    def __init__(
        self,
        store: ApprovalStore,
        *,
        urls: Sequence[str] = (),
        slack_urls: Sequence[str] = (),
        secret: bytes | None,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 5.0,
    ) -> None:
        self.store = store
        bad = [u for u in (*urls, *slack_urls) if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).netloc]
        if bad:
            raise ValueError(f"webhook URLs must be http(s) URLs: {', '.join(bad)}")
        self.targets = [(u, "json") for u in urls] + [(u, "slack") for u in slack_urls]
        self.secret = secret
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    def send(self, event: str, subject_id: str, payload: Mapping[str, Any]) -> None:
        """Schedule delivery to every configured URL (needs a running event loop)."""
        for url, fmt in self.targets:
            task = asyncio.get_running_loop().create_task(self._deliver(event, subject_id, url, fmt, dict(payload)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 30.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _deliver(self, event: str, subject_id: str, url: str, fmt: str, payload: dict[str, Any]) -> None:
        now = utcnow()
        delivery_id = new_id("whd")
        record = Delivery(delivery_id, event, subject_id, url, fmt, "pending", 0, None, None, now, now)
        await asyncio.to_thread(self._insert, record)
        doc = slack_message(event, payload) if fmt == "slack" else {"event": event, "id": delivery_id, **payload}
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        status, error, attempts = None, None, 0
        for attempt in range(1, self.retries + 1):
            attempts = attempt
            headers = {"Content-Type": "application/json", "Tether-Event": event, "Tether-Delivery": delivery_id}
            if self.secret is None:
                error = "no webhook_secret configured: notifications are not sent unsigned"
                break
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as http,
                    http.post(url, data=body, headers=headers, allow_redirects=False) as resp,
                ):
                    status = resp.status
                    error = None if 200 <= status < 300 else f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"[:500]
            if error is None:
                break
            await asyncio.sleep(self.backoff * (4 ** (attempt - 1)))
        final = "delivered" if error is None else "failed"
        await asyncio.to_thread(
            self._update, delivery_id, status=final, attempts=attempts, last_status=status, last_error=error
        )
        if error is not None:
            log.warning("webhook delivery failed", notification=event, delivery=delivery_id, error=error)

    def _insert(self, d: Delivery) -> None:
        with self.store.write() as repo:
            repo.insert_delivery(d)

    def _update(self, delivery_id: str, **values: Any) -> None:
        with self.store.write() as repo:
            repo.update_delivery(delivery_id, updated_at=utcnow(), **values)


__all__ = ["SIGNATURE_HEADER", "WebhookNotifier", "sign", "slack_message", "verify_signature"]
