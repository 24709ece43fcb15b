"""Token exchange against the real store on both backends: the grant, its invariants and the attacks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tokens_world import (
    IDP_ISSUER,
    World,
    assertion,
    events_of,
    idp_token,
    make_world,
    new_key,
    request,
    write_trusted_issuers,
)
from tether.api.wiring import Services, build_services
from tether.config import Settings
from tether.tokens.errors import InvalidClient, InvalidGrant, InvalidScope, InvalidTarget, InvalidToken
from tether.tokens.jose import sign_eddsa, unverified_claims


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url,
                    trusted_issuers=write_trusted_issuers(tmp_path / "conf"))  # fmt: skip


@pytest.fixture
def world(services: Services) -> Iterator[World]:
    watcher = services.extras["revocation_watcher"]
    watcher.start()
    yield make_world(services)
    watcher.stop()


def exchange(w: World, **kw: object) -> dict[str, object]:
    assert w.services.tokens is not None
    subject = kw.pop("subject", None) or idp_token(w.person_subject)
    return w.services.tokens.exchange(request(w, str(subject), **kw))  # type: ignore[arg-type]


def test_exchange_issues_a_task_token_naming_person_and_agent(world: World) -> None:
    """An IdP token plus the agent's assertion yields sub=person, act.sub=agent, one task, audited."""
    out = exchange(world, scope="mail:read", task_purpose="summarise my inbox")
    assert out["token_type"] == "Bearer"
    assert out["scope"] == "mail:read"
    assert out["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    header, c = unverified_claims(str(out["access_token"]))
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    assert header["typ"] == "at+jwt"
    assert c["sub"] == world.person
    assert c["act"] == {"sub": world.agent_a}
    assert c["client_id"] == world.agent_a
    assert c["aud"] == world.mcp
    assert c["exp"] - c["iat"] == 300
    assert c["task_id"].startswith("tsk_")
    vt = world.services.verifier.verify(str(out["access_token"]), audience=world.mcp)  # type: ignore[union-attr]
    assert vt.scopes == {"mail:read"}
    assert vt.actors == (world.agent_a,)
    task = world.services.tokens.get_task(c["task_id"])  # type: ignore[union-attr]
    assert task.purpose == "summarise my inbox"
    assert task.status == "open"
    assert [e["task_id"] for e in events_of(world.services, "task.started")] == [c["task_id"]]
    assert events_of(world.services, "token.issued")[0]["detail"]["jti"] == c["jti"]


def test_without_scope_the_grant_is_the_whole_intersection(world: World) -> None:
    """No `scope`: ceiling ∩ entitlements ∩ delegation, nothing more."""
    out = exchange(world, scope=None)
    assert set(str(out["scope"]).split()) == {"mail:read", "mail:send"}


def test_scope_escalation_is_refused_naming_the_excess(world: World) -> None:
    """Asking for files:read (in the ceiling, not delegated) is invalid_scope, audited."""
    with pytest.raises(InvalidScope) as err:
        exchange(world, scope="mail:read files:read")
    assert err.value.extra["excess"] == ["files:read"]
    assert events_of(world.services, "token.denied")[-1]["detail"]["error"] == "invalid_scope"


def test_replayed_client_assertion_is_refused(world: World) -> None:
    """The same client assertion twice: the second is invalid_client, audited."""
    ca = assertion(world.agent_a, world.key_a, world.services.settings.issuer)
    exchange(world, client_assertion=ca)
    with pytest.raises(InvalidClient, match="replayed"):
        exchange(world, client_assertion=ca)
    assert "replayed" in events_of(world.services, "token.denied")[-1]["detail"]["reason"]


def test_replay_table_survives_a_restart(world: World, settings: Settings) -> None:
    """A new process (fresh services on the same database) still refuses a used jti."""
    ca = assertion(world.agent_a, world.key_a, world.services.settings.issuer)
    exchange(world, client_assertion=ca)
    other = build_services(settings, migrate=False)
    try:
        assert other.tokens is not None
        with pytest.raises(InvalidClient, match="replayed"):
            other.tokens.exchange(request(world, idp_token(world.person_subject), client_assertion=ca))
    finally:
        other.close()


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"aud": "https://elsewhere.example"}, "aud"),
        ({"exp": int(time.time()) + 3600}, "longer"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"jti": None}, "jti"),
    ],
)
def test_bad_client_assertions_are_refused(world: World, overrides: dict[str, object], why: str) -> None:
    """Wrong audience, too long a life, expired, no jti: each is invalid_client."""
    ca = assertion(world.agent_a, world.key_a, world.services.settings.issuer, **overrides)
    with pytest.raises(InvalidClient, match=why):
        exchange(world, client_assertion=ca)


