"""The token service: OAuth 2.0 Token Exchange (RFC 8693) with private_key_jwt, tasks, revocation.

Effective scope (architecture §1): granted = requested ∩ agent ceiling ∩ person's
entitlements ∩ delegation (∩ the parent token's scope for renewal and multi-hop). Narrowing
rule: a request naming any scope outside that set is refused with `invalid_scope`, the
excess named in `excess` — nothing is silently dropped. A request without `scope` gets the
whole allowed set (what the delegation permits, cut to ceiling and entitlements).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.audit.model import Event
from tether.errors import Conflict, NotFound
from tether.identity import Agent, Delegation, IdentityService, Person
from tether.tokens import jose
from tether.tokens.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    OAuthError,
    OAuthInvalidRequest,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from tether.tokens.keys import KeyRing
from tether.tokens.model import (
    ACCESS_TOKEN_TYPE,
    ACCESS_TYP,
    ASSERTION_TYPE,
    DELEGATION_TYP,
    GRANT_TOKEN_EXCHANGE,
    JWT_TOKEN_TYPE,
    MAX_ASSERTION_SECONDS,
    MAX_DELEGATION_TOKEN_DAYS,
    MAX_DEPTH,
    VerifiedToken,
    act_claim,
)
from tether.tokens.ports import TaskRow, TokenStore
from tether.tokens.trusted import TrustedIssuer
from tether.tokens.verifier import TokenVerifier
from tether.types import new_id, utcnow

SUBJECT_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:id_token")
MAX_PURPOSE = 2000
PURGE_EVERY = 256


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """The form fields of a token-exchange request (RFC 8693 §2.1 + RFC 7523 client auth)."""

    grant_type: str | None
    client_assertion_type: str | None
    client_assertion: str | None
    client_id: str | None = None
    subject_token: str | None = None
    subject_token_type: str | None = None
    scope: str | None = None
    audiences: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    task_purpose: str | None = None
    #: Tether extension: let this second agent exchange the issued token (multi-hop), as `may_act`
    may_act: str | None = None
    actor_token: str | None = None
    authorization_details: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Client:
    agent: Agent
    jti: str
    expires_at: datetime


@dataclass
class _Ctx:
    """What is known so far, for the denial record."""

    client: Client | None = None
    agent_id: str | None = None
    person_id: str | None = None
    task_id: str | None = None
    kind: str | None = None
    jti_consumed: bool = False


@dataclass(frozen=True, slots=True)
class _Subject:
    kind: str  # "external" | "delegation" | "renewal" | "multi_hop"
    person: Person
    delegation: Delegation
    token_scope: frozenset[str] | None  # the subject token's own scope, when it bounds the grant
    parent: VerifiedToken | None = None
    revocation_subjects: tuple[tuple[str, str], ...] = ()
    issued_at: int = 0
    detail: Mapping[str, Any] = field(default_factory=dict)


class TokenService:
    def __init__(
        self,
        store: TokenStore,
        identity: IdentityService,
        keyring: KeyRing,
        verifier: TokenVerifier,
        *,
        issuer: str,
        token_lifetime: int,
        task_lifetime: int,
        trusted: Mapping[str, TrustedIssuer] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.identity = identity
        self.keyring = keyring
        self.verifier = verifier
        self.issuer = issuer
        self.token_endpoint = f"{issuer}/oauth/token"
        self.token_lifetime = token_lifetime
        self.task_lifetime = task_lifetime
        self.trusted = dict(trusted or {})
        self.clock = clock
        self._count = 0

    @property
    def leeway(self) -> int:
        return self.verifier.leeway

    # ------------------------------------------------------------ exchange

    def exchange(self, req: ExchangeRequest) -> dict[str, Any]:
        """Issue a task token, or raise an OAuthError (recorded as `token.denied`)."""
        ctx = _Ctx()
        try:
            return self._exchange(req, ctx)
        except OAuthError as exc:
            ctx.agent_id = ctx.agent_id or exc.extra.get("agent_id")
            self._deny(exc, ctx)
            raise

    def _exchange(self, req: ExchangeRequest, ctx: _Ctx) -> dict[str, Any]:
        if req.grant_type != GRANT_TOKEN_EXCHANGE:
            raise UnsupportedGrantType(f"grant_type must be {GRANT_TOKEN_EXCHANGE}")
        client = self.authenticate_client(
            req.client_assertion_type, req.client_assertion, req.client_id, self.token_endpoint
        )
        ctx.client, ctx.agent_id = client, client.agent.id
        if not req.subject_token:
            raise OAuthInvalidRequest("subject_token is required")
        if req.subject_token_type not in SUBJECT_TOKEN_TYPES:
            raise OAuthInvalidRequest("subject_token_type must be an access_token, jwt or id_token type")
        if req.actor_token:
            raise OAuthInvalidRequest("actor_token is not supported: the client assertion names the actor")
        now = self.clock()
        subject = self._subject(req.subject_token, client.agent, now)
        ctx.person_id, ctx.kind = subject.person.id, subject.kind
        if subject.parent is not None:
            ctx.task_id = subject.parent.task_id
        audience = self._target(req, subject.parent)
        allowed = self._allowed(client.agent, subject)
        scopes = self._narrow(req.scope, allowed)
        may_act = self._may_act(req.may_act, client.agent, subject.person, now)

        parent = subject.parent
        actors = (client.agent.id,) if parent is None else (
            parent.actors if subject.kind == "renewal" else (client.agent.id, *parent.actors))  # fmt: skip
        if len(actors) > MAX_DEPTH:
            raise InvalidGrant(f"delegation chain deeper than {MAX_DEPTH}")
        task_id = parent.task_id if parent is not None else new_id("tsk")
        ctx.task_id = task_id
        iat = int(now.timestamp())
        exp = min(iat + self.token_lifetime, math.floor(subject.delegation.expires_at.timestamp()))
        if parent is None:
            exp = min(exp, iat + self.task_lifetime)
        jti = new_id("tok")
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": subject.person.id, "act": act_claim(actors), "client_id": client.agent.id,
            "aud": audience, "scope": " ".join(sorted(scopes)), "task_id": task_id, "jti": jti,
            "iat": iat, "nbf": iat, "exp": exp, "dlg": subject.delegation.id,
        }  # fmt: skip
        if may_act:
            claims["may_act"] = {"sub": may_act}
        if req.authorization_details:
            claims["authorization_details"] = req.authorization_details

        with self.store.write() as repo:
            if not repo.consume_jti(client.agent.id, client.jti, client.expires_at):
                ctx.jti_consumed = True
                raise InvalidClient("client assertion replayed (jti already used)")
            ctx.jti_consumed = True
            self._count += 1
            if self._count % PURGE_EVERY == 0:
                repo.purge_jtis(now)
            if subject.revocation_subjects:
                why = repo.revoked(subject.revocation_subjects, datetime.fromtimestamp(subject.issued_at, UTC))
                if why is not None:
                    raise InvalidGrant(f"subject token no longer valid: {why}")
            events: list[Event] = []
            if parent is None:
                repo.insert_task(TaskRow(
                    id=task_id, agent_id=client.agent.id, person_id=subject.person.id,
                    delegation_id=subject.delegation.id, purpose=(req.task_purpose or "")[:MAX_PURPOSE],
                    scopes=tuple(sorted(scopes)), audience=audience, actors=actors,
                    constraints={"authorization_details": req.authorization_details}
                    if req.authorization_details else None,
                    status="open", started_at=now, expires_at=datetime.fromtimestamp(exp, UTC),
                ))  # fmt: skip
                events.append(Event(
                    type="task.started", actor=client.agent.id, task_id=task_id, agent_id=client.agent.id,
                    person_id=subject.person.id, sponsor_id=client.agent.sponsor_id,
                    detail={"purpose": (req.task_purpose or "")[:MAX_PURPOSE], "scopes": sorted(scopes),
                            "audience": audience, "delegation_id": subject.delegation.id,
                            "subject": subject.kind, **subject.detail},
                ))  # fmt: skip
            else:
                task = repo.get_task(task_id)
                if task is None or task.state(now) != "open":
                    raise InvalidGrant(f"task {task_id} is not open")
                deadline = task.started_at + timedelta(seconds=self.task_lifetime)
                exp = min(exp, int(deadline.timestamp()))
                if subject.kind == "multi_hop":
                    exp = min(exp, parent.expires_at)
                if exp <= iat:
                    raise InvalidGrant("the task has reached its end")
                claims["exp"] = exp
                merged = tuple(dict.fromkeys((*task.actors, *actors)))
                repo.extend_task(task_id, datetime.fromtimestamp(exp, UTC), merged)
            events.append(Event(
                type="token.issued", actor=client.agent.id, task_id=task_id, agent_id=client.agent.id,
                person_id=subject.person.id, sponsor_id=client.agent.sponsor_id, decision="allow",
                detail={"jti": jti, "kind": subject.kind, "scopes": sorted(scopes), "audience": audience,
                        "actors": list(actors), "exp": exp, "kid": self.keyring.active_kid},
            ))  # fmt: skip
            token = self.keyring.sign(claims, ACCESS_TYP)
            repo.record(events)
        return {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": exp - iat,
            "scope": claims["scope"],
            "task_id": task_id,
        }

    # ---------------------------------------------------- client assertion

    def authenticate_client(
        self, assertion_type: str | None, assertion: str | None, client_id: str | None, endpoint: str
    ) -> Client:
        """RFC 7523 private_key_jwt with the agent's registered key, algorithm pinned per key."""
        if assertion_type != ASSERTION_TYPE or not assertion:
            raise InvalidClient(f"client authentication needs client_assertion_type={ASSERTION_TYPE}")
        try:
            _, unverified = jose.unverified_claims(assertion)
        except jose.JoseError as exc:
            raise InvalidClient(f"client assertion is malformed: {exc}") from exc
        iss, sub = unverified.get("iss"), unverified.get("sub")
        if not isinstance(iss, str) or iss != sub:
            raise InvalidClient("client assertion iss and sub must both be the agent id")
        if client_id is not None and client_id != iss:
            raise InvalidClient("client_id does not match the client assertion")
        try:
            agent = self.identity.get_agent(iss)
        except NotFound as exc:
            raise InvalidClient("unknown client") from exc
        keys: dict[str, jose.VerifyKey] = {}
        for jwk in agent.jwks.get("keys", []):
            try:
                k = jose.verify_key_from_jwk(jwk)
            except jose.JoseError:
                continue
            keys[k.kid] = k
        try:
            _, claims = jose.verify(assertion, keys, require_kid=False)
        except jose.JoseError as exc:
            raise InvalidClient(f"client assertion rejected: {exc}") from exc
        now = self.clock().timestamp()
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if self.issuer not in auds and endpoint not in auds:
            raise InvalidClient("client assertion aud must be the issuer (or this endpoint)")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise InvalidClient("client assertion has no exp")
        if exp <= now - self.leeway:
            raise InvalidClient("client assertion expired")
        if exp > now + MAX_ASSERTION_SECONDS + self.leeway:
            raise InvalidClient(f"client assertion lives longer than {MAX_ASSERTION_SECONDS} s")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > now + self.leeway:
            raise InvalidClient("client assertion not yet valid")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise InvalidClient("client assertion needs a jti")
        if not agent.active:
            raise InvalidClient(f"agent {agent.id} is {agent.status.value}", agent_id=agent.id)
        return Client(agent, jti, datetime.fromtimestamp(exp + self.leeway, UTC))

    def consume_client(self, client: Client) -> None:
        """Spend the assertion's jti outside an exchange (revocation); a replay is refused."""
        with self.store.write() as repo:
            if not repo.consume_jti(client.agent.id, client.jti, client.expires_at):
                raise InvalidClient("client assertion replayed (jti already used)")

    # ------------------------------------------------------- subject token

    def _subject(self, token: str, agent: Agent, now: datetime) -> _Subject:
        try:
            header, unverified = jose.unverified_claims(token)
        except jose.JoseError as exc:
            raise InvalidGrant(f"subject token is malformed: {exc}") from exc
        iss = unverified.get("iss")
        if iss == self.issuer:
            if header.get("typ") == DELEGATION_TYP:
                return self._delegation_subject(token, agent, now)
            if header.get("typ") == ACCESS_TYP:
                return self._task_subject(token, agent, now)
            raise InvalidGrant("unknown kind of Tether token")
        trusted = self.trusted.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise InvalidGrant("subject token from an untrusted issuer")
        return self._external_subject(token, trusted, agent, now)

    def _external_subject(self, token: str, t: TrustedIssuer, agent: Agent, now: datetime) -> _Subject:
        try:
            _, c = jose.verify(token, t.keys, require_kid=False)
        except jose.JoseError as exc:
            raise InvalidGrant(f"subject token rejected: {exc}") from exc
        self._check_times(c, now, required_exp=True)
        aud = c.get("aud")
        if t.audience not in (aud if isinstance(aud, list) else [aud]):
            raise InvalidGrant("subject token is not for Tether (aud)")
        person = self._person_for(t, c)
        return _Subject("external", self._active(person), self._live_delegation(person, agent, now), None,
                        detail={"subject_issuer": t.issuer})  # fmt: skip

    def _person_for(self, t: TrustedIssuer, c: Mapping[str, Any]) -> Person:
        sub = c.get("sub")
        person = self.identity.find_person(issuer=t.issuer, subject=sub) if isinstance(sub, str) else None
        if person is None and t.person_claim != "sub":
            value = c.get(t.person_claim)
            if isinstance(value, str) and value:
                if t.person_claim == "email":
                    found = self.identity.find_person_by_email(value)
                    # email alone never matches: the person must come from this issuer
                    person = found if found is not None and found.issuer == t.issuer else None
                else:
                    person = self.identity.find_person(issuer=t.issuer, subject=value)
        if person is None:
            raise InvalidGrant("the subject token's person is not registered")
        return person

    def _delegation_subject(self, token: str, agent: Agent, now: datetime) -> _Subject:
        try:
            _, c = jose.verify(token, self.keyring.verify_keys)
        except jose.JoseError as exc:
            raise InvalidGrant(f"delegation token rejected: {exc}") from exc
        self._check_times(c, now, required_exp=True)
        if c.get("aud") != self.issuer:
            raise InvalidGrant("delegation token audience is not this issuer")
        may_act = c.get("may_act")
        if not isinstance(may_act, dict) or may_act.get("sub") != agent.id:
            raise InvalidGrant("the delegation token names another agent")
        dlg_id = c.get("dlg")
        try:
            d = self.identity.get_delegation(str(dlg_id))
        except NotFound as exc:
            raise InvalidGrant("the delegation token names no delegation") from exc
        if d.agent_id != agent.id or d.person_id != c.get("sub"):
            raise InvalidGrant("the delegation token does not match its delegation")
        if not d.live(now):
            raise InvalidGrant("the delegation has ended or expired")
        person = self._active(self._get_person(d.person_id))
        scope = c.get("scope")
        return _Subject(
            "delegation", person, d, frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            revocation_subjects=(("jti", str(c.get("jti"))), ("delegation", d.id), ("person", person.id)),
            issued_at=int(c.get("iat", 0)), detail={"admin_asserted": bool(c.get("admin_asserted"))},
        )  # fmt: skip

    def _task_subject(self, token: str, agent: Agent, now: datetime) -> _Subject:
        try:
            parent = self.verifier.verify_signature(token)
        except InvalidToken as exc:
            raise InvalidGrant(f"subject token rejected: {exc.reason}") from exc
        person = self._active(self._get_person(parent.person_id))
        revs: tuple[tuple[str, str], ...] = (
            ("jti", parent.jti), ("task", parent.task_id), ("person", person.id),
            *(("agent", a) for a in parent.actors),
        )  # fmt: skip
        if parent.delegation_id:
            revs += (("delegation", parent.delegation_id),)
        if agent.id == parent.agent_id:
            kind = "renewal"
        else:
            may_act = parent.claims.get("may_act")
            if not isinstance(may_act, dict) or may_act.get("sub") != agent.id:
                raise InvalidGrant("the task token does not allow this agent to act (may_act)")
            if agent.id in parent.actors:
                raise InvalidGrant("an agent appears twice in the delegation chain")
            if len(parent.actors) + 1 > MAX_DEPTH:
                raise InvalidGrant(f"delegation chain deeper than {MAX_DEPTH}")
            kind = "multi_hop"
        d = self._live_delegation(person, agent, now)
        return _Subject(kind, person, d, parent.scopes, parent=parent, revocation_subjects=revs,
                        issued_at=parent.issued_at)  # fmt: skip

    def _check_times(self, c: Mapping[str, Any], now: datetime, *, required_exp: bool) -> None:
        t = now.timestamp()
        exp, nbf = c.get("exp"), c.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            if required_exp:
                raise InvalidGrant("subject token has no exp")
        elif exp <= t - self.leeway:
            raise InvalidGrant("subject token expired")
        if isinstance(nbf, int | float) and nbf > t + self.leeway:
            raise InvalidGrant("subject token not yet valid")

    # ----------------------------------------------------------------- rules

    def _get_person(self, person_id: str) -> Person:
        try:
            return self.identity.get_person(person_id)
        except NotFound as exc:
            raise InvalidGrant("unknown person") from exc

    @staticmethod
    def _active(person: Person) -> Person:
        if not person.active:
            raise InvalidGrant(f"person {person.id} is {person.status.value}")
        return person

    def _live_delegation(self, person: Person, agent: Agent, now: datetime) -> Delegation:
        page = self.identity.list_delegations(person_id=person.id, agent_id=agent.id, limit=200)
        live = [d for d in page.items if d.live(now)]
        if not live:
            raise InvalidGrant(f"no live delegation from {person.id} to {agent.id}")
        return max(live, key=lambda d: d.created_at)

    def _allowed(self, agent: Agent, s: _Subject) -> frozenset[str]:
        allowed = frozenset(agent.ceiling) & self.identity.entitlements(s.person) & frozenset(s.delegation.actions)
        return allowed & s.token_scope if s.token_scope is not None else allowed

    @staticmethod
    def _narrow(scope: str | None, allowed: frozenset[str]) -> frozenset[str]:
        """The narrowing rule: refuse, naming the excess; never drop silently."""
        if scope is None or not scope.strip():
            if not allowed:
                raise InvalidScope("nothing can be granted: ceiling, entitlements and delegation do not overlap")
            return allowed
        requested = frozenset(scope.split())
        excess = sorted(requested - allowed)
        if excess:
            raise InvalidScope(f"scope not allowed: {' '.join(excess)}", excess=excess)
        return requested

    def _target(self, req: ExchangeRequest, parent: VerifiedToken | None) -> str:
        targets = set(req.audiences) | set(req.resources)
        if not targets and parent is not None:
            return parent.audience
        if len(targets) != 1:
            raise InvalidTarget("name exactly one audience/resource: {base}/mcp or {base}/proxy/{upstream}")
        (target,) = targets
        if not self.verifier.is_resource(target):
            raise InvalidTarget(f"unknown resource {target[:200]!r}")
        return target

    def _may_act(self, agent_id: str | None, client: Agent, person: Person, now: datetime) -> str | None:
        if not agent_id:
            return None
        if agent_id == client.id:
            raise OAuthInvalidRequest("may_act must name another agent")
        try:
            other = self.identity.get_agent(agent_id)
        except NotFound as exc:
            raise InvalidGrant(f"no agent {agent_id}") from exc
        self._live_delegation(person, other, now)
        return agent_id

    # ----------------------------------------------------------------- denial

    def _deny(self, exc: OAuthError, ctx: _Ctx) -> None:
        ev = Event(
            type="token.denied", actor=ctx.agent_id or "anonymous", agent_id=ctx.agent_id,
            person_id=ctx.person_id, task_id=ctx.task_id, decision="deny",
            detail={"error": exc.code, "reason": exc.detail[:300], "subject": ctx.kind},
        )  # fmt: skip
        with self.store.write() as repo:
            if ctx.client is not None and not ctx.jti_consumed:
                repo.consume_jti(ctx.client.agent.id, ctx.client.jti, ctx.client.expires_at)
            repo.record([ev])

    # ------------------------------------------------------ delegation tokens

    def mint_delegation_token(self, actor: str, delegation_id: str, *, days: int | None = None) -> str:
        """A token the person (or an admin for them: `admin_asserted`) hands to one agent."""
        d = self.identity.get_delegation(delegation_id)
        now = self.clock()
        if not d.live(now):
            raise Conflict(f"delegation {delegation_id} is not live", field="delegation_id")
        limit = now + timedelta(days=min(days or MAX_DELEGATION_TOKEN_DAYS, MAX_DELEGATION_TOKEN_DAYS))
        exp = int(min(d.expires_at, limit).timestamp())
        iat = int(now.timestamp())
        admin_asserted = actor != d.person_id
        jti = new_id("tok")
        claims = {
            "iss": self.issuer, "sub": d.person_id, "aud": self.issuer, "may_act": {"sub": d.agent_id},
            "dlg": d.id, "scope": " ".join(d.actions), "jti": jti, "iat": iat, "nbf": iat, "exp": exp,
            "admin_asserted": admin_asserted,
        }  # fmt: skip
        token = self.keyring.sign(claims, DELEGATION_TYP)
        with self.store.write() as repo:
            repo.record([Event(
                type="delegation.token_issued", actor=actor, person_id=d.person_id, agent_id=d.agent_id,
                detail={"delegation_id": d.id, "jti": jti, "exp": exp, "admin_asserted": admin_asserted},
            )])  # fmt: skip
        return token

    # ------------------------------------------------- revocation, introspection

    def revoke(self, token: str, *, agent_id: str | None = None, person_id: str | None = None,
               is_admin: bool = False) -> bool:  # fmt: skip
        """RFC 7009: True when a revocation was written; False for unknown/invalid/expired tokens."""
        try:
            header, c = jose.verify(token, self.keyring.verify_keys)
        except jose.JoseError:
            return False
        if c.get("iss") != self.issuer or header.get("typ") not in (ACCESS_TYP, DELEGATION_TYP):
            return False
        exp = c.get("exp")
        if not isinstance(exp, int) or exp + self.leeway <= self.clock().timestamp():
            return False
        owner = c.get("client_id") if header.get("typ") == ACCESS_TYP else (c.get("may_act") or {}).get("sub")
        allowed = is_admin or (agent_id is not None and agent_id == owner)
        if not allowed and person_id is not None and isinstance(owner, str):
            try:
                allowed = self.identity.get_agent(owner).sponsor_id == person_id
            except NotFound:
                allowed = False
        if not allowed:
            raise UnauthorizedClient("only the token's own client, its sponsor or an admin may revoke it")
        now = self.clock()
        with self.store.write() as repo:
            repo.add_revocation("jti", str(c.get("jti")), "token.revoked", now, datetime.fromtimestamp(exp, UTC))
            repo.record([Event(
                type="token.revoked", actor=agent_id or person_id or "system", task_id=c.get("task_id"),
                agent_id=owner if isinstance(owner, str) else None, person_id=c.get("sub"),
                detail={"jti": c.get("jti"), "reason": "revoked by request"},
            )])  # fmt: skip
        return True

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the claims of an active task token, else {"active": false}."""
        try:
            vt = self.verifier.verify_any_audience(token)
        except InvalidToken:
            return {"active": False}
        c = vt.claims
        out = {k: c[k] for k in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "act",
                                 "task_id", "may_act") if k in c}  # fmt: skip
        return {"active": True, "token_type": "Bearer", **out}

    # ------------------------------------------------------------------ tasks

    def get_task(self, task_id: str) -> TaskRow:
        with self.store.read() as repo:
            t = repo.get_task(task_id)
        if t is None:
            raise NotFound(f"no task {task_id}")
        return t

    def list_tasks(
        self, *, after: str | None = None, limit: int = 50, agent_id: str | None = None,
        person_id: str | None = None, status: str | None = None,
    ) -> tuple[list[TaskRow], str | None]:  # fmt: skip
        limit = max(1, min(limit, 200))
        with self.store.read() as repo:
            rows = repo.list_tasks(after=after, limit=limit + 1, agent_id=agent_id, person_id=person_id,
                                   status=status, now=self.clock())  # fmt: skip
        return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)

    def end_task(self, actor: str, task_id: str, reason: str) -> TaskRow:
        """End the task now: every token issued under it fails at every gateway within a second."""
        now = self.clock()
        reason = (reason or "ended")[:200]
        with self.store.write() as repo:
            task = repo.get_task(task_id)
            if task is None:
                raise NotFound(f"no task {task_id}")
            if task.status != "open":
                raise Conflict(f"task {task_id} has already ended", field="status")
            repo.end_task(task_id, reason, now)
            repo.add_revocation("task", task_id, reason, now)
            common: dict[str, Any] = {"actor": actor, "task_id": task_id, "agent_id": task.agent_id,
                                      "person_id": task.person_id}  # fmt: skip
            repo.record([
                Event(type="task.ended", detail={"reason": reason}, **common),
                Event(type="token.revoked", detail={"reason": reason, "scope": "task"}, **common),
            ])  # fmt: skip
            ended = repo.get_task(task_id)
        assert ended is not None
        return ended

    # -------------------------------------------------------------- metadata

    def metadata(self) -> dict[str, Any]:
        """RFC 8414, listing only what is implemented."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "revocation_endpoint": f"{self.issuer}/oauth/revoke",
            "introspection_endpoint": f"{self.issuer}/oauth/introspect",
            "grant_types_supported": [GRANT_TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256"],
            "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            "response_types_supported": [],
            "scopes_supported": [],
            "code_challenge_methods_supported": [],
        }


__all__ = ["Client", "ExchangeRequest", "TokenService"]
