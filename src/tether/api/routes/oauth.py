"""/oauth token exchange, revocation, introspection; /.well-known metadata and JWKS.

Errors on /oauth are RFC 6749 §5.2 JSON (`error`, `error_description`), never problem+json,
and every token response carries `Cache-Control: no-store`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import JSONResponse

from tether.api.wiring import Services
from tether.errors import Unauthenticated, Unavailable
from tether.identity.model import Role
from tether.tokens import ExchangeRequest, TokenService
from tether.tokens.errors import InvalidClient, OAuthError, OAuthInvalidRequest

router = APIRouter(tags=["oauth"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_LIMIT = 64 * 1024


def _tokens(request: Request) -> tuple[Services, TokenService]:
    svc: Services = request.app.state.services
    if svc.tokens is None:
        raise Unavailable("the token service is not available")
    return svc, svc.tokens


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="tether", error="invalid_client"'
    return JSONResponse(exc.oauth_body(), status_code=exc.status, headers=headers)


async def _form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise OAuthInvalidRequest("send application/x-www-form-urlencoded")
    if int(request.headers.get("content-length") or 0) > FORM_LIMIT:
        raise OAuthInvalidRequest("request too large")
    return await request.form()


def _one(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise OAuthInvalidRequest(f"{name} given more than once")
    v = values[0] if values else None
    return v if isinstance(v, str) else None


def _details(raw: str | None) -> list[dict[str, Any]] | None:
    """RFC 9396 authorization_details: a JSON array of objects, each with a `type`."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise OAuthInvalidRequest("authorization_details is not JSON") from exc
    if not isinstance(value, list) or not all(isinstance(d, dict) and isinstance(d.get("type"), str) for d in value):
        raise OAuthInvalidRequest("authorization_details must be an array of objects with a type")
    if len(raw) > 8192:
        raise OAuthInvalidRequest("authorization_details too large")
    return value


@router.post("/oauth/token")
async def token(request: Request) -> JSONResponse:
    """OAuth 2.0 Token Exchange (RFC 8693) authenticated by private_key_jwt (RFC 7523)."""
    svc, tokens = _tokens(request)
    try:
        form = await _form(request)
        req = ExchangeRequest(
            grant_type=_one(form, "grant_type"), client_assertion_type=_one(form, "client_assertion_type"),
            client_assertion=_one(form, "client_assertion"), client_id=_one(form, "client_id"),
            subject_token=_one(form, "subject_token"), subject_token_type=_one(form, "subject_token_type"),
            scope=_one(form, "scope"), audiences=tuple(str(v) for v in form.getlist("audience")),
            resources=tuple(str(v) for v in form.getlist("resource")), task_purpose=_one(form, "task_purpose"),
            may_act=_one(form, "may_act"), actor_token=_one(form, "actor_token"),
            authorization_details=_details(_one(form, "authorization_details")),
        )  # fmt: skip
        body = await run_in_threadpool(tokens.exchange, req)
    except OAuthError as exc:
        return _oauth_error(exc)
    await run_in_threadpool(_keep_subject_token, svc, req.subject_token, body)
    return JSONResponse(body, headers=NO_STORE)


def _keep_subject_token(svc: Services, subject_token: str | None, body: dict[str, Any]) -> None:
    """Seal the person's IdP token for the new task, so on-behalf-of credentials can use it upstream.

    Only tokens of an external issuer are kept (a Tether token is no upstream's assertion); the
    vault destroys it, with every upstream token cached from it, when the task ends.
    """
    from datetime import UTC, datetime

    from tether.tokens.jose import unverified_claims

    vault = svc.extras.get("vault")
    if vault is None or not subject_token:
        return
    try:
        _, subject = unverified_claims(subject_token)  # verified by the exchange that just succeeded
        _, issued = unverified_claims(str(body["access_token"]))  # minted by us a moment ago
    except (ValueError, KeyError):
        return
    if subject.get("iss") in (None, svc.settings.issuer) or not isinstance(subject.get("exp"), int):
        return
    vault.keep_subject_token(
        str(issued["task_id"]), str(issued["sub"]), subject_token, datetime.fromtimestamp(subject["exp"], UTC)
    )


def _admin(svc: Services, request: Request) -> tuple[str, Role] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    try:
        p = svc.admin_tokens.authenticate(value.strip())
    except Unauthenticated as exc:
        raise InvalidClient("the bearer token is not valid") from exc
    return p.person_id, p.role


@router.post("/oauth/revoke")
async def revoke(request: Request) -> JSONResponse:
    """RFC 7009, from the token's own client (client assertion), its sponsor or an admin (bearer)."""
    svc, tokens = _tokens(request)
    try:
        form = await _form(request)
        value = _one(form, "token")
        if not value:
            raise OAuthInvalidRequest("token is required")
        agent_id = person_id = None
        is_admin = False
        if _one(form, "client_assertion") is not None:
            client = await run_in_threadpool(
                tokens.authenticate_client, _one(form, "client_assertion_type"), _one(form, "client_assertion"),
                _one(form, "client_id"), f"{tokens.issuer}/oauth/revoke",
            )  # fmt: skip
            await run_in_threadpool(tokens.consume_client, client)
            agent_id = client.agent.id
        else:
            who = await run_in_threadpool(_admin, svc, request)
            if who is None:
                raise InvalidClient("authenticate with a client assertion or an admin bearer token")
            person_id, is_admin = who[0], who[1] is Role.ADMIN
        await run_in_threadpool(lambda: tokens.revoke(value, agent_id=agent_id, person_id=person_id, is_admin=is_admin))
    except OAuthError as exc:
        return _oauth_error(exc)
    return JSONResponse({}, headers=NO_STORE)


@router.post("/oauth/introspect")
async def introspect(request: Request) -> JSONResponse:
    """RFC 7662, for admins and auditors (enforcement points in-process use the verifier)."""
    svc, tokens = _tokens(request)
    try:
        who = await run_in_threadpool(_admin, svc, request)
        if who is None:
            raise InvalidClient("introspection needs an admin or auditor bearer token")
        if who[1] not in (Role.ADMIN, Role.AUDITOR):
            return JSONResponse({"error": "insufficient_scope"}, status_code=403, headers=NO_STORE)
        form = await _form(request)
        value = _one(form, "token")
        if not value:
            raise OAuthInvalidRequest("token is required")
        body = await run_in_threadpool(tokens.introspect, value)
    except OAuthError as exc:
        return _oauth_error(exc)
    return JSONResponse(body, headers=NO_STORE)


@router.get("/.well-known/jwks.json")
def jwks(request: Request) -> JSONResponse:
    """The keys task tokens are signed with (a retired key stays until its last token expired)."""
    _, tokens = _tokens(request)
    return JSONResponse(tokens.keyring.jwks(), headers={"Cache-Control": "max-age=60"})


@router.get("/.well-known/oauth-authorization-server")
def metadata(request: Request) -> dict[str, Any]:
    """RFC 8414 authorization server metadata (only what is implemented)."""
    _, tokens = _tokens(request)
    return tokens.metadata()


__all__ = ["router"]
