"""The Microsoft 365 simulator: deterministic tenant, OAuth grants, Graph shapes, paging and batching."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tether.sim.m365 import GRANT_OBO, M365Sim, create_app, sensitivity_of_label


def client(sim: M365Sim | None = None) -> tuple[TestClient, M365Sim]:
    app = create_app(sim or M365Sim(clients={"gw": "secret-gw"}))
    return TestClient(app), app.state.sim


def token(c: TestClient, **form: str) -> Any:
    return c.post("/contoso.example/oauth2/v2.0/token", data={"client_id": "gw", "client_secret": "secret-gw", **form})


def test_the_seeded_organisation_is_deterministic() -> None:
    """Two simulators with the same seed hold the same people, mail and documents."""
    a, b = M365Sim(seed=3), M365Sim(seed=3)
    assert a.users == b.users
    assert [m["subject"] for m in a.messages[a.by_upn["alice@contoso.example"]].values()] == [
        m["subject"] for m in b.messages[b.by_upn["alice@contoso.example"]].values()
    ]
    assert {"alice@contoso.example", "bob@contoso.example", "sec@contoso.example"} <= set(a.by_upn)


def test_client_credentials_and_on_behalf_of_grants() -> None:
    """App-only tokens come from client credentials; OBO turns a user token for this client into a Graph token."""
    c, sim = client()
    assert token(c, grant_type="client_credentials").status_code == 200
    assert token(c, grant_type="client_credentials", client_secret="wrong").status_code == 401
    user = sim.user_token("bob@contoso.example", audience="gw")
    r = token(c, grant_type=GRANT_OBO, assertion=user, requested_token_use="on_behalf_of")
    assert r.status_code == 200
    assert sim.tokens[r.json()["access_token"]].user_id == sim.by_upn["bob@contoso.example"]
    other = sim.user_token("bob@contoso.example", audience="someone-else")
    assert token(c, grant_type=GRANT_OBO, assertion=other, requested_token_use="on_behalf_of").status_code == 400
    assert token(c, grant_type=GRANT_OBO, assertion="forged", requested_token_use="on_behalf_of").status_code == 400


def delegated(c: TestClient, sim: M365Sim, upn: str = "alice@contoso.example") -> dict[str, str]:
    r = token(c, grant_type=GRANT_OBO, assertion=sim.user_token(upn, audience="gw"), requested_token_use="on_behalf_of")
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def test_paging_follows_next_links_to_the_end() -> None:
    """25 messages come back as pages of 10, 10 and 5 through @odata.nextLink."""
    c, sim = client()
    h = delegated(c, sim)
    url, seen = "/v1.0/me/messages", 0
    while url:
        doc = c.get(url, headers=h).json()
        seen += len(doc["value"])
        url = doc.get("@odata.nextLink", "").replace("http://testserver", "")
    assert seen == 25


def test_a_delegated_token_reaches_only_its_own_mailbox() -> None:
    """Alice's delegated token reads her mail, not Bob's; an app-only token reads both."""
    c, sim = client()
    h = delegated(c, sim)
    assert c.get("/v1.0/users/bob@contoso.example/messages", headers=h).status_code == 403
    app = {"Authorization": "Bearer " + token(c, grant_type="client_credentials").json()["access_token"]}
    assert c.get("/v1.0/users/bob@contoso.example/messages", headers=app).status_code == 200
    assert c.get("/v1.0/me/messages").status_code == 401


def test_send_mail_delivers_inside_the_tenant_and_records_the_outbox() -> None:
    """sendMail lands in an internal recipient's inbox and in the outbox log."""
    c, sim = client()
    bob = sim.by_upn["bob@contoso.example"]
    before = len(sim.messages[bob])
    to = [{"emailAddress": {"address": "bob@contoso.example"}}, {"emailAddress": {"address": "pat@fabrikam.example"}}]
    msg = {"message": {"subject": "hi", "toRecipients": to}}
    assert c.post("/v1.0/me/sendMail", headers=delegated(c, sim), json=msg).status_code == 202
    assert len(sim.messages[bob]) == before + 1
    assert sim.outbox[-1]["to"] == ["bob@contoso.example", "pat@fabrikam.example"]


def test_documents_carry_purview_like_labels() -> None:
    """Drive items expose sensitivityLabel; the label names map to Tether's sensitivities."""
    c, sim = client()
    items = c.get("/v1.0/me/drive/root/children", headers=delegated(c, sim)).json()["value"]
    labels = {i["name"]: i["sensitivityLabel"]["displayName"] for i in items}
    assert labels["Board minutes.docx"] == "Highly Confidential"
    assert sensitivity_of_label("Highly Confidential") == "highly_confidential"
    assert sensitivity_of_label("General") == "internal"


@pytest.mark.parametrize("path", ["/v1.0/me/events", "/v1.0/me/mailFolders", "/v1.0/sites", "/v1.0/users"])
def test_collections_answer_in_graph_shape(path: str) -> None:
    """Collections carry @odata.context and value."""
    c, sim = client()
    doc = c.get(path, headers=delegated(c, sim)).json()
    assert "@odata.context" in doc
    assert doc["value"]


def test_batch_answers_each_request_on_its_own() -> None:
    """$batch runs every inner request with the caller's token and answers each by id."""
    c, sim = client()
    body = {"requests": [{"id": "a", "method": "GET", "url": "/me/events"},
                         {"id": "b", "method": "GET", "url": "/users/bob@contoso.example/messages"}]}  # fmt: skip
    out = {
        r["id"]: r["status"] for r in c.post("/v1.0/$batch", headers=delegated(c, sim), json=body).json()["responses"]
    }
    assert out == {"a": 200, "b": 403}


def test_upload_create_link_invite_and_event_accept() -> None:
    """Upload by path, share by link and by invitation, accept a meeting: each leaves its trace."""
    c, sim = client()
    h = delegated(c, sim)
    r = c.put("/v1.0/me/drive/root:/notes.txt:/content", headers=h, content=b"hello")
    assert r.status_code == 201
    iid = r.json()["id"]
    assert c.get(f"/v1.0/me/drive/items/{iid}/content", headers=h).content == b"hello"
    assert (
        c.post(
            f"/v1.0/me/drive/items/{iid}/createLink", headers=h, json={"type": "view", "scope": "anonymous"}
        ).status_code
        == 201
    )
    assert (
        c.post(
            f"/v1.0/me/drive/items/{iid}/invite", headers=h, json={"recipients": [{"email": "pat@fabrikam.example"}]}
        ).status_code
        == 200
    )
    assert [s["kind"] for s in sim.shares] == ["link", "invite"]
    ev = c.get("/v1.0/me/events", headers=h).json()["value"][1]
    assert c.post(f"/v1.0/me/events/{ev['id']}/accept", headers=h, json={}).status_code == 202
