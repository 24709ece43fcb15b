"""Composition root: the one place the contexts are built and connected.

`build_services` is used by `tether serve` (through `create_app`), by the CLI and by tests.
Each bounded context adds its service here; nothing below the outer layers wires objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.api.auth import AdminTokens
from tether.api.dispatch import Dispatch
from tether.approvals import ApprovalService, WebhookNotifier
from tether.audit.log import AuditLog, audit_key
from tether.background import stop_task
from tether.config import Settings
from tether.gateway._enforce import Enforcer
from tether.identity import IdentityService
from tether.metrics import Metrics
from tether.policy import PolicyEngine
from tether.store.db import Database
from tether.store.identity import SqlIdentityStore
from tether.store.migrate import upgrade
from tether.tokens import TokenService, TokenVerifier


@dataclass
class Services:
    settings: Settings
    db: Database
    identity: IdentityService
    admin_tokens: AdminTokens
    metrics: Metrics = field(default_factory=Metrics)
    #: the audit log every context writes through (group commit; tether.audit)
    audit: AuditLog | None = None
    #: the policy decision point: Cedar bundle, entity cache (tether.policy)
    policy: PolicyEngine | None = None
    #: approval requests, one-time grants, break-glass (tether.approvals)
    approvals: ApprovalService | None = None
    #: token exchange, delegation tokens, revocation, tasks (tether.tokens)
    tokens: TokenService | None = None
    #: offline task-token verification for the gateways (tether.tokens)
    verifier: TokenVerifier | None = None
    #: the enforcement step both gateways share; built last, from the contexts above
    enforcer: Enforcer | None = None
    #: (name, start, stop) of background work started with the server (audit writer, watchers)
    lifecycle: list[tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]] = field(
        default_factory=list
    )
    #: readiness checks: name → callable returning True when ready
    ready_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        self.db.dispose()


def build_services(settings: Settings, *, migrate: bool = True, recover: bool = True) -> Services:
    """Every context, wired. `recover=False` for a worker of `tether serve --workers`: its parent ran the
    start-up recovery once, before any worker served, so no worker marks a sibling's call in flight."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if migrate:
        upgrade(settings.url)
    db = Database(settings.url)
    services = Services(
        settings=settings,
        db=db,
        identity=IdentityService(SqlIdentityStore(db)),
        admin_tokens=AdminTokens(db),
    )
    services.ready_checks["database"] = db.ping
    from tether.store.db import WalCheckpointer

    wal = WalCheckpointer(db)
    services.lifecycle.append(("wal-checkpoint", wal.astart, wal.astop))
    from tether.crypto import load_master_key

    _build_audit(services, load_master_key(settings), recover=recover)
    services.approvals = _build_approvals(settings, db, services.identity)
    services.lifecycle.append(("approvals", services.approvals.start, services.approvals.stop))
    _build_tokens(services)
    _build_credentials(services)
    _build_mcp_gateway(services)
    # After the gateways: their catalogs and route maps register actions the Cedar schema must know.
    _build_policy(services)
    # Keep this last: the shared enforcement step uses whatever contexts are wired above.
    from functools import partial

    from tether.gateway._enforce import TaskUsage
    from tether.store.usage import changed_since, head_seq, load_usage

    usage = TaskUsage(load=partial(load_usage, db), changed=partial(changed_since, db), head=partial(head_seq, db))
    services.lifecycle.append(("task-usage", usage.start, usage.stop))
    if services.audit is not None:
        services.audit.usage_sink = usage.committed  # told the totals once committed events are counted
    instance = services.extras.get("instance")
    services.enforcer = Enforcer(
        policy=getattr(services, "policy", None),
        audit=getattr(services, "audit", None),
        approvals=getattr(services, "approvals", None),
        metrics=services.metrics,
        usage=usage,
        instance=instance.id if instance is not None else None,
    )
    return services