def test_client_assertion_signed_by_another_key_is_refused(world: World) -> None:
    """An assertion for agent A signed with a key A never registered fails."""
    ca = assertion(world.agent_a, new_key(), world.services.settings.issuer)
    with pytest.raises(InvalidClient):
        exchange(world, client_assertion=ca)


def test_client_assertion_with_hs256_over_the_public_key_is_refused(world: World) -> None:
    """HS256 keyed with the agent's public JWK (the classic confusion) is refused: alg pinned per key."""
    import hashlib
    import hmac
    import json

    from tether.tokens.jose import b64e

    now = int(time.time())
    h = b64e(json.dumps({"alg": "HS256", "kid": world.key_a.kid}).encode())
    p = b64e(json.dumps({"iss": world.agent_a, "sub": world.agent_a, "aud": world.services.settings.issuer,
                         "exp": now + 60, "jti": "x1"}).encode())  # fmt: skip
    secret = json.dumps(world.key_a.public).encode()
    sig = b64e(hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidClient, match="alg"):
        exchange(world, client_assertion=f"{h}.{p}.{sig}")


def test_subject_token_from_an_untrusted_issuer_is_refused(world: World) -> None:
    """A well-formed token from an issuer Tether does not trust is invalid_grant, audited."""
    rogue = new_key()
    token = idp_token(world.person_subject, key=rogue, iss="https://rogue.example")
    with pytest.raises(InvalidGrant, match="untrusted"):
        exchange(world, subject=token)
    assert events_of(world.services, "token.denied")[-1]["detail"]["error"] == "invalid_grant"


def test_subject_token_forged_for_a_trusted_issuer_is_refused(world: World) -> None:
    """The trusted issuer's name, signed with another key: refused."""
    token = idp_token(world.person_subject, key=new_key())
    with pytest.raises(InvalidGrant):
        exchange(world, subject=token)


def test_subject_token_for_another_person_than_the_delegation_is_refused(world: World) -> None:
    """Quinn never delegated to agent A: Quinn's IdP token gets nothing."""
    with pytest.raises(InvalidGrant, match="no live delegation"):
        exchange(world, subject=idp_token(world.other_subject))


def test_expired_subject_token_is_refused(world: World) -> None:
    """An IdP token past its exp is invalid_grant."""
    with pytest.raises(InvalidGrant, match="expired"):
        exchange(world, subject=idp_token(world.person_subject, exp=int(time.time()) - 300))


def test_suspended_agent_gets_no_token(world: World) -> None:
    """A suspended agent's valid assertion is invalid_client, audited."""
    world.services.identity.suspend_agent("system", world.agent_a, "test")
    with pytest.raises(InvalidClient, match="suspended"):
        exchange(world)
    assert events_of(world.services, "token.denied")[-1]["agent_id"] == world.agent_a


def test_deprovisioned_person_gets_no_token_and_old_tokens_die(world: World) -> None:
    """After deprovisioning, exchange fails and the earlier token fails verification."""
    out = exchange(world)
    world.services.identity.deprovision_person("system", world.person)
    with pytest.raises((InvalidGrant, InvalidClient)):
        exchange(world)
    world.services.extras["revocation_watcher"].refresh()
    with pytest.raises(InvalidToken):
        world.services.verifier.verify(str(out["access_token"]), audience=world.mcp)  # type: ignore[union-attr]


def test_expired_or_revoked_delegation_gives_no_token(world: World) -> None:
    """Once the delegation is revoked, the person's token no longer buys agent A anything."""
    world.services.identity.revoke_delegation("system", world.dlg_a)
    with pytest.raises(InvalidGrant, match="delegation"):
        exchange(world)


@pytest.mark.parametrize("target", ["https://evil.example/mcp", "http://127.0.0.1:8700/proxy/../x", ""])
def test_unknown_resource_is_invalid_target(world: World, target: str) -> None:
    """A resource that is not {base}/mcp or {base}/proxy/{upstream} is invalid_target."""
    with pytest.raises(InvalidTarget):
        exchange(world, resource=target or None, audiences=("http://127.0.0.1:8700/mcp",
                 "http://127.0.0.1:8700/proxy/graph") if not target else ())  # fmt: skip


