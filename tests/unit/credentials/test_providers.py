"""Providers against the simulator's token endpoint: client credentials cached, on-behalf-of per task."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tests.http_gateway_world import Served
from tether.credentials import Injection, Providers, SubjectTokenMissing, UpstreamAuthFailed, Vault
from tether.sim.m365 import M365Sim, create_app
from tether.store.credentials import SqlCredentialStore
from tether.store.db import Database
from tether.store.migrate import upgrade

SECRET = "canary-" + secrets.token_urlsafe(16)


@pytest.fixture
def sim() -> Iterator[tuple[M365Sim, str]]:
    s = M365Sim(clients={"gw": SECRET})
    with Served(create_app(s)) as server:
        yield s, f"{server.base}/contoso.example/oauth2/v2.0/token"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    upgrade(url)
    return Vault(SqlCredentialStore(Database(url)), secrets.token_bytes(32))


async def test_client_credentials_are_fetched_once_and_cached(
    sim: tuple[M365Sim, str], vault: Vault, session: aiohttp.ClientSession
) -> None:
    """Two injections, one token request; the token is app-only at the simulator."""
    s, url = sim
    vault.add("a", "app", "client_credentials", {"client_secret": SECRET}, {"token_url": url, "client_id": "gw"})
    providers = Providers(vault, lambda: session)
    p = providers.get("app")
    first = await p.inject(Injection("tsk", "per"))
    second = await p.inject(Injection("tsk2", "per2"))
    assert first.headers == second.headers
    assert p.fetches == 1  # type: ignore[attr-defined]
    token = first.headers["Authorization"][7:]
    assert s.tokens[token].user_id is None
    assert token in first.secrets
    assert SECRET in first.secrets


async def test_on_behalf_of_gives_each_task_its_person_s_token(
    sim: tuple[M365Sim, str], vault: Vault, session: aiohttp.ClientSession
) -> None:
    """The task's sealed subject token is exchanged for a per-person upstream token; ending the task drops it."""
    s, url = sim
    vault.add("a", "obo", "obo", {"client_secret": SECRET}, {"token_url": url, "client_id": "gw"})
    exp = datetime.now(UTC) + timedelta(hours=1)
    vault.keep_subject_token("tsk_a", "per_alice", s.user_token("alice@contoso.example", audience="gw"), exp)
    vault.keep_subject_token("tsk_b", "per_bob", s.user_token("bob@contoso.example", audience="gw"), exp)
    p = Providers(vault, lambda: session).get("obo")
    a = (await p.inject(Injection("tsk_a", "per_alice"))).headers["Authorization"][7:]
    b = (await p.inject(Injection("tsk_b", "per_bob"))).headers["Authorization"][7:]
    assert s.tokens[a].user_id == s.by_upn["alice@contoso.example"]
    assert s.tokens[b].user_id == s.by_upn["bob@contoso.example"]
    with pytest.raises(SubjectTokenMissing):  # a task's token is never used for another person
        await p.inject(Injection("tsk_a", "per_bob"))
    vault.end_task("tsk_a")
    with pytest.raises(SubjectTokenMissing):
        await p.inject(Injection("tsk_a", "per_alice"))


async def test_a_refusing_authorization_server_yields_an_error_without_secrets(
    sim: tuple[M365Sim, str], vault: Vault, session: aiohttp.ClientSession
) -> None:
    """A wrong client secret: UpstreamAuthFailed naming the credential and status, never the secret."""
    _, url = sim
    wrong = "canary-wrong-" + secrets.token_urlsafe(12)
    vault.add("a", "app", "client_credentials", {"client_secret": wrong}, {"token_url": url, "client_id": "gw"})
    with pytest.raises(UpstreamAuthFailed) as e:
        await Providers(vault, lambda: session).get("app").inject(Injection("t", "p"))
    text = str(e.value) + str(e.value.problem())
    assert "app" in text
    assert "401" in text
    assert wrong not in text
    assert SECRET not in text
