"""`tether mcp stdio`: a local MCP stdio server that relays every message to Tether's /mcp.

For clients that start MCP servers as local processes (Claude Desktop, Claude Code). The
relay authenticates as the agent with its private key file (`tether agent keygen`),
exchanges the person's token (a delegation token from `tether delegate --token`, or an
IdP token) for a task token with audience `{base}/mcp`, renews it before it expires
(renewal keeps the task), and posts each JSON-RPC line to the gateway. When the gateway no
longer knows the session (a new task after the old one ended), the relay replays the
client's `initialize` once and retries.

Messages are handled concurrently (a long tool call does not block a ping); each answer is
written to stdout as one line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import httpx

RENEW_MARGIN = 60.0


class TokenSource:
    """A task token for `{base}/mcp`, renewed in place before it expires."""

    def __init__(self, client: Any, subject_token: str, *, resource: str, scope: str | None, purpose: str | None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.client = client
        self.subject_token = subject_token
        self.resource = resource
        self.scope = scope
        self.purpose = purpose
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self, *, force_new_task: bool = False) -> str:
        with self._lock:
            now = self.clock()
            if force_new_task or self._token is None:
                self._exchange(self.subject_token)
            elif now > self._expires - RENEW_MARGIN:
                try:  # renewal: the task token itself as subject keeps the task_id
                    self._exchange(self._token)
                except Exception:  # noqa: BLE001 — the task ended or expired: start a new one
                    self._exchange(self.subject_token)
            assert self._token is not None
            return self._token

    def _exchange(self, subject: str) -> None:
        grant = self.client.exchange(subject, scope=self.scope, resource=self.resource, purpose=self.purpose)
        self._token = str(grant["access_token"])
        self._expires = self.clock() + float(grant.get("expires_in", 300))


class Relay:
    def __init__(self, url: str, tokens: TokenSource, *, http: httpx.Client | None = None,
                 out: IO[str] | None = None) -> None:  # fmt: skip
        self.url = url
        self.tokens = tokens
        self.http = http or httpx.Client(timeout=httpx.Timeout(330.0, connect=10.0))
        self.out = out or sys.stdout
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._initialize: dict[str, Any] | None = None
        self._write_lock = threading.Lock()
        self._session_lock = threading.Lock()

    def write(self, doc: Any) -> None:
        line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        with self._write_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def _post(self, msg: dict[str, Any], *, new_task: bool = False) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.tokens.get(force_new_task=new_task)}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self.session_id and msg.get("method") != "initialize":
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return self.http.post(self.url, content=json.dumps(msg).encode(), headers=headers)

    def _reinitialize(self, new_task: bool) -> None:
        with self._session_lock:
            if self._initialize is None:
                return
            r = self._post(self._initialize, new_task=new_task)
            self.session_id = r.headers.get("mcp-session-id")
            self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def handle(self, msg: Any) -> None:
        rid = msg.get("id") if isinstance(msg, dict) else None
        try:
            if isinstance(msg, dict) and msg.get("method") == "initialize":
                self._initialize = msg
            r = self._post(msg)
            if r.status_code == 404 and self._initialize is not None and msg.get("method") != "initialize":
                self._reinitialize(new_task=False)
                r = self._post(msg)
            if r.status_code == 401:  # the task ended or the token was revoked: a new task
                self._reinitialize(new_task=True)
                r = self._post(msg)
            if isinstance(msg, dict) and msg.get("method") == "initialize" and r.status_code == 200:
                self.session_id = r.headers.get("mcp-session-id")
                pv = (r.json().get("result") or {}).get("protocolVersion")
                self.protocol_version = pv if isinstance(pv, str) else None
            if r.status_code == 202 or not r.content:
                return
            if rid is None and not (isinstance(msg, dict) and "method" in msg):
                return
            try:
                self.write(r.json())
            except ValueError:
                self.write(_error(rid, -32603, f"the gateway answered HTTP {r.status_code} without JSON"))
        except Exception as exc:  # noqa: BLE001 — the client must get an answer whatever happened
            if rid is not None:
                self.write(_error(rid, -32603, f"Tether relay: {type(exc).__name__}: {exc}"[:500]))

    def run(self, stdin: IO[str] | None = None, *, workers: int = 8) -> None:
        src = stdin or sys.stdin
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for line in src:
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    self.write(_error(None, -32700, "Parse error"))
                    continue
                if isinstance(msg, dict) and msg.get("method") == "initialize":
                    self.handle(msg)  # before anything else, so the session id exists
                else:
                    pool.submit(self.handle, msg)


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


__all__ = ["Relay", "TokenSource"]