def test_delegation_token_is_exchanged_by_its_agent_only(world: World) -> None:
    """A Tether delegation token works for the agent it names, and is recorded admin_asserted."""
    tokens = world.services.tokens
    assert tokens is not None
    dtok = tokens.mint_delegation_token("per_admin", world.dlg_a)
    out = exchange(world, subject=dtok, scope="mail:send")
    assert out["scope"] == "mail:send"
    assert events_of(world.services, "delegation.token_issued")[-1]["detail"]["admin_asserted"] is True
    with pytest.raises(InvalidGrant, match="another agent"):
        exchange(world, subject=dtok, agent="b")


def test_delegation_token_dies_with_its_delegation(world: World) -> None:
    """Revoking the delegation makes its delegation token useless."""
    tokens = world.services.tokens
    assert tokens is not None
    dtok = tokens.mint_delegation_token(world.person, world.dlg_a)
    world.services.identity.revoke_delegation("system", world.dlg_a)
    with pytest.raises(InvalidGrant):
        exchange(world, subject=dtok)


def test_renewal_keeps_the_task_and_only_narrows(world: World) -> None:
    """The same agent renews its task token: same task_id, narrower scope allowed, wider refused."""
    first = exchange(world, scope="mail:read mail:send")
    tid = unverified_claims(str(first["access_token"]))[1]["task_id"]
    renewed = exchange(world, subject=first["access_token"], scope="mail:read", resource=None)
    c = unverified_claims(str(renewed["access_token"]))[1]
    assert c["task_id"] == tid
    assert c["scope"] == "mail:read"
    assert c["aud"] == world.mcp
    with pytest.raises(InvalidScope):
        exchange(world, subject=renewed["access_token"], scope="mail:read mail:send")


def test_multi_hop_nests_act_and_narrows(world: World) -> None:
    """A's token naming B (may_act) is exchanged by B: nested act, same task, parent ∩ B's grants."""
    first = exchange(world, scope="mail:read mail:send", may_act=world.agent_b)
    parent = unverified_claims(str(first["access_token"]))[1]
    assert parent["may_act"] == {"sub": world.agent_b}
    hop = exchange(world, subject=first["access_token"], agent="b", scope="mail:read")
    c = unverified_claims(str(hop["access_token"]))[1]
    assert c["act"] == {"sub": world.agent_b, "act": {"sub": world.agent_a}}
    assert c["task_id"] == parent["task_id"]
    assert c["exp"] <= parent["exp"]
    vt = world.services.verifier.verify(str(hop["access_token"]), audience=world.mcp)  # type: ignore[union-attr]
    assert vt.agent_id == world.agent_b
    assert vt.actors == (world.agent_b, world.agent_a)


def test_multi_hop_widening_is_refused(world: World) -> None:
    """B asks for files:read, which B holds but the parent token does not: invalid_scope."""
    first = exchange(world, scope="mail:read", may_act=world.agent_b)
    with pytest.raises(InvalidScope, match="files:read"):
        exchange(world, subject=first["access_token"], agent="b", scope="mail:read files:read")


def test_multi_hop_without_may_act_is_refused(world: World) -> None:
    """B cannot pick up A's token unless it names B."""
    first = exchange(world, scope="mail:read")
    with pytest.raises(InvalidGrant, match="may_act"):
        exchange(world, subject=first["access_token"], agent="b", scope="mail:read")


def test_token_after_task_end_is_refused_everywhere(world: World) -> None:
    """Ending the task: verification fails, renewal fails, both audited."""
    out = exchange(world)
    c = unverified_claims(str(out["access_token"]))[1]
    tokens, verifier = world.services.tokens, world.services.verifier
    assert tokens is not None
    assert verifier is not None
    verifier.verify(str(out["access_token"]), audience=world.mcp)
    tokens.end_task(world.sponsor, c["task_id"], "done")
    world.services.extras["revocation_watcher"].refresh()
    with pytest.raises(InvalidToken, match="task ended"):
        verifier.verify(str(out["access_token"]), audience=world.mcp)
    with pytest.raises(InvalidGrant):
        exchange(world, subject=out["access_token"], resource=None)
    assert {e["type"] for e in events_of(world.services, "task.ended")} == {"task.ended"}
    assert events_of(world.services, "token.revoked")[-1]["task_id"] == c["task_id"]