def _build_policy(services: Services) -> None:
    """Policy: the configured bundle (or the shipped pack), hot-reloaded; `policy.loaded` audited."""
    import asyncio
    import contextlib

    from tether.audit.model import Event
    from tether.errors import NotFound
    from tether.policy import Bundle, BundleError

    identity = services.identity

    def agent(agent_id: str) -> Any:
        try:
            return identity.get_agent(agent_id)
        except NotFound:
            return None

    def person(person_id: str) -> Any:
        try:
            p = identity.get_person(person_id)
        except NotFound:
            return None
        return p, identity.entitlements(p)

    def loaded(bundle: Bundle) -> None:
        assert services.audit is not None
        services.audit.record_sync(
            [Event(type="policy.loaded", detail={"bundle": bundle.hash, "files": list(bundle.files),
                                                 "policies": len(bundle.policies), "source": bundle.source})]
        )  # fmt: skip

    engine = PolicyEngine(
        services.settings.policy_dir, agent_lookup=agent, person_lookup=person, on_loaded=loaded,
        metrics=services.metrics,
    )  # fmt: skip
    services.policy = engine
    tasks: dict[str, asyncio.Task[None]] = {}

    async def watch() -> None:
        while True:
            await asyncio.sleep(2.0)
            if engine.changed_on_disk():
                with contextlib.suppress(BundleError):  # refused bundles are logged; the running one stays
                    await asyncio.to_thread(engine.load)

    with contextlib.suppress(BundleError):  # a bad bundle at start: serve, but fail closed and report not ready
        engine.load()

    async def start() -> None:
        tasks["watch"] = asyncio.create_task(watch())

    async def stop() -> None:
        await stop_task(tasks.pop("watch", None))

    services.lifecycle.append(("policy", start, stop))
    services.ready_checks["policy"] = lambda: engine.bundle is not None


def _build_audit(services: Services, master_key: bytes, *, recover: bool = True) -> None:
    """Audit: group-commit log, signing key sealed under a master-derived key, checkpoints, start-up recovery."""
    import asyncio

    from tether.audit.checkpoints import FILE_NAME, AuditKeyTampered, Checkpointer, load_key, signing_secret
    from tether.audit.log import content_key
    from tether.audit.query import recover as recover_outcomes

    settings, db = services.settings, services.db
    audit = AuditLog(
        db, digest_key=audit_key(master_key), on_commit=services.metrics.audit_events.inc,
        prompt_mode=settings.prompt_mode, content_key=content_key(master_key),
    )  # fmt: skip
    services.audit = audit
    services.extras["audit_content_key"] = content_key(master_key)
    services.extras["checkpoint_file"] = settings.data_dir / FILE_NAME
    checkpointer: Checkpointer | None = None
    try:
        key = load_key(db, signing_secret(master_key))
    except AuditKeyTampered as exc:  # verification reports it; no checkpoint is signed with a doubtful key
        services.extras["audit_key_error"] = exc.detail
    else:
        assert key is not None
        services.extras["audit_key"] = key
        checkpointer = Checkpointer(
            db, key, every=settings.checkpoint_every, seconds=settings.checkpoint_seconds,
            path=settings.data_dir / FILE_NAME, webhook=settings.checkpoint_webhook,
        )  # fmt: skip
        audit.listeners.append(checkpointer.on_commit)
        services.extras["checkpointer"] = checkpointer

    from tether.audit.instances import Instance, live_instances
    from tether.audit.results import namer

    name_result = namer(master_key)  # a recovered MCP outcome takes the id its result was given under
    instance = Instance(db, name_result=name_result)
    services.extras["instance"] = instance

    async def start() -> None:
        await audit.start()
        if recover:  # allowed calls left without an outcome get "unknown", unless a live instance decided them
            await asyncio.to_thread(lambda: recover_outcomes(db, live=live_instances(db), name_result=name_result))
        await instance.start()
        if checkpointer is not None:
            await checkpointer.start()

    async def stop() -> None:
        if checkpointer is not None:
            await checkpointer.stop()
        await audit.stop()
        await instance.stop()

    services.lifecycle.insert(0, ("audit", start, stop))
    from tether.api.routes.audit import router as audit_router

    services.extras.setdefault("routers", []).append(audit_router)


