"""The HTTP gateway: `/proxy/{upstream}/{path}`, a lean ASGI reverse proxy that decides first.

    request ─► declared upstream? ─► normalise path ─► verify task token (aud = {base}/proxy/{upstream})
            ─► route map (unmatched: deny) ─► body buffered to the route's cap ─► facts, sensitivity
            ─► Enforcer.check (decision durable before any effect) ─► deny/approval: 403 problem+json
            ─► inject the credential (caller's Authorization and hop-by-hop headers stripped)
            ─► aiohttp (keep-alive pool, no redirects) ─► response: leak scan, paging links rewritten,
               pre-authenticated URLs stripped, budget counted (cut off when crossed)
            ─► Enforcer.completed (tool.completed)

`$batch` requests are unpacked: every inner request is normalised, mapped and decided on
its own; only allowed ones are forwarded, the others are answered inside the batch
response by the gateway (403 with the decision, or 424 when they depend on one).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import orjson
from aiohttp.compression_utils import HAS_BROTLI as _HAS_BROTLI
from aiohttp.compression_utils import HAS_ZSTD as _HAS_ZSTD

from tether.audit.model import Event
from tether.credentials import Injected, Injection, Providers
from tether.errors import Forbidden, InvalidRequest, NotFound, PayloadTooLarge, TetherError, Unavailable
from tether.gateway.http.config import HttpGatewayConfig, Upstream
from tether.gateway.http.normalise import SAFE, PathRefused, encode_path, encode_query, normalise_path, parse_query
from tether.gateway.http.routes import RouteMap, RouteMatch, extract_facts, load_route_map
from tether.gateway.scan import LeakScanner
from tether.log import get_logger

log = get_logger("tether.gateway.http")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "proxy-connection",
})  # fmt: skip
#: request headers never forwarded: the caller's credentials and Tether's own
DROP_REQUEST = HOP_BY_HOP | {"authorization", "cookie", "host", "content-length", "accept-encoding", "expect",
                             "forwarded", "x-real-ip", "true-client-ip", "x-client-ip",
                             # another method or path than the one decided, for upstreams that honour them
                             "x-http-method-override", "x-http-method", "x-method-override", "x-original-url",
                             "x-rewrite-url", "x-original-method"}  # fmt: skip
#: request header prefixes never forwarded (x-forwarded-for, -host, -proto, -port, -prefix, …)
DROP_REQUEST_PREFIXES = ("tether-", "x-forwarded-")
#: response content codings the upstream client decodes (so the answer is scanned and counted as sent)
DECODED_CODINGS = frozenset({"gzip", "deflate", *(("br",) if _HAS_BROTLI else ()), *(("zstd",) if _HAS_ZSTD else ())})
#: the headers a $batch request may carry for its inner requests (others are refused, never forwarded undecided)
BATCH_HEADERS = frozenset({"content-type", "accept", "if-match", "if-none-match", "prefer", "consistencylevel",
                           "client-request-id", "return-client-request-id"})  # fmt: skip
BATCH_KEYS = frozenset({"id", "method", "url", "dependsOn", "body", "headers"})
DROP_RESPONSE = HOP_BY_HOP | {
    "content-length", "content-encoding", "set-cookie", "www-authenticate", "strict-transport-security",
    "content-security-policy", "x-content-type-options",
}  # fmt: skip
PRE_AUTH_KEYS = frozenset({"@microsoft.graph.downloadUrl", "@microsoft.graph.uploadUrl", "downloadUrl", "uploadUrl",
                           "@content.downloadUrl"})  # fmt: skip
LINK_KEYS = ("@odata.nextLink", "@odata.deltaLink")
#: JSON answers without any of these, or `Link`, are passed through unparsed (unless items are counted)
PRE_AUTH_MARKERS = (b"downloadUrl", b"uploadUrl")
MAX_PROMPT = 4096
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
PROBLEM = b"application/problem+json"
SECURITY_HEADERS = [(b"content-security-policy", b"sandbox"), (b"x-content-type-options", b"nosniff")]
LABEL_LEVELS = {"public": "public", "general": "internal", "internal": "internal", "confidential": "confidential",
                "highly confidential": "highly_confidential", "highly_confidential": "highly_confidential",
                "secret": "highly_confidential", "restricted": "highly_confidential"}  # fmt: skip

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class UnknownUpstream(NotFound):
    code, title = "unknown_upstream", "No such upstream"


class RouteNotMapped(Forbidden):
    code, title = "route_not_mapped", "The request matches no route of this upstream"


class UpstreamFailed(TetherError):
    code, status, title = "upstream_failed", 502, "Upstream request failed"


class CredentialUnavailable(TetherError):
    """The credential to inject for an upstream is missing or unusable (a deployment's configuration)."""

    code, status, title = "upstream_credential_unavailable", 502, "Upstream credential not available"


def _unavailable(up: Upstream, exc: TetherError, *, own: bool = False) -> CredentialUnavailable:
    """The error for a credential the vault does not hold or its provider cannot use: logged with its code for the
    operator, answered without the credential's name."""
    which = "label_credential" if own else "credential"
    log.error("upstream credential not available", upstream=up.name, setting=which, error=exc.code)
    return CredentialUnavailable(f"the gateway could not obtain its {which} for upstream {up.name}")


class LeakBlocked(TetherError):
    code, status, title = "credential_leak_blocked", 502, "Response withheld: it contained an injected credential"


class PolicyDenied(Forbidden):
    code, title = "denied", "Denied by policy"


class ApprovalRequired(Forbidden):
    code, title = "approval_required", "Approval required"


class BudgetExceeded(Forbidden):
    code, title = "budget_exceeded", "The task's read budget is exhausted"


@dataclass
class Prepared:
    """One mapped request, ready to be decided and forwarded."""

    match: RouteMatch
    method: str
    segments: tuple[str, ...]
    query: list[tuple[str, str]]
    content_type: str
    body: bytes
    facts: dict[str, Any]
    resource: Any
    digest: str
    summary: dict[str, Any]
    path: str
    call: Any = None
    verdict: Any = None


@dataclass
class Ctx:
    upstream: Upstream
    routes: RouteMap
    token: Any
    prompt: str | None
    trace_id: str | None
    approval_id: str | None
    headers: list[tuple[bytes, bytes]]
    started: float = field(default_factory=time.perf_counter)
    #: bytes and items of this request's answer counted ahead (see HttpGateway._reserve)
    reserved: list[int] = field(default_factory=lambda: [0, 0])


def _b(s: str) -> bytes:
    return s.encode("latin-1")


class HttpGateway:
    """The ASGI app mounted at /proxy. Collaborators are resolved late so wiring order does not matter."""

    def __init__(
        self,
        config: HttpGatewayConfig,
        *,
        base_url: str,
        verifier: Callable[[], Any],
        enforcer: Callable[[], Any],
        providers: Providers | None,
        person_email: Callable[[str], str | None] | None = None,
        person_by_email: Callable[[str], str | None] | None = None,
        metrics: Any = None,
    ) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        self._verifier = verifier
        self._enforcer = enforcer
        self.providers = providers
        self.person_email = person_email or (lambda _pid: None)
        self.person_by_email = person_by_email or (lambda _email: None)
        self.metrics = metrics
        self.maps: dict[str, RouteMap] = {name: load_route_map(up.route_map) for name, up in config.upstreams.items()}
        self._ssl: dict[str, ssl.SSLContext | bool] = {}
        self._session: aiohttp.ClientSession | None = None
        self._labels: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}
        for name, up in config.upstreams.items():
            if up.base_url.startswith("https://"):
                if not up.tls.verify:
                    self._ssl[name] = False
                else:
                    self._ssl[name] = ssl.create_default_context(cafile=str(up.tls.ca_file) if up.tls.ca_file else None)

    # ------------------------------------------------------------ lifecycle

    def session(self) -> aiohttp.ClientSession:
        s = self._session
        if s is None or s.closed:
            connector = aiohttp.TCPConnector(limit=512, limit_per_host=256, keepalive_timeout=30, ttl_dns_cache=300)
            s = aiohttp.ClientSession(connector=connector, auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar(),
                                      skip_auto_headers=("User-Agent",))  # fmt: skip
            self._session = s
        return s

    def _timeout(self, up: Upstream) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(up.name)
        if found is None:
            found = aiohttp.ClientTimeout(total=up.timeouts.total, connect=up.timeouts.connect)
            self._timeouts[up.name] = found
        return found

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0.05)  # let the pooled connections' transports finish closing
        self._session = None

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except TetherError as exc:
            await self._problem(send, exc, scope)
        except _Abort as exc:
            # Recorded already (leak.blocked / budget.exceeded). Returning with the response unfinished makes
            # the server close the connection, so the client sees a cut stream, never a complete short one.
            log.warning("streamed response cut", reason=str(exc), upstream=scope.get("tether.upstream"))

    async def _problem(self, send: ASGISend, exc: TetherError, scope: Mapping[str, Any] | None = None) -> None:
        doc = exc.problem()
        body = json.dumps(doc).encode()
        headers = [(b"content-type", PROBLEM), (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
        if exc.status == 401:
            upstream = (scope or {}).get("tether.upstream")
            meta = f"{self.base_url}/.well-known/oauth-protected-resource/proxy/{upstream}" if upstream else None
            value = 'Bearer realm="tether"' + (f', resource_metadata="{meta}"' if meta else "")
            headers.append((b"www-authenticate", value.encode()))
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _split(self, scope: Mapping[str, Any]) -> tuple[str, str]:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        path = path.split("?", 1)[0]
        root = scope.get("root_path", "")
        # the raw path is the full target: find /proxy/ at its start
        prefix = "/proxy/"
        if root and path.startswith(root) and not path.startswith(prefix):
            path = path[len(root) :]
        if not path.startswith(prefix):
            if path.startswith("/") and root.endswith("/proxy"):
                path = "/proxy" + path
            else:
                raise UnknownUpstream("the gateway path is /proxy/{upstream}/{path}")
        rest = path[len(prefix) :]
        name, slash, tail = rest.partition("/")
        return unquote(name) if "%" not in name else "%", ("/" + tail) if slash else "/"

    async def _handle(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        name, raw_path = self._split(scope)
        upstream = self.config.upstreams.get(name)
        if upstream is None:
            raise UnknownUpstream("no upstream of that name is declared")
        scope["tether.upstream"] = name
        routes = self.maps[name]
        segments = normalise_path(raw_path)
        query = parse_query(scope.get("query_string", b"").decode("latin-1"))
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        hmap: dict[bytes, bytes] = {}
        for k, v in headers:
            hmap.setdefault(k.lower(), v)
        token = self._authenticate(hmap, name)
        ctx = Ctx(upstream, routes, token, *self._meta(hmap), headers=headers)
        method = scope["method"].upper()
        match = routes.match(method, segments)
        if match is None:
            await self._unmapped(ctx, method, segments)
            raise RouteNotMapped(f"{method} {encode_path(segments)} is not a mapped route of upstream {name}")
        segments = _canonical(match)
        body = await self._read_body(receive, hmap, match.route.max_body)
        ctype = hmap.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
        self._check_body_headers(headers, hmap, match, ctype, body)
        if match.spec.batch:
            await self._batch(ctx, match, segments, query, ctype, body, send)
            return
        prep = await self._prepare(ctx, match, method, segments, query, ctype, body)
        await self._decide(ctx, prep, ctx.approval_id)
        if not prep.verdict.allowed:
            raise self._refusal(prep)
        await self._forward(ctx, prep, send)

    # ------------------------------------------------------------ steps

    @staticmethod
    def _check_body_headers(
        headers: list[tuple[bytes, bytes]], hmap: Mapping[bytes, bytes], match: RouteMatch, ctype: str, body: bytes
    ) -> None:
        """The body the decision reads is the body the upstream gets: one Content-Type (the one decided is the
        one forwarded), and where the route reads facts from the body, a JSON body, not encoded."""
        if sum(1 for k, _ in headers if k.lower() == b"content-type") > 1:
            raise InvalidRequest("more than one Content-Type header")
        if not body or not any(not p.startswith("query:") for paths in match.spec.facts.values() for p in paths):
            return
        coding = hmap.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
        if coding not in ("", "identity"):
            raise InvalidRequest("this route's body is read for the decision: send it without a Content-Encoding")
        if not (ctype.endswith("json") or ctype == "" or match.spec.batch):
            raise InvalidRequest("this route's body is read for the decision: send it as JSON (application/json)")

    def _authenticate(self, hmap: Mapping[bytes, bytes], upstream: str) -> Any:
        from tether.tokens.errors import InvalidToken

        auth = hmap.get(b"authorization", b"").decode("latin-1")
        if auth[:7].lower() != "bearer " or not auth[7:].strip():
            raise InvalidToken("a task token is required (Authorization: Bearer)")
        verifier = self._verifier()
        if verifier is None:
            raise Unavailable("token verification is not available")
        return verifier.verify(auth[7:].strip(), audience=f"{self.base_url}/proxy/{upstream}")

    @staticmethod
    def _meta(hmap: Mapping[bytes, bytes]) -> tuple[str | None, str | None, str | None]:
        prompt_raw = hmap.get(b"tether-prompt")
        prompt = unquote(prompt_raw.decode("latin-1"))[:MAX_PROMPT] if prompt_raw else None
        tp = TRACEPARENT.match(hmap.get(b"traceparent", b"").decode("latin-1").strip())
        approval = hmap.get(b"tether-approval", b"").decode("latin-1").strip() or None
        return prompt, tp.group(1) if tp else None, approval

    async def _read_body(self, receive: ASGIReceive, hmap: Mapping[bytes, bytes], cap: int) -> bytes:
        declared = hmap.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > cap:
                    raise PayloadTooLarge(f"the request body is larger than this route's cap of {cap} bytes")
            except ValueError:
                raise InvalidRequest("Content-Length is not a number") from None
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise InvalidRequest("the client went away")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise PayloadTooLarge(f"the request body is larger than this route's cap of {cap} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    async def _prepare(
        self, ctx: Ctx, match: RouteMatch, method: str, segments: tuple[str, ...], query: list[tuple[str, str]],
        ctype: str, body: bytes,
    ) -> Prepared:  # fmt: skip
        doc: Any = None
        if body and (ctype.endswith("json") or ctype == ""):
            try:
                doc = json.loads(body)
            except ValueError:
                if ctype.endswith("json"):
                    raise InvalidRequest("the request body is not valid JSON") from None
        looked_up, owner = await self._lookup(ctx, match) if match.spec.lookup is not None else (None, None)
        facts = extract_facts(match.spec, doc, query, ctx.upstream.tenant_domains, looked_up, owner)
        facts["size"] = len(body)
        facts["route"] = match.spec.name
        facts["app_only"] = self._app_only(ctx.upstream)
        resource = await self._resource(ctx, match)
        path = encode_path(segments)
        t = ctx.token
        body_sha = hashlib.sha256(body).hexdigest()
        request_digest = request_digest_of({
            "task_id": t.task_id, "person": t.person_id, "actors": list(t.actors), "action": match.spec.action,
            "resource": {"type": resource.type, "id": resource.id, "system": resource.system},
            "upstream": ctx.upstream.name, "method": method, "path": path, "query": [list(p) for p in query],
            "content_type": ctype, "body_sha256": body_sha,
        })  # fmt: skip
        summary = {"method": method, "path": path, "query": dict(query), "route": match.spec.name,
                   "body_bytes": len(body), "body_sha256": body_sha,
                   **{k: v for k, v in facts.items() if k in ("recipients", "external_domains", "link_scope",
                                                              "attachments", "roles")}}  # fmt: skip
        return Prepared(match, method, segments, query, ctype, body, facts, resource, request_digest, summary, path)

    async def _resource(self, ctx: Ctx, match: RouteMatch) -> Any:
        spec = match.spec.resource
        params = dict(match.params)
        if "user" not in params and _is_me(match.route.template):
            params["user"] = "me"
        params.setdefault("id", params.get("name") or "root")
        rid = _fill(spec.id, params)
        # a path that names no user (/drives/{drive}/…, /sites/{site}/drive/…) has no owner Tether can vouch
        # for: None, which app-only policy treats as not the person's own
        owner = _fill(spec.owner, params) if spec.owner and all(n in params for n in _names(spec.owner)) else None
        if owner == "me":
            owner = ctx.token.person_id
        elif owner:
            # Graph names users by UPN or object id; policy compares owners with person ids
            owner = self.person_by_email(owner.lower()) or owner.lower()
        sensitivity = ctx.upstream.catalog.get(spec.type, {}).get(rid)
        if sensitivity is None and spec.label:
            sensitivity = await self._label(ctx, match, params)
        return _resource_class()(
            type=spec.type, id=rid, system=spec.system, sensitivity=sensitivity or spec.sensitivity, owner=owner,
            attrs={"upstream": ctx.upstream.name, "route": match.spec.name},
        )  # fmt: skip

    def _app_only(self, up: Upstream) -> bool:
        """Whether the injected credential is app-only (policy then confines the agent to its person's data)."""
        if up.credential is None or self.providers is None:
            return False
        try:
            return bool(self.providers.get(up.credential).info.app_only)
        except (NotFound, InvalidRequest) as exc:  # as in `_credentials`: the deployment's fault, not the caller's
            raise _unavailable(up, exc) from None

    async def _label(self, ctx: Ctx, match: RouteMatch, params: dict[str, str]) -> str | None:
        """The upstream's sensitivity label of the resource, fetched with the gateway's own credential, cached."""
        up = ctx.upstream
        if not up.label_credential or self.providers is None or params.get("id") in (None, "root"):
            return None
        path = self._own_path(ctx, match.spec.resource.label, params)
        if path is None:
            return None
        key = (up.name, match.spec.resource.type, path)
        hit = self._labels.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        doc = await self._own_read(up, path)
        if not isinstance(doc, dict):
            # The label could not be read (the upstream failed, refused, or has no such item): fail closed, as
            # the most sensitive level, never the route's default. Not cached: the next call asks again.
            log.warning("sensitivity label not readable: highly_confidential assumed", upstream=up.name)
            return "highly_confidential"
        label = doc.get("sensitivityLabel")
        name = label.get("displayName") if isinstance(label, dict) else None
        # no label: the route's default; a label Tether does not know: the most sensitive level (fail closed)
        level = LABEL_LEVELS.get(str(name).strip().lower(), "highly_confidential") if name else None
        self._labels[key] = (level or "", now + up.label_ttl)
        return level

    async def _lookup(self, ctx: Ctx, match: RouteMatch) -> tuple[Any, str | None]:
        """The answer to the route's lookup (`LookupSpec`), read with the gateway's own credential, never
        cached (a draft's recipients change) — None when it cannot be read, which counts as unknown — and the
        mailbox owner's address (None when the path names the user by something else, an object id)."""
        spec, up = match.spec.lookup, ctx.upstream
        params = dict(match.params)
        if "user" not in params and _is_me(match.route.template):
            params["user"] = "me"
        user = params.get("user")
        owner = self.person_email(ctx.token.person_id) if user == "me" else user if user and "@" in user else None
        if user == "me" and owner is not None:
            params["user"] = owner  # looked up once: `_own_path` fills it as given
        if spec is None or not up.label_credential or self.providers is None:
            return None, owner
        path = self._own_path(ctx, spec.paths, params)
        doc = await self._own_read(up, path) if path is not None else None
        if not isinstance(doc, dict):
            log.warning("lookup not readable: recipients outside the tenant assumed", upstream=up.name,
                        route=match.spec.name)  # fmt: skip
        return doc, owner

    def _own_path(self, ctx: Ctx, templates: Sequence[str], params: Mapping[str, str]) -> str | None:
        """The first of `templates` the request's params fill (`me`: the person's address), each value
        percent-encoded so that a `?` or `#` in an id cannot change which resource is read."""
        p = dict(params)
        if p.get("user") == "me":
            email = self.person_email(ctx.token.person_id)
            if email is None:
                return None
            p["user"] = email
        template = next((t for t in templates if all(n in p for n in _names(t))), None)
        if template is None:
            return None
        return _fill(template, {k: quote(v, safe=SAFE) for k, v in p.items()})

    async def _own_read(self, up: Upstream, path: str) -> Any:
        """GET `path` on the upstream with the gateway's own credential: its JSON answer, or None."""
        if self.providers is None or up.label_credential is None:
            return None
        try:
            injected = await self._inject(up, up.label_credential, Injection("gateway", "gateway"), own=True)
            async with self.session().get(
                up.base_url + path, headers=injected.headers, allow_redirects=False, ssl=self._ssl.get(up.name, True),
                timeout=aiohttp.ClientTimeout(total=up.timeouts.total, connect=up.timeouts.connect),
            ) as resp:  # fmt: skip
                return await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _decide(self, ctx: Ctx, prep: Prepared, approval_id: str | None) -> None:
        from tether.gateway._enforce import Call

        enforcer = self._enforcer()
        if enforcer is None:
            raise Unavailable("the enforcement step is not available: calls are refused")
        prep.call = Call(
            token=ctx.token, action=prep.match.spec.action, resource=prep.resource, facts=prep.facts,
            request_digest=prep.digest, summary=prep.summary, gateway="http", upstream=ctx.upstream.name,
            prompt=ctx.prompt, approval_id=approval_id, trace_id=ctx.trace_id,
        )  # fmt: skip
        prep.verdict = await enforcer.check(prep.call)

    @staticmethod
    def _refusal(prep: Prepared) -> TetherError:
        v = prep.verdict
        d = v.decision
        extra: dict[str, Any] = {"decision_id": d.id, "decision": d.effect.value, "policy_ids": list(d.policy_ids),
                                 "reasons": list(d.reasons)}  # fmt: skip
        if v.approval_id and d.effect.value == "approval_required":
            extra["approval_id"] = v.approval_id
            return ApprovalRequired(
                f"{prep.match.spec.action} needs approval; retry with Tether-Approval: {v.approval_id} once approved",
                **extra,
            )
        return PolicyDenied(f"{prep.match.spec.action} was denied by policy", **extra)

    async def _unmapped(self, ctx: Ctx, method: str, segments: tuple[str, ...]) -> None:
        enforcer = self._enforcer()
        if enforcer is None:
            return
        t = ctx.token
        await enforcer.record(Event(
            type="policy.decided", actor=t.agent_id, task_id=t.task_id, trace_id=ctx.trace_id, agent_id=t.agent_id,
            person_id=t.person_id, decision="deny", policy_ids=("tether:route-unmapped",),
            detail={"gateway": "http", "upstream": ctx.upstream.name, "method": method,
                    "path": encode_path(segments)[:512], "reasons": ["the request matches no mapped route"]},
        ))  # fmt: skip

    # ------------------------------------------------------------ forwarding

    async def _credentials(self, ctx: Ctx) -> tuple[dict[str, str], tuple[str, ...]]:
        """The headers to inject for the upstream and the secrets they hold. A credential the vault does not
        hold, or holds in a form its provider cannot use, is the deployment's fault, not the caller's: 502
        without its name (logged for the operator); a refusal by the upstream's authorization server (502)
        or a task without a subject token for on-behalf-of (403) pass as they are."""
        name = ctx.upstream.credential
        if name is None or self.providers is None:
            return {}, ()
        injected = await self._inject(ctx.upstream, name, Injection(ctx.token.task_id, ctx.token.person_id))
        return injected.headers, injected.secrets

    async def _inject(self, up: Upstream, name: str, injection: Injection, *, own: bool = False) -> Injected:
        """Credential `name` for `injection` (`own`: the gateway's label credential); one the vault does not hold
        or its provider cannot use is `_unavailable`."""
        assert self.providers is not None
        try:
            return await self.providers.get(name).inject(injection)
        except (NotFound, InvalidRequest) as exc:
            raise _unavailable(up, exc, own=own) from None

    def _outgoing(self, ctx: Ctx, cred: Mapping[str, str], ctype: str | None) -> dict[str, str]:
        named: set[str] = set()  # hop-by-hop headers the Connection header names
        for k, v in ctx.headers:
            if k.lower() == b"connection":
                named.update(x.strip().lower() for x in v.decode("latin-1").split(","))
        out: dict[str, str] = {}
        for k, v in ctx.headers:
            ks = k.decode("latin-1").lower()
            if ks in DROP_REQUEST or ks in named or ks.startswith(DROP_REQUEST_PREFIXES):
                continue
            out[ks] = v.decode("latin-1")
        if ctype is not None:
            out["content-type"] = ctype
        for name in cred:
            out.pop(name.lower(), None)
        out.update(cred)
        return out

    async def _forward(self, ctx: Ctx, prep: Prepared, send: ASGISend) -> None:
        up = ctx.upstream
        enforcer = self._enforcer()
        outcome: dict[str, Any] = {"result": "error"}
        try:
            try:
                cred, secrets = await self._credentials(ctx)
            except TetherError as exc:  # nothing was forwarded: the call's outcome says why, the client learns it
                outcome = {"result": "credential_error", "error": exc.code}
                raise
            url = up.base_url + prep.path + (("?" + encode_query(prep.query)) if prep.query else "")
            headers = self._outgoing(ctx, cred, None)
            resp_cm = self.session().request(
                prep.method, url, headers=headers, data=prep.body if prep.body else None, allow_redirects=False,
                ssl=self._ssl.get(up.name, True), timeout=self._timeout(up),
            )  # fmt: skip
            async with resp_cm as resp:
                outcome = await self._relay(ctx, prep, resp, secrets, send)
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = {"result": "upstream_error", "error": type(exc).__name__}
            if self.metrics is not None:
                self.metrics.child(self.metrics.upstream_calls, "http", up.name, "error").inc()
            raise UpstreamFailed(f"the upstream did not answer ({type(exc).__name__})") from None
        finally:
            outcome["latency_us"] = int((time.perf_counter() - ctx.started) * 1e6)
            self._release(ctx)  # the outcome counts it from here (no await in between)
            if enforcer is not None and prep.call is not None:
                try:
                    await enforcer.completed(prep.call, prep.verdict, outcome=outcome)
                except TetherError as exc:  # the response is gone already; the outcome is reconciled at start-up
                    log.error("outcome not recorded", error=exc.code)

    async def _relay(
        self, ctx: Ctx, prep: Prepared, resp: aiohttp.ClientResponse, secrets: tuple[str, ...], send: ASGISend
    ) -> dict[str, Any]:
        up = ctx.upstream
        scanner = LeakScanner(secrets)
        if secrets and _header_hit(scanner, resp, secrets):
            await self._leak(ctx, prep, "header")
            raise LeakBlocked("the upstream's response headers contained the injected credential")
        if 300 <= resp.status < 400 and resp.headers.get("Location"):
            return await self._redirect(ctx, prep, resp, secrets, send)
        _check_coding(resp)
        headers = self._response_headers(ctx, resp)
        ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        budget = up.budget
        clen = resp.content_length
        if ctype.endswith("json") and (clen is None or clen <= up.json_rewrite_max):
            raw = await self._read_capped(resp, up.json_rewrite_max)
            if raw is not None:
                body, items = self._rewrite_json(ctx, raw, prep.match.spec.items)
                if scanner.contains(raw) or (body is not raw and scanner.contains(body)) or _escaped_hit(scanner, raw):
                    await self._leak(ctx, prep, "body")
                    raise LeakBlocked("the upstream's response contained the injected credential")
                over = _over(budget, self._usage(ctx), len(body), items)  # as of now, not before the read
                if over:
                    await self._budget(ctx, prep, over, len(body), items)
                    raise BudgetExceeded(f"this response would take the task past its {over} budget")
                self._reserve(ctx, len(body), items)
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": resp.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                self._count(up)
                return {"result": "ok", "status": resp.status, "bytes": len(body), "items": items}
        # streamed: rolling-window scan, byte budget, size cap
        sent = 0
        started = False
        cap = up.max_response_bytes
        async for chunk in resp.content.iter_any():
            safe = scanner.feed(chunk)
            if scanner.hit:
                await self._leak(ctx, prep, "body")
                if not started:
                    raise LeakBlocked("the upstream's response contained the injected credential")
                raise _Abort("leak")
            # this answer's earlier chunks are counted in the usage already (reserved as they were sent)
            over = _over(budget, self._usage(ctx), len(safe), 0) or ("size" if sent + len(safe) > cap else None)
            if over:
                await self._budget(ctx, prep, over, sent + len(safe), 0)
                if not started:
                    raise BudgetExceeded(f"this response would take the task past its {over} budget")
                raise _Abort("budget")
            if safe:
                self._reserve(ctx, len(safe), 0)
                if not started:
                    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
                    started = True
                await send({"type": "http.response.body", "body": safe, "more_body": True})
                sent += len(safe)
        tail = scanner.flush()
        if not started:
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": tail})
        sent += len(tail)
        self._count(up)
        return {"result": "ok", "status": resp.status, "bytes": sent, "items": 0}

    async def _read_capped(self, resp: aiohttp.ClientResponse, cap: int) -> bytes | None:
        """The whole body, refused past `cap` bytes (`content.read(n)` would return only what has arrived yet)."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.readany():
            size += len(chunk)
            if size > cap:
                raise UpstreamFailed("the upstream's JSON answer is larger than the gateway may inspect")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _response_headers(self, ctx: Ctx, resp: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
        named: set[str] = set()  # hop-by-hop headers the Connection header names
        for v in resp.headers.getall("Connection", ()):
            named.update(x.strip().lower() for x in v.split(","))
        out = []
        for k, v in resp.headers.items():
            kl = k.lower()
            if kl not in DROP_RESPONSE and kl not in named and kl != "location":
                out.append((kl.encode("latin-1"), v.encode("latin-1")))
        out.extend(SECURITY_HEADERS)
        return out

    def _gateway_url(self, ctx: Ctx, link: str) -> str | None:
        """An upstream URL as the same request through the gateway; None when it points elsewhere."""
        origin, prefix = _base_parts(ctx.upstream.base_url)
        u = urlsplit(link)
        if (u.scheme, (u.hostname or "").lower(), u.port) != origin:
            return None
        if prefix and not u.path.startswith(prefix + "/"):
            return None
        path = u.path[len(prefix) :]
        return f"{self.base_url}/proxy/{ctx.upstream.name}{path}" + (f"?{u.query}" if u.query else "")

    def _rewrite_json(self, ctx: Ctx, raw: bytes, items_key: str | None) -> tuple[bytes, int]:
        pre_auth = any(m in raw for m in PRE_AUTH_MARKERS)
        links = raw.count(b"Link")
        # a key spelled with JSON escapes ("download\u0055rl") holds no marker: any escape means look inside
        rewrite = pre_auth or links > 0 or b"\\u" in raw
        if not rewrite and not items_key and b'"responses"' not in raw and b'"value"' not in raw:
            return raw, 1 if raw[:1] == b"{" else 0
        # orjson where it reads the document as the standard library does: not where it refuses it (NaN, lone
        # surrogates, …), and not where a number of 19 digits or more might be an integer it would make a float of
        doc: Any = _UNREAD
        if _DIGIT_RUN not in raw.translate(_DIGITS):
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = _UNREAD
        if doc is _UNREAD:
            try:
                doc = json.loads(raw)
            except ValueError:
                return raw, 0
            changed = rewrite and _strip_links(lambda link: self._gateway_url(ctx, link), doc, raw, pre_auth, links)
            out = json.dumps(doc, separators=(",", ":")).encode() if changed else raw
        else:
            changed = rewrite and _strip_links(lambda link: self._gateway_url(ctx, link), doc, raw, pre_auth, links)
            out = orjson.dumps(doc) if changed else raw
        items = 0
        if items_key and isinstance(doc, dict) and isinstance(doc.get(items_key), list):
            items = len(doc[items_key])
        elif isinstance(doc, dict) and isinstance(doc.get("responses"), list):
            items = sum(_items_in(r.get("body")) for r in doc["responses"] if isinstance(r, dict))
        elif isinstance(doc, dict):
            # a list under `value` counts as what it is on any route (Graph's delta and other functions answer
            # with one where a single-item route's template matched)
            items = _items_in(doc)
        return out, items

    async def _redirect(
        self, ctx: Ctx, prep: Prepared, resp: aiohttp.ClientResponse, secrets: tuple[str, ...], send: ASGISend
    ) -> dict[str, Any]:
        """Same upstream: hand the client a gateway URL (decided again). Allowlisted host: follow without
        the credential. Anywhere else: refuse."""
        location = resp.headers["Location"]
        target = urlsplit(location)
        if not target.scheme:  # relative
            target = urlsplit(ctx.upstream.base_url + (location if location.startswith("/") else "/" + location))
            location = target.geturl()
        through = self._gateway_url(ctx, location)
        if through is not None:
            headers = self._response_headers(ctx, resp)
            headers += [(b"location", _b(through)), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return {"result": "redirect", "status": resp.status, "bytes": 0, "items": 0}
        host = (target.hostname or "").lower()
        if target.scheme != "https" or host not in {h.lower() for h in ctx.upstream.redirect_hosts}:
            raise UpstreamFailed("the upstream redirected to a host that is not allowlisted; not followed")
        async with self.session().get(
            location, allow_redirects=False, headers={"accept": "*/*"},
            timeout=aiohttp.ClientTimeout(total=ctx.upstream.timeouts.total, connect=ctx.upstream.timeouts.connect),
        ) as followed:  # fmt: skip
            if 300 <= followed.status < 400:
                raise UpstreamFailed("the upstream redirected more than once; not followed")
            return await self._relay(ctx, prep, followed, secrets, send)

    # ------------------------------------------------------------ batch

    async def _batch(
        self, ctx: Ctx, match: RouteMatch, segments: tuple[str, ...], query: list[tuple[str, str]], ctype: str,
        body: bytes, send: ASGISend,
    ) -> None:  # fmt: skip
        try:
            doc = json.loads(body)
        except ValueError:
            raise InvalidRequest("the batch body is not valid JSON") from None
        reqs = doc.get("requests") if isinstance(doc, dict) else None
        if not isinstance(reqs, list) or not 1 <= len(reqs) <= 20:
            raise InvalidRequest("a batch holds 1 to 20 requests")
        version = segments[0] if segments else "v1.0"
        answered: list[dict[str, Any]] = []
        forward: list[dict[str, Any]] = []
        preps: list[Prepared] = []
        refused: set[str] = set()
        for r in reqs:
            if not isinstance(r, dict) or not isinstance(r.get("url"), str) or not isinstance(r.get("id"), str | int):
                raise InvalidRequest("each batch request needs an id, a method and a relative url")
            inner_headers = _batch_headers(r)
            rid = str(r["id"])
            depends = [str(d) for d in r.get("dependsOn", []) or []]
            if any(d in refused for d in depends):
                refused.add(rid)
                answered.append(_inner(rid, 424, "failed_dependency", "a request it depends on was refused"))
                continue
            url = r["url"]
            if url.startswith(("http:", "https:", "//")):
                raise InvalidRequest("batch request urls must be relative")
            ipath, _, iq = ("/" + url.lstrip("/")).partition("?")
            try:
                isegs = (version, *normalise_path(ipath))
                iquery = parse_query(iq)
            except PathRefused as exc:
                refused.add(rid)
                answered.append(_inner(rid, 400, exc.code, exc.detail))
                continue
            method = str(r.get("method", "GET")).upper()
            im = ctx.routes.match(method, isegs)
            if im is None or im.spec.batch:
                refused.add(rid)
                await self._unmapped(ctx, method, isegs)
                answered.append(_inner(rid, 403, "route_not_mapped", f"{method} {encode_path(isegs)} is not mapped"))
                continue
            isegs = _canonical(im)
            ibody = b""
            ictype = ""
            if "body" in r:
                ictype = str(inner_headers.get("content-type", "application/json")).split(";", 1)[0].strip().lower()
                if isinstance(r["body"], str) and not ictype.endswith("json"):
                    try:
                        ibody = base64.b64decode(r["body"], validate=True)
                    except ValueError:
                        raise InvalidRequest("a non-JSON batch body must be base64") from None
                else:
                    ibody = json.dumps(r["body"]).encode()
                if len(ibody) > im.route.max_body:
                    raise PayloadTooLarge("a batch request's body is larger than its route's cap")
            prep = await self._prepare(ctx, im, method, isegs, iquery, ictype, ibody)
            await self._decide(ctx, prep, None)
            preps.append(prep)
            if not prep.verdict.allowed:
                refused.add(rid)
                err = self._refusal(prep)
                answered.append(_inner(rid, 403, err.code, err.detail, **err.extra))
                continue
            # rebuilt from what was decided: nothing of the caller's reaches the upstream undecided
            iurl = encode_path(isegs[1:]) + ("?" + encode_query(iquery) if iquery else "")
            inner: dict[str, Any] = {"id": r["id"], "method": method, "url": iurl}
            if "body" in r:
                inner["body"] = r["body"]
            if inner_headers:
                inner["headers"] = inner_headers
            if "dependsOn" in r:
                inner["dependsOn"] = [d for d in depends if d not in refused]
            forward.append(inner)
        if not forward:
            out = json.dumps({"responses": answered}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode()),
                                    *SECURITY_HEADERS]})  # fmt: skip
            await send({"type": "http.response.body", "body": out})
            return
        fbody = json.dumps({"requests": forward}).encode()
        up = ctx.upstream
        outcome: dict[str, Any] = {"result": "error"}
        try:
            try:
                cred, secrets = await self._credentials(ctx)
            except TetherError as exc:  # nothing was forwarded: every allowed inner call's outcome says why
                outcome = {"result": "credential_error", "error": exc.code}
                raise
            async with self.session().post(
                up.base_url + encode_path(segments), data=fbody, allow_redirects=False,
                headers=self._outgoing(ctx, cred, "application/json"), ssl=self._ssl.get(up.name, True),
                timeout=aiohttp.ClientTimeout(total=up.timeouts.total, connect=up.timeouts.connect),
            ) as resp:  # fmt: skip
                raw = await self._read_capped(resp, up.json_rewrite_max) or b""
                scanner = LeakScanner(secrets)
                if scanner.contains(raw) or _escaped_hit(scanner, raw) or _header_hit(scanner, resp, secrets):
                    for p in preps:
                        if p.verdict.allowed:
                            await self._leak(ctx, p, "body")
                    raise LeakBlocked("the upstream's batch response contained the injected credential")
                merged, items = self._rewrite_json(ctx, raw, None)
                try:
                    mdoc = json.loads(merged)
                    mdoc["responses"] = [self._inner_answer(ctx, a) for a in mdoc.get("responses", [])] + answered
                    merged = json.dumps(mdoc, separators=(",", ":")).encode()
                except (ValueError, AttributeError, TypeError):
                    raise UpstreamFailed("the upstream's batch response is not a batch response") from None
                over = _over(up.budget, self._usage(ctx), len(merged), items)
                if over:
                    for p in preps:
                        if p.verdict.allowed:
                            await self._budget(ctx, p, over, len(merged), items)
                    raise BudgetExceeded(f"this response would take the task past its {over} budget")
                self._reserve(ctx, len(merged), items)
                headers = [*self._response_headers(ctx, resp), (b"content-length", str(len(merged)).encode())]
                await send({"type": "http.response.start", "status": resp.status, "headers": headers})
                await send({"type": "http.response.body", "body": merged})
                outcome = {"result": "ok", "status": resp.status, "bytes": len(merged), "items": items}
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = {"result": "upstream_error", "error": type(exc).__name__}
            raise UpstreamFailed(f"the upstream did not answer ({type(exc).__name__})") from None
        finally:
            self._release(ctx)
            enforcer = self._enforcer()
            allowed = [p for p in preps if p.verdict.allowed]
            for i, p in enumerate(allowed):
                # bytes and items are counted once, on the first inner call
                share = outcome if i == 0 else {**outcome, "bytes": 0, "items": 0}
                try:
                    await enforcer.completed(p.call, p.verdict, outcome={**share, "batch": True})
                except TetherError as exc:
                    log.error("outcome not recorded", error=exc.code)

    def _inner_answer(self, ctx: Ctx, answer: Any) -> Any:
        """An inner answer of a batch, its Location (a pre-authenticated download URL, say) turned into the same
        request through the gateway, or dropped when it points elsewhere: downloads go through the gateway."""
        headers = answer.get("headers") if isinstance(answer, dict) else None
        if not isinstance(headers, dict):
            return answer
        kept: dict[str, Any] = {}
        for k, v in headers.items():
            if str(k).lower() == "location":
                through = self._gateway_url(ctx, v) if isinstance(v, str) else None
                if through is None:
                    continue
                v = through
            kept[k] = v
        return {**answer, "headers": kept}

    # ------------------------------------------------------------ events and counters

    def _reserve(self, ctx: Ctx, size: int, items: int) -> None:
        """Count an answer against the task's usage as it is let through, before the first await that sends
        it: concurrent requests of the task then see it when they check their own (the outcome record
        counts it for good; `_release` hands over to it)."""
        usage = getattr(self._enforcer(), "usage", None)
        if usage is None:
            return
        usage.add(ctx.token.task_id, bytes=size, items=items)
        ctx.reserved[0] += size
        ctx.reserved[1] += items

    def _release(self, ctx: Ctx) -> None:
        """Give back what `_reserve` counted, right before the outcome is counted (no await in between)."""
        size, items = ctx.reserved
        usage = getattr(self._enforcer(), "usage", None)
        if usage is None or not (size or items):
            return
        usage.add(ctx.token.task_id, bytes=-size, items=-items)
        ctx.reserved[:] = [0, 0]

    def _usage(self, ctx: Ctx) -> Mapping[str, int]:
        enforcer = self._enforcer()
        usage = getattr(enforcer, "usage", None)
        return usage.of(ctx.token.task_id) if usage is not None else {}

    async def _leak(self, ctx: Ctx, prep: Prepared, where: str) -> None:
        t = ctx.token
        if self.metrics is not None:
            self.metrics.child(self.metrics.upstream_calls, "http", ctx.upstream.name, "leak_blocked").inc()
        await self._enforcer().record(Event(
            type="credential.leak_blocked", actor=t.agent_id, task_id=t.task_id, trace_id=ctx.trace_id,
            parent_id=prep.verdict.decision_event_id if prep.verdict else None, agent_id=t.agent_id,
            person_id=t.person_id, action=prep.match.spec.action, request_digest=prep.digest,
            detail={"gateway": "http", "upstream": ctx.upstream.name, "credential": ctx.upstream.credential,
                    "where": where, "route": prep.match.spec.name},
        ))  # fmt: skip

    async def _budget(self, ctx: Ctx, prep: Prepared, which: str, size: int, items: int) -> None:
        t = ctx.token
        await self._enforcer().record(Event(
            type="budget.exceeded", actor=t.agent_id, task_id=t.task_id, trace_id=ctx.trace_id,
            parent_id=prep.verdict.decision_event_id if prep.verdict else None, agent_id=t.agent_id,
            person_id=t.person_id, action=prep.match.spec.action, request_digest=prep.digest,
            detail={"gateway": "http", "upstream": ctx.upstream.name, "budget": which, "response_bytes": size,
                    "response_items": items, "usage": dict(self._usage(ctx)),
                    "limits": ctx.upstream.budget.model_dump()},
        ))  # fmt: skip

    def _count(self, up: Upstream) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.upstream_calls, "http", up.name, "ok").inc()


class _Abort(Exception):
    """Raised after the response started; `__call__` returns without finishing it, so the connection is cut."""


@functools.lru_cache(maxsize=256)
def _base_parts(base_url: str) -> tuple[tuple[str, str, int | None], str]:
    """(scheme, host, port) and path prefix of an upstream's base URL."""
    base = urlsplit(base_url)
    return (base.scheme, (base.hostname or "").lower(), base.port), base.path.rstrip("/")


_UNREAD = object()
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_DIGIT_RUN = b"0" * 19


def _strip_links(through: Callable[[str], str | None], doc: Any, raw: bytes, pre_auth: bool, links: int) -> bool:
    """In place, at any depth: pre-authenticated URLs dropped, paging links rewritten by `through` (dropped when it
    gives None); whether anything changed. `raw` is the document's text, holding `links` times `Link` and
    PRE_AUTH_MARKERS or not (`pre_auth`): when it holds no escape, no such marker and no `Link` but in the
    document's own paging keys (the usual page of a list), nothing below the top is visited."""
    if not pre_auth and type(doc) is dict and links == sum(1 for k in LINK_KEYS if k in doc) and b"\\u" not in raw:
        return _strip_node(through, doc, deep=False)
    return _strip_node(through, doc, deep=True)


def _strip_node(through: Callable[[str], str | None], node: Any, *, deep: bool) -> bool:
    changed = False
    if isinstance(node, dict):
        if not PRE_AUTH_KEYS.isdisjoint(node):
            for k in PRE_AUTH_KEYS.intersection(node):
                del node[k]
            changed = True
        for k in LINK_KEYS:
            v = node.get(k)
            if isinstance(v, str):
                changed = True
                rewritten = through(v)
                if rewritten is None:
                    del node[k]
                else:
                    node[k] = rewritten
        values: Any = node.values()
    elif isinstance(node, list):
        values = node
    else:
        return False
    if deep:
        for v in values:
            t = type(v)
            if (t is dict or t is list) and _strip_node(through, v, deep=True):
                changed = True
    return changed


def request_digest_of(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the RFC 8785 JSON of the request digest document (architecture §8).

    The document holds only strings (valid UTF-8: paths and queries are decoded strictly),
    integers, lists and objects with ASCII keys. For such values RFC 8785 output equals
    `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` (same escapes,
    same key order for ASCII keys, integers as written), which is ten times faster than the
    general serialiser on this hot path; orjson with sorted keys writes the same bytes five times
    faster again. A property test pins the equality. What orjson refuses (lone surrogates,
    integers past 64 bits) goes to the standard library, which answers as it always did.
    """
    try:
        data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def _is_me(template: str) -> bool:
    """Whether a route template is under the caller's own `/me` (its user is the token's person)."""
    return "/me/" in template + "/"


def _items_in(doc: Any) -> int:
    """Items in one JSON answer: the length of a top-level `value` list, else 1 for an object, else 0."""
    if not isinstance(doc, dict):
        return 0
    value = doc.get("value")
    return len(value) if isinstance(value, list) else 1


def _header_hit(scanner: LeakScanner, resp: aiohttp.ClientResponse, secrets: tuple[str, ...]) -> bool:
    """Whether any response header, name or value (Location included), holds a credential; names are compared
    without case (HTTP lowercases them on the way, and a lowercased credential is still most of it)."""
    if scanner.contains_any([f"{k}: {v}".encode("utf-8", "replace") for k, v in resp.headers.items()]):
        return True
    folded = LeakScanner([x.lower() for x in secrets])
    return folded.contains_any([k.lower().encode("utf-8", "replace") for k in resp.headers])


def _escaped_hit(scanner: LeakScanner, raw: bytes) -> bool:
    """A credential spelled with JSON escapes (`\\u0063…`) is the credential once read: scan the text as read."""
    if not scanner.needles or b"\\u" not in raw:
        return False
    try:
        return scanner.contains(json.dumps(json.loads(raw), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        return False


def _check_coding(resp: aiohttp.ClientResponse) -> None:
    """Refuse an answer in a content coding the upstream client did not decode (stacked, unknown): the
    gateway could neither scan it nor count it, and it drops the header the client would need."""
    codings = [c.strip().lower() for v in resp.headers.getall("Content-Encoding", ()) for c in v.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings or (len(codings) == 1 and codings[0] in DECODED_CODINGS):
        return
    raise UpstreamFailed("the upstream's answer uses a content coding the gateway cannot inspect")


def _batch_headers(r: Mapping[str, Any]) -> dict[str, str]:
    """An inner batch request's headers, checked: members and headers the gateway does not decide are refused
    (a `Method` beside `method`, an `Authorization`, a method override), never forwarded undecided."""
    unknown = [k for k in r if k not in BATCH_KEYS]
    if unknown:
        raise InvalidRequest(f"a batch request holds a member the gateway does not decide: {str(unknown[0])[:64]}")
    headers = r.get("headers") or {}
    if not isinstance(headers, dict):
        raise InvalidRequest("a batch request's headers must be an object")
    out: dict[str, str] = {}
    for k, v in headers.items():
        name = str(k).lower()
        if name not in BATCH_HEADERS:
            raise InvalidRequest(f"a batch request may not carry the header {str(k)[:64]}")
        if name in out:
            raise InvalidRequest(f"a batch request repeats the header {str(k)[:64]}")
        if not isinstance(v, str):
            raise InvalidRequest("batch request header values must be strings")
        out[name] = v
    return out


def _over(budget: Any, usage: Mapping[str, int], size: int, items: int) -> str | None:
    if budget.bytes is not None and usage.get("bytes", 0) + size > budget.bytes:
        return "bytes"
    if budget.items is not None and usage.get("items", 0) + items > budget.items:
        return "items"
    return None


@functools.cache
def _resource_class() -> Any:
    import importlib

    try:
        return getattr(importlib.import_module("tether.policy"), "Resource", _Resource)
    except ImportError:  # the policy context has not landed: same shape, so decisions read the same fields
        return _Resource


@dataclass(frozen=True, slots=True)
class _Resource:
    type: str
    id: str
    system: str
    sensitivity: str = "internal"
    owner: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


def _canonical(match: RouteMatch) -> tuple[str, ...]:
    """The matched path spelled as the route template spells it (literal case from the map, params as sent)."""
    return tuple(_fill(match.route.template, match.params).strip("/").split("/"))


def _names(template: str) -> list[str]:
    return re.findall(r"\{([a-z_][a-z0-9_]*)\}", template)


def _fill(template: str, params: Mapping[str, str]) -> str:
    parts = _parts(template)
    if len(parts) == 1:
        return template
    out = list(parts)
    for i in range(1, len(parts), 2):
        out[i] = params.get(parts[i], "")
    return "".join(out)


_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@functools.lru_cache(maxsize=1024)
def _parts(template: str) -> tuple[str, ...]:
    """The template's literal text and parameter names, alternating (literal first and last)."""
    return tuple(_PARAM.split(template))


def _inner(rid: str, status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "status": status, "headers": {"Content-Type": "application/problem+json"},
            "body": {"type": "https://tether.dev/problems/" + code.replace("_", "-"), "status": status, "code": code,
                     "detail": detail, **extra}}  # fmt: skip


__all__ = [
    "ApprovalRequired",
    "BudgetExceeded",
    "HttpGateway",
    "LeakBlocked",
    "PolicyDenied",
    "RouteNotMapped",
    "UnknownUpstream",
    "UpstreamFailed",
    "request_digest_of",
]
