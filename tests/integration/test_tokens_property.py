"""Property: no issued token ever holds a scope outside requested ∩ ceiling ∩ entitlements ∩ delegation."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.tokens_world import ACTS, IDP_ISSUER, assertion, idp_token, new_key, write_trusted_issuers
from tether.api.wiring import Services
from tether.config import Settings
from tether.tokens import ExchangeRequest
from tether.tokens.errors import InvalidScope
from tether.tokens.jose import unverified_claims
from tether.tokens.model import ASSERTION_TYPE, GRANT_TOKEN_EXCHANGE, JWT_TOKEN_TYPE

UNIVERSE = ["mail:read", "mail:send", "files:read", "files:share", "calendar:read", "calendar:write"]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url,
                    trusted_issuers=write_trusted_issuers(tmp_path / "conf"))  # fmt: skip


def build(services: Services) -> list[tuple[str, str, object, frozenset[str]]]:
    """(person subject, agent id, key, expected allowed set) for persons × agents with overlapping grants.

    Grants are narrowed AFTER delegating, so the delegation exceeds entitlements/ceiling and the
    intersection is not simply the delegation.
    """
    ident = services.identity
    combos = []
    sponsor = ident.create_person("system", email="sp@example.com", name="Sp", entitlements=UNIVERSE, subject="sp")
    persons = []
    for i, ents in enumerate((UNIVERSE, UNIVERSE)):
        p = ident.create_person("system", email=f"p{i}@example.com", name=f"P{i}", entitlements=ents,
                                issuer=IDP_ISSUER, subject=f"oid-{i}")  # fmt: skip
        persons.append(p)
    agents = []
    for i in range(2):
        key = new_key()
        a = ident.create_agent("system", name=f"A{i}", sponsor_id=sponsor.id, owner_team="t", purpose="p",
                               ceiling=UNIVERSE, jwks={"keys": [key.public]})  # fmt: skip
        agents.append((a, key))
    delegated = {(0, 0): UNIVERSE[:4], (0, 1): UNIVERSE[2:], (1, 0): UNIVERSE[1:5], (1, 1): UNIVERSE}
    for (pi, ai), acts in delegated.items():
        ident.delegate("system", person_id=persons[pi].id, agent_id=agents[ai][0].id, actions=acts)
    ents_after = [set(UNIVERSE) - {"files:share"}, {"mail:read", "mail:send", "calendar:read", "files:read"}]
    ceil_after = [set(UNIVERSE) - {"calendar:write"}, {"mail:read", "files:read", "calendar:read", "calendar:write"}]
    for p, ents in zip(persons, ents_after, strict=True):
        ident.update_person("system", p.id, entitlements=sorted(ents))
    for (a, _), ceiling in zip(agents, ceil_after, strict=True):
        ident.set_ceiling("system", a.id, sorted(ceiling))
    for (pi, _p), (ai, (a, key)) in itertools.product(enumerate(persons), enumerate(agents)):
        allowed = frozenset(delegated[(pi, ai)]) & ents_after[pi] & ceil_after[ai]
        combos.append((f"oid-{pi}", a.id, key, allowed))
    return combos


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_token_exceeds_the_intersection(services: Services, data: st.DataObject) -> None:
    """Whatever is requested, a granted scope is a subset of requested ∩ ceiling ∩ entitlements ∩ delegation."""
    combos = services.extras.setdefault("_combos", None) or build(services)
    services.extras["_combos"] = combos
    subject, agent_id, key, allowed = data.draw(st.sampled_from(combos))
    requested = data.draw(st.none() | st.sets(st.sampled_from([*UNIVERSE, "admin:all"]), min_size=1))
    tokens = services.tokens
    assert tokens is not None
    req = ExchangeRequest(
        grant_type=GRANT_TOKEN_EXCHANGE, client_assertion_type=ASSERTION_TYPE,
        client_assertion=assertion(agent_id, key, services.settings.issuer),  # type: ignore[arg-type]
        subject_token=idp_token(subject), subject_token_type=JWT_TOKEN_TYPE,
        scope=" ".join(sorted(requested)) if requested is not None else None,
        resources=(f"{services.settings.base_url}/mcp",),
    )  # fmt: skip
    wanted = set(requested) if requested is not None else set(allowed)
    if not wanted or not wanted <= allowed:
        with pytest.raises(InvalidScope) as err:
            tokens.exchange(req)
        assert set(err.value.extra.get("excess", [])) == wanted - allowed
        return
    out = tokens.exchange(req)
    granted = set(unverified_claims(str(out["access_token"]))[1]["scope"].split())
    assert granted <= allowed
    assert granted == (set(requested) if requested is not None else allowed)


_ = ACTS
