"""Credential providers: how an opened credential becomes headers on an upstream request.

    bearer              Authorization: Bearer <token>
    api_key             <header>: [prefix ]<key>
    client_credentials  Authorization: Bearer <token from the upstream's token endpoint>,
                        cached until shortly before it expires (one refresh at a time)
    obo                 Authorization: Bearer <per-person token>: the task's subject token
                        exchanged at the upstream's authorization server (Entra on-behalf-of,
                        `jwt-bearer`; or RFC 8693 `token-exchange`), cached per task

Each call returns an `Injected` carrying the headers and the exact secret strings placed in
them, so the gateway can scan responses for those strings. Errors name the credential and
the upstream's error code, never a secret or the authorization server's body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from tether.credentials.model import (
    CredentialInfo,
    CredentialKind,
    Injection,
    Secret,
    SubjectTokenMissing,
    UpstreamAuthFailed,
)
from tether.credentials.vault import Vault

GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 — a grant type URI
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
#: refresh a cached token this long before it expires (or a tenth of its life, if shorter)
REFRESH_MARGIN = 60.0


@dataclass(frozen=True, slots=True)
class Injected:
    headers: dict[str, str]
    secrets: tuple[str, ...]  # the values to scan responses for (never logged)


class Provider(Protocol):
    info: CredentialInfo

    async def inject(self, inj: Injection) -> Injected: ...
    def forget(self, key: str) -> None: ...


class StaticBearer:
    def __init__(self, info: CredentialInfo, token: Secret) -> None:
        self.info = info
        self._token = token

    async def inject(self, inj: Injection) -> Injected:
        t = self._token.reveal()
        return Injected({"Authorization": f"Bearer {t}"}, (t,))

    def forget(self, key: str) -> None:
        return None


class ApiKeyHeader:
    def __init__(self, info: CredentialInfo, key: Secret) -> None:
        self.info = info
        self._key = key
        self.header = str(info.config.get("header", "X-API-Key"))
        self.prefix = str(info.config.get("prefix", ""))

    async def inject(self, inj: Injection) -> Injected:
        k = self._key.reveal()
        return Injected({self.header: f"{self.prefix} {k}" if self.prefix else k}, (k,))

    def forget(self, key: str) -> None:
        return None


class _TokenCache:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.tokens: dict[str, tuple[Secret, float]] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    def fresh(self, key: str) -> Secret | None:
        hit = self.tokens.get(key)
        if hit is None or hit[1] <= self.clock():
            return None
        return hit[0]

    def put(self, key: str, token: str, expires_in: float) -> Secret:
        margin = min(REFRESH_MARGIN, expires_in / 10)
        s = Secret(token)
        self.tokens[key] = (s, self.clock() + expires_in - margin)
        return s


async def _token_request(
    session: aiohttp.ClientSession, info: CredentialInfo, form: dict[str, str], timeout: float
) -> tuple[str, float]:
    url = str(info.config["token_url"])
    try:
        async with session.post(
            url, data=form, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            try:
                doc: Any = await resp.json(content_type=None)
            except ValueError:
                doc = {}
            if resp.status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
                code = doc.get("error") if isinstance(doc, dict) and isinstance(doc.get("error"), str) else None
                raise UpstreamAuthFailed(
                    f"the authorization server refused credential {info.name} (HTTP {resp.status}"
                    + (f", {code[:40]}" if code else "") + ")",
                    credential=info.name,
                )  # fmt: skip
            return doc["access_token"], float(doc.get("expires_in", 300) or 300)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamAuthFailed(
            f"the authorization server for credential {info.name} is unreachable ({type(exc).__name__})",
            credential=info.name,
        ) from None


class ClientCredentials:
    def __init__(
        self, info: CredentialInfo, client_secret: Secret, session: Callable[[], aiohttp.ClientSession], *,
        clock: Callable[[], float] = time.monotonic, timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self.info = info
        self._secret = client_secret
        self._session = session
        self._cache = _TokenCache(clock)
        self.timeout = timeout
        self.fetches = 0

    async def inject(self, inj: Injection) -> Injected:
        token = self._cache.fresh("app")
        if token is None:
            lock = self._cache.locks.setdefault("app", asyncio.Lock())
            async with lock:
                token = self._cache.fresh("app")
                if token is None:
                    form = {
                        "grant_type": "client_credentials", "client_id": str(self.info.config["client_id"]),
                        "client_secret": self._secret.reveal(),
                        "scope": str(self.info.config.get("scope", "https://graph.microsoft.com/.default")),
                    }  # fmt: skip
                    raw, ttl = await _token_request(self._session(), self.info, form, self.timeout)
                    self.fetches += 1
                    token = self._cache.put("app", raw, ttl)
        t = token.reveal()
        return Injected({"Authorization": f"Bearer {t}"}, (t, self._secret.reveal()))

    def forget(self, key: str) -> None:
        if key == self.info.name:
            self._cache.tokens.clear()


class OnBehalfOf:
    """A per-person upstream token for each task, exchanged from the task's sealed subject token."""

    def __init__(
        self, info: CredentialInfo, client_secret: Secret, vault: Vault, session: Callable[[], aiohttp.ClientSession],
        *, clock: Callable[[], float] = time.monotonic, timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self.info = info
        self._secret = client_secret
        self._vault = vault
        self._session = session
        self._cache = _TokenCache(clock)
        self.timeout = timeout
        self.fetches = 0

    async def inject(self, inj: Injection) -> Injected:
        key = f"{inj.task_id}\x00{inj.person_id}"  # the person is part of the key: never another's token
        token = self._cache.fresh(key)
        if token is None:
            lock = self._cache.locks.setdefault(key, asyncio.Lock())
            async with lock:
                token = self._cache.fresh(key)
                if token is None:
                    token = await self._exchange(inj, key)
        t = token.reveal()
        return Injected({"Authorization": f"Bearer {t}"}, (t, self._secret.reveal()))

    async def _exchange(self, inj: Injection, key: str) -> Secret:
        subject = self._vault.subject_token(inj.task_id)
        if subject is None or subject[0] != inj.person_id:
            raise SubjectTokenMissing(
                f"task {inj.task_id} holds no subject token of its person for credential {self.info.name}"
            )
        cfg = self.info.config
        common = {"client_id": str(cfg["client_id"]), "client_secret": self._secret.reveal(),
                  "scope": str(cfg.get("scope", "https://graph.microsoft.com/.default"))}  # fmt: skip
        if cfg.get("grant", "jwt-bearer") == "token-exchange":
            form = {**common, "grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": subject[1].reveal(),
                    "subject_token_type": ACCESS_TOKEN_TYPE}  # fmt: skip
        else:
            form = {**common, "grant_type": GRANT_JWT_BEARER, "assertion": subject[1].reveal(),
                    "requested_token_use": "on_behalf_of"}  # fmt: skip
        raw, ttl = await _token_request(self._session(), self.info, form, self.timeout)
        self.fetches += 1
        return self._cache.put(key, raw, ttl)

    def forget(self, key: str) -> None:
        if key == self.info.name:
            self._cache.tokens.clear()
        elif key.startswith("task:"):
            prefix = key[5:] + "\x00"
            for k in [k for k in self._cache.tokens if k.startswith(prefix)]:
                del self._cache.tokens[k]
            for k in [k for k in self._cache.locks if k.startswith(prefix)]:
                del self._cache.locks[k]


class Providers:
    """Providers by credential name, built once from the vault and dropped when a credential changes."""

    def __init__(self, vault: Vault, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.vault = vault
        self._session = session
        self._built: dict[str, Provider] = {}
        vault.on_change(self._changed)

    def get(self, name: str) -> Provider:
        p = self._built.get(name)
        if p is None:
            p = self._build(name)
            self._built[name] = p
        return p

    def _build(self, name: str) -> Provider:
        info, fields = self.vault.open(name)
        if info.kind is CredentialKind.BEARER:
            return StaticBearer(info, fields["token"])
        if info.kind is CredentialKind.API_KEY:
            return ApiKeyHeader(info, fields["key"])
        if info.kind is CredentialKind.CLIENT_CREDENTIALS:
            return ClientCredentials(info, fields["client_secret"], self._session)
        return OnBehalfOf(info, fields["client_secret"], self.vault, self._session)

    def _changed(self, key: str) -> None:
        if key.startswith("task:"):
            for p in self._built.values():
                p.forget(key)
        else:
            self._built.pop(key, None)


__all__ = ["ApiKeyHeader", "ClientCredentials", "Injected", "OnBehalfOf", "Provider", "Providers", "StaticBearer"]