def _build_tokens(services: Services) -> None:
    """Tokens: signing keys sealed under a key derived from the master key; one revocation watcher."""
    from sqlalchemy.engine import make_url

    from tether.crypto import TOKENS_SIGNING_KEY, derive_key, load_master_key
    from tether.store.tokens import SqlTokenStore
    from tether.tokens import KeyRing, RevocationState, RevocationWatcher, load_trusted_issuers

    settings = services.settings
    store = SqlTokenStore(services.db)
    key = derive_key(load_master_key(settings), TOKENS_SIGNING_KEY)
    keyring = KeyRing(store, key)
    keyring.ensure()
    state = RevocationState()
    listen = None
    if not settings.is_sqlite:
        listen = make_url(settings.url).set(drivername="postgresql").render_as_string(hide_password=False)
    watcher = RevocationWatcher(
        store, state, poll_seconds=settings.revocation_poll_seconds, listen_url=listen, on_keyring=keyring.reload
    )
    verifier = TokenVerifier(keyring, state, issuer=settings.issuer, base_url=settings.base_url)
    services.verifier = verifier
    services.tokens = TokenService(
        store, services.identity, keyring, verifier, issuer=settings.issuer, token_lifetime=settings.token_lifetime,
        task_lifetime=settings.task_lifetime, trusted=load_trusted_issuers(settings.trusted_issuers),
    )  # fmt: skip
    services.extras["revocation_watcher"] = watcher
    services.lifecycle.append(("revocations", watcher.astart, watcher.astop))
    services.ready_checks["keys"] = lambda: keyring.ready() and state.fresh()


def _ended_sessions(services: Services) -> Any:
    """MCP sessions ended with DELETE, shared through the revocations table (None without the token service)."""
    from tether.store.tokens import SqlTokenStore
    from tether.tokens import EndedSessions

    verifier = services.verifier
    if verifier is None:
        return None
    return EndedSessions(SqlTokenStore(services.db), verifier.revocations)


def _build_credentials(services: Services) -> None:
    """Credential vault (envelope encryption under the master key) as `extras["vault"]`."""
    from tether.credentials import Vault
    from tether.crypto import load_master_key
    from tether.store.credentials import SqlCredentialStore

    services.extras["vault"] = Vault(SqlCredentialStore(services.db), load_master_key(services.settings))
    _build_http_gateway(services)


def _build_http_gateway(services: Services) -> None:
    """HTTP gateway at /proxy (raw ASGI); the enforcer and verifier are looked up per call, so order is free."""
    import asyncio
    import contextlib

    from tether.credentials import Providers
    from tether.errors import TetherError
    from tether.gateway.http import HttpGateway, load_config
    from tether.gateway.http.wellknown import proxy_metadata_router

    vault = services.extras["vault"]
    emails: dict[str, str | None] = {}

    def person_email(person_id: str) -> str | None:
        if person_id not in emails:
            try:
                emails[person_id] = services.identity.get_person(person_id).email
            except TetherError:
                return None
        return emails[person_id]

    ids: dict[str, str] = {}

    def person_by_email(email: str) -> str | None:
        if email not in ids:
            if "@" not in email:
                return None
            try:
                found = services.identity.find_person_by_email(email)
            except TetherError:
                return None
            if found is None:
                return None
            ids[email] = found.id
        return ids[email]

    holder: dict[str, HttpGateway] = {}
    providers = Providers(vault, lambda: holder["gw"].session())
    gateway = HttpGateway(
        load_config(services.settings.gateway_config), base_url=services.settings.base_url,
        verifier=lambda: services.verifier, enforcer=lambda: services.enforcer, providers=providers,
        person_email=person_email, person_by_email=person_by_email, metrics=services.metrics,
    )  # fmt: skip
    holder["gw"] = gateway
    services.extras["http_gateway"] = gateway
    # /proxy/ is dispatched before the middleware stack and the router (tether.api.dispatch)
    services.extras.setdefault("dispatch", []).append(Dispatch(gateway, prefix="/proxy/"))
    services.extras.setdefault("routers", []).append(proxy_metadata_router(gateway, services.settings.issuer))
    sweeper: dict[str, asyncio.Task[None]] = {}

    async def sweep_forever() -> None:
        while True:  # subject tokens of ended tasks, and their cached upstream tokens, are destroyed
            with contextlib.suppress(TetherError):
                await asyncio.to_thread(vault.sweep)
            await asyncio.sleep(15)

    async def start() -> None:
        sweeper["t"] = asyncio.create_task(sweep_forever())

    async def stop() -> None:
        await stop_task(sweeper.pop("t", None))
        await gateway.close()

    services.lifecycle.append(("http-gateway", start, stop))