def test_revoked_token_cannot_be_renewed(world: World) -> None:
    """RFC 7009 revocation by the token's own client kills the token and its renewal."""
    tokens = world.services.tokens
    assert tokens is not None
    out = exchange(world)
    assert tokens.revoke(str(out["access_token"]), agent_id=world.agent_a)
    with pytest.raises(InvalidGrant, match="revoked"):
        exchange(world, subject=out["access_token"], resource=None)


def test_another_agent_cannot_revoke_a_token(world: World) -> None:
    """Agent B may not revoke agent A's token."""
    from tether.tokens.errors import UnauthorizedClient

    tokens = world.services.tokens
    assert tokens is not None
    out = exchange(world)
    with pytest.raises(UnauthorizedClient):
        tokens.revoke(str(out["access_token"]), agent_id=world.agent_b)


def test_person_matched_by_issuer_not_by_email_alone(world: World) -> None:
    """An IdP token whose oid is unknown does not match a person by a look-alike email."""
    token = idp_token("unknown-oid", email="pat@example.com", sub="nobody")
    with pytest.raises(InvalidGrant, match="not registered"):
        exchange(world, subject=token)


_ = (IDP_ISSUER, sign_eddsa)


async def test_token_of_one_task_cannot_use_another_tasks_approval(world: World) -> None:
    """An approval granted under task 1 is refused when consumed for task 2's token."""
    from tests import approvals_world as aw
    from tether.approvals.errors import ApprovalInvalid

    verifier, approvals = world.services.verifier, world.services.approvals
    assert verifier is not None
    assert approvals is not None
    t1, t2 = (verifier.verify(str(exchange(world, scope="mail:send")["access_token"]), audience=world.mcp)
              for _ in range(2))  # fmt: skip
    assert t1.task_id != t2.task_id
    resource = aw.Resource(type="MailMessage", id="draft-1", system="m365.mail", sensitivity="confidential")
    req = aw.DecisionRequest(
        agent_id=t1.agent_id, person_id=t1.person_id, actors=(), task_id=t1.task_id, scopes=t1.scopes,
        action="mail:send", resource=resource, facts={"recipients": ["x@external.example"], "external_recipients": 1},
    )  # fmt: skip
    a = await approvals.request(decision=aw.decision("sponsor"), req=req, token=t1, request_digest="d" * 64,
                                summary={"to": ["x@external.example"]}, prompt=None, gateway="mcp")  # fmt: skip
    await approvals.decide(world.sponsor, a.id, approve=True, reason="ok")
    with pytest.raises(ApprovalInvalid):
        await approvals.consume(a.id, task_id=t2.task_id, request_digest=a.request_digest)


def test_multi_hop_chain_deeper_than_three_is_refused(world: World) -> None:
    """A → B → C works (act nested three deep); a fourth agent D is refused."""
    ident = world.services.identity
    extra = {}
    for name in ("c", "d"):
        key = new_key()
        agent = ident.create_agent("system", name=name, sponsor_id=world.sponsor, owner_team="t", purpose="p",
                                   ceiling=["mail:read"], jwks={"keys": [key.public]})  # fmt: skip
        ident.delegate("system", person_id=world.person, agent_id=agent.id, actions=["mail:read"])
        extra[name] = (agent.id, key)
    tokens = world.services.tokens
    assert tokens is not None

    def hop(subject: str, agent: tuple[str, object], may_act: str | None) -> str:
        ca = assertion(agent[0], agent[1], world.services.settings.issuer)  # type: ignore[arg-type]
        req = request(world, subject, client_assertion=ca, resource=None, may_act=may_act)
        return str(tokens.exchange(req)["access_token"])

    a = str(exchange(world, scope="mail:read", may_act=world.agent_b)["access_token"])
    b = hop(a, (world.agent_b, world.key_b), extra["c"][0])
    c = hop(b, extra["c"], extra["d"][0])
    assert unverified_claims(c)[1]["act"] == {"sub": extra["c"][0], "act": {"sub": world.agent_b,
                                                                           "act": {"sub": world.agent_a}}}  # fmt: skip
    with pytest.raises(InvalidGrant, match="deeper"):
        hop(c, extra["d"], None)
    assert events_of(world.services, "token.denied")[-1]["detail"]["error"] == "invalid_grant"