def _build_mcp_gateway(services: Services) -> None:
    """MCP gateway at /mcp (+ RFC 9728 metadata); tool pins in the store; vault credentials for URL upstreams."""
    from collections.abc import Mapping

    import aiohttp

    from tether.credentials import Injection, Providers
    from tether.errors import TetherError
    from tether.gateway.mcp import McpGateway, ServerSpec, load_config, mcp_router
    from tether.gateway.mcp.upstream import UpstreamUnavailable
    from tether.log import get_logger
    from tether.store.gateway import SqlPinStore

    log = get_logger("tether.gateway.mcp")

    holder: dict[str, aiohttp.ClientSession] = {}

    def session() -> aiohttp.ClientSession:
        if "s" not in holder or holder["s"].closed:
            holder["s"] = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return holder["s"]

    providers = Providers(services.extras["vault"], session)

    # the values injected per (server, person, task): the gateway withholds an answer that holds one
    injected_secrets: dict[tuple[str, str, str], tuple[str, ...]] = {}

    async def headers(spec: ServerSpec, person_id: str, task_id: str) -> Mapping[str, str]:
        if not spec.credential:
            return {}
        try:
            injected = await providers.get(spec.credential).inject(Injection(task_id=task_id, person_id=person_id))
        except TetherError as exc:  # the server cannot be reached as this task: a tool error, the outcome on record
            log.error("MCP upstream credential not available", server=spec.name, error=exc.code)
            raise UpstreamUnavailable(
                f"the gateway could not obtain its credential for MCP server {spec.name} ({exc.code})"
            ) from None
        key = (spec.name, person_id, task_id)
        if key not in injected_secrets and len(injected_secrets) >= 10_000:
            injected_secrets.pop(next(iter(injected_secrets)))
        injected_secrets[key] = injected.secrets
        return injected.headers

    def secrets(server: str, person_id: str | None, task_id: str | None) -> tuple[str, ...]:
        if person_id is None:  # every value injected lately for anyone on this server (at most 10,000 keys)
            return tuple({v for (srv, _, _), vs in list(injected_secrets.items()) if srv == server for v in vs})
        return injected_secrets.get((server, person_id, task_id or ""), ())

    from tether.crypto import MCP_SESSION_KEY, derive_key, load_master_key

    settings = services.settings
    # one key for every process of this deployment: a session opened on one is accepted by the others
    session_key = derive_key(load_master_key(settings), MCP_SESSION_KEY)
    gateway = McpGateway(
        load_config(settings.gateway_config), base_url=settings.base_url, verifier=lambda: services.verifier,
        enforcer=lambda: services.enforcer, pins=SqlPinStore(services.db), headers=headers, metrics=services.metrics,
        secrets=secrets, session_key=session_key, ended=_ended_sessions(services),
    )  # fmt: skip
    services.extras["mcp_gateway"] = gateway
    services.extras.setdefault("routers", []).append(mcp_router(gateway, settings.issuer))
    services.extras.setdefault("dispatch", []).append(Dispatch(gateway, path="/mcp"))

    async def start() -> None:
        return None

    async def stop() -> None:
        await gateway.close()
        if "s" in holder and not holder["s"].closed:
            await holder["s"].close()

    services.lifecycle.append(("mcp-gateway", start, stop))


def _build_approvals(settings: Settings, db: Database, identity: IdentityService) -> ApprovalService:
    """Approvals: prompts sealed under a key derived from the master key; webhooks from settings."""
    from tether.crypto import APPROVALS_PROMPT_KEY, SecretUnreadable, derive_key, load_master_key, seal, unseal
    from tether.store.approvals import SqlApprovalStore

    key = derive_key(load_master_key(settings), APPROVALS_PROMPT_KEY)

    def seal_prompt(approval_id: str, text: str) -> bytes:
        return seal(key, text.encode(), approval_id.encode())

    def unseal_prompt(approval_id: str, blob: bytes) -> str | None:
        try:
            return unseal(key, blob, approval_id.encode()).decode()
        except SecretUnreadable:
            return None

    store = SqlApprovalStore(db, unseal_prompt)
    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
    notifier = WebhookNotifier(
        store, urls=settings.webhook_urls, slack_urls=settings.webhook_slack_urls, secret=secret,
        retries=settings.webhook_retries,
    )  # fmt: skip
    return ApprovalService(
        store, identity, seal=seal_prompt, ttl=settings.approval_ttl,
        breakglass_max=settings.breakglass_max_seconds, notifier=notifier, console_url=settings.base_url,
    )  # fmt: skip


__all__ = ["Services", "build_services"]
