"""/v1/audit (query, verify, checkpoints, content), start-up recovery, export and the audit CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from tether.api.app import create_app
from tether.api.wiring import Services, build_services
from tether.audit.model import Event
from tether.audit.query import erase_content, export_jsonl, export_ocsf, query, read_content, recover
from tether.cli.main import app as cli
from tether.config import Settings
from tether.identity.model import Role
from tether.store.schema.audit import audit_events

runner = CliRunner()


def _bearer(services: Services, role: Role) -> dict[str, str]:
    p = services.identity.create_person(
        "system", email=f"{role.value}@example.com", name=role.value, roles=[role.value]
    )
    return {"Authorization": f"Bearer {services.admin_tokens.issue(p.id, role)}"}


def _story(services: Services, task: str = "tsk_a") -> list[str]:
    """task.started → tool.requested → policy.decided → tool.completed, linked by parent_id."""
    assert services.audit is not None
    ids = ["evt_s" + task[4:], "evt_r" + task[4:], "evt_d" + task[4:], "evt_c" + task[4:]]
    common = {"task_id": task, "agent_id": "agt_1", "person_id": "prs_1", "actor": "agt_1"}
    services.audit.record_sync(
        [
            Event(id=ids[0], type="task.started", **common),  # type: ignore[arg-type]
            Event(id=ids[1], type="tool.requested", parent_id=ids[0], action="mail:send", **common),  # type: ignore[arg-type]
            Event(id=ids[2], type="policy.decided", parent_id=ids[1], decision="allow", **common),  # type: ignore[arg-type]
            Event(id=ids[3], type="tool.completed", parent_id=ids[2], outcome={"status": 200}, **common),  # type: ignore[arg-type]
        ]
    )
    return ids


def test_auditor_queries_verifies_and_lists_checkpoints(services: Services) -> None:
    """An auditor filters by task with pagination, verifies the chain, and reads signed checkpoints."""
    _story(services, "tsk_a")
    _story(services, "tsk_b")
    services.extras["checkpointer"].checkpoint()
    h = _bearer(services, Role.AUDITOR)
    with TestClient(create_app(services)) as c:
        r = c.get("/v1/audit", params={"task_id": "tsk_a", "limit": 3}, headers=h)
        assert r.status_code == 200, r.text
        page = r.json()
        assert [e["type"] for e in page["items"]] == ["task.started", "tool.requested", "policy.decided"]
        r2 = c.get("/v1/audit", params={"task_id": "tsk_a", "after": page["next_cursor"]}, headers=h).json()
        assert [e["type"] for e in r2["items"]] == ["tool.completed"]
        assert r2["next_cursor"] is None
        types = c.get("/v1/audit", params={"type": "policy.decided"}, headers=h).json()["items"]
        assert {e["task_id"] for e in types} == {"tsk_a", "tsk_b"}
        v = c.get("/v1/audit/verify", headers=h).json()
        assert v["ok"] is True
        assert v["checkpoints"] == 1
        cps = c.get("/v1/audit/checkpoints", headers=h).json()
        assert cps["public_key"]["crv"] == "Ed25519"
        assert 8 <= cps["items"][0]["seq"] <= v["head_seq"]


def test_verify_endpoint_reports_tamper(services: Services) -> None:
    """After an edit in the database, /v1/audit/verify answers ok=false with the first bad seq."""
    _story(services)
    with services.db.write() as conn:
        conn.execute(update(audit_events).where(audit_events.c.type == "policy.decided").values(type="policy.x"))
    with TestClient(create_app(services)) as c:
        v = c.get("/v1/audit/verify", headers=_bearer(services, Role.AUDITOR)).json()
    assert (v["ok"], v["kind"]) == (False, "edited")
    assert v["first_bad_seq"] is not None


def test_approver_may_not_read_the_audit_log(services: Services) -> None:
    """Only auditors and admins read the chain; an approver gets 403, no token 401."""
    with TestClient(create_app(services)) as c:
        assert c.get("/v1/audit", headers=_bearer(services, Role.APPROVER)).status_code == 403
        assert c.get("/v1/audit/verify").status_code == 401


async def test_content_is_sealed_readable_by_auditors_and_erasable(services: Services) -> None:
    """Content kept for an event is encrypted at rest, readable by an auditor, and erasure keeps the chain valid."""
    assert services.audit is not None
    rec = await services.audit.record(
        Event(type="tool.requested", task_id="tsk_c", agent_id="agt_1", person_id="prs_1")
    )
    services.audit.store_content(rec.id, {"prompt": "send the Q3 numbers to bob", "summary": {"to": "bob"}})
    await services.audit.record(Event(type="task.ended", task_id="tsk_c"))  # the content rode a batch: committed now
    from sqlalchemy import select

    from tether.store.schema.audit import audit_events

    with services.db.read() as conn:
        blob = conn.execute(select(audit_events.c.content).where(audit_events.c.id == rec.id)).scalar_one()
    assert b"Q3 numbers" not in bytes(blob)
    h = _bearer(services, Role.AUDITOR)
    with TestClient(create_app(services)) as c:
        r = c.get(f"/v1/audit/{rec.id}/content", headers=h).json()
        assert r["content"]["prompt"] == "send the Q3 numbers to bob"
        erase_content(services.db, rec.id, actor="prs_dpo")
        r = c.get(f"/v1/audit/{rec.id}/content", headers=h).json()
        assert (r["erased"], r["content"]) == (True, None)
        assert c.get("/v1/audit/verify", headers=h).json()["ok"] is True
    erased = query(services.db, type="audit.content_erased")[0]
    assert erased[0]["detail"]["event_id"] == rec.id


def test_content_bound_to_its_event_cannot_be_moved(services: Services) -> None:
    """An attacker copies one event's sealed content onto another event id: it no longer opens."""
    from tether.crypto import SecretUnreadable, seal
    from tether.store.schema.audit import audit_events

    assert services.audit is not None
    services.audit.record_sync([Event(id="evt_b", type="tool.requested")])
    key = services.extras["audit_content_key"]
    with services.db.write() as conn:
        conn.execute(audit_events.update().where(audit_events.c.id == "evt_b").values(
            content=seal(key, b'{"x":1}', b"evt_a")))  # fmt: skip
    with pytest.raises(SecretUnreadable):
        read_content(services.db, key, "evt_b")


def test_content_of_every_json_shape_reads_back_as_written(services: Services) -> None:
    """Text in any script (a lone surrogate too), floats, integers past 64 bits, nesting: the content reads back."""
    assert services.audit is not None
    doc = {"summary": {"to": ["zoë@example.com", "李雷@example.cn"], "ratio": 0.1, "n": 2**70, "deep": [[{"k": None}]]},
           "prompt": "résumé ✓", "input": {"b": True, "z": -1, "a": 1e-9, "odd": "x\ud800y"}}  # fmt: skip
    audit = services.audit

    async def run() -> str:
        ev = Event(id="evt_shapes", type="tool.requested", task_id="tsk_1")
        await audit.record_many([ev], content=[("evt_shapes", doc)])
        return "evt_shapes"

    eid = asyncio.run(run())
    assert read_content(services.db, services.extras["audit_content_key"], eid) == doc


def test_prompt_modes(services: Services) -> None:
    """digest keeps no text; full keeps it; redacted strips secrets but keeps the rest."""
    log = services.audit
    assert log is not None
    d, t = log.prompt_fields("hello")
    assert t is None
    assert d == log.keyed_digest(b"hello")
    log.prompt_mode = "full"
    assert log.prompt_fields("hello")[1] == "hello"
    log.prompt_mode = "redacted"
    _, t = log.prompt_fields("pay with 4111 1111 1111 1111 password=hunter2 please")
    assert t is not None
    assert "4111" not in t
    assert "hunter2" not in t
    assert "please" in t


def test_recovery_marks_allowed_calls_without_outcome_unknown(services: Services) -> None:
    """An allowed call whose process died before tool.completed gets outcome unknown at start-up, once."""
    assert services.audit is not None
    _story(services, "tsk_done")
    services.audit.record_sync(
        [Event(id="evt_lost", type="policy.decided", decision="allow", task_id="tsk_x", agent_id="agt_1"),
         Event(id="evt_denied", type="policy.decided", decision="deny", task_id="tsk_x")]
    )  # fmt: skip
    assert recover(services.db) == 1
    done = query(services.db, type="tool.completed", task_id="tsk_x")[0]
    assert [(e["parent_id"], e["outcome"]) for e in done] == [("evt_lost", {"status": "unknown"})]
    assert recover(services.db) == 0  # the marker bounds the next scan


def test_recovery_leaves_the_calls_of_a_live_instance_alone_until_it_is_gone(services: Services) -> None:
    """Several processes on one database: a call another, living process has in flight is not "unknown"; once
    that process is gone, the next recovery (a restart or any instance's sweep) marks it."""
    assert services.audit is not None
    services.audit.record_sync([
        Event(id="evt_dead", type="policy.decided", decision="allow", task_id="tsk_1", detail={"instance": "ins_a"}),
        Event(id="evt_live", type="policy.decided", decision="allow", task_id="tsk_2", detail={"instance": "ins_b"}),
    ])  # fmt: skip
    assert recover(services.db, live={"ins_b"}) == 1
    marked = query(services.db, type="tool.completed")[0]
    assert [e["parent_id"] for e in marked] == ["evt_dead"]
    assert recover(services.db, live={"ins_b"}) == 0
    services.audit.record_sync([Event(id="evt_late", type="policy.decided", decision="allow", task_id="tsk_3",
                                      detail={"instance": "ins_b"})])  # fmt: skip
    assert recover(services.db, live=set()) == 2  # ins_b stopped: both of its open calls, the older one included
    marked = query(services.db, type="tool.completed")[0]
    assert sorted(e["parent_id"] for e in marked) == ["evt_dead", "evt_late", "evt_live"]
    assert recover(services.db) == 0
    markers = query(services.db, type="audit.recovered")[0]
    assert markers[-1]["detail"]["instances"] == ["ins_b"]


def test_live_instances_are_those_with_a_fresh_heartbeat_and_a_running_process(services: Services) -> None:
    from datetime import timedelta

    from tether.audit.instances import LIVE_WINDOW, Instance, live_instances
    from tether.store.schema.audit import server_instances
    from tether.types import rfc3339, utcnow

    me = Instance(services.db)
    me.beat()
    assert me.id in live_instances(services.db)
    crashed = Instance(services.db)
    crashed.beat()
    with services.db.write() as conn:  # this host, a process that no longer exists
        conn.execute(server_instances.update().where(server_instances.c.id == crashed.id).values(pid=2**22 + 17))
    stale = Instance(services.db)
    stale.beat()
    with services.db.write() as conn:
        old = rfc3339(utcnow() - LIVE_WINDOW - timedelta(seconds=1))
        conn.execute(server_instances.update().where(server_instances.c.id == stale.id).values(heartbeat_at=old))
    live = live_instances(services.db)
    assert me.id in live
    assert crashed.id not in live
    assert stale.id not in live
    me.leave()
    assert me.id not in live_instances(services.db)


def test_export_jsonl_and_ocsf(services: Services) -> None:
    """JSON Lines carry every record with its hash and the checkpoints; OCSF lines are API Activity (6003)."""
    _story(services)
    services.extras["checkpointer"].checkpoint()
    lines = [json.loads(x) for x in export_jsonl(services.db)]
    records = [x["record"] for x in lines if "record" in x]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert all(len(r["hash"]) == 64 for r in records)
    assert "checkpoint" in lines[-1]
    ocsf = [json.loads(x) for x in export_ocsf(services.db)]
    assert {o["class_uid"] for o in ocsf} == {6003}
    done = next(o for o in ocsf if o["message"] == "tool.completed")
    assert done["actor"]["user"]["uid"] == "prs_1"
    assert done["actor"]["app_uid"] == "agt_1"
    assert list(export_ocsf(services.db, since="2999-01-01T00:00:00Z")) == []


def test_cli_verify_show_export_erase(tmp_path: Path) -> None:
    """tether audit verify exits 0 then 1 naming the seq; show prints the tree; export streams; erase works."""
    d = str(tmp_path / "data")
    assert runner.invoke(cli, ["init", "--data-dir", d, "--json"]).exit_code == 0
    svc = build_services(Settings(data_dir=tmp_path / "data"), migrate=False)
    try:
        ids = _story(svc, "tsk_cli")
        assert svc.audit is not None
        svc.audit.store_content(ids[1], {"prompt": "p"})
        svc.audit.record_sync([Event(type="task.ended", task_id="tsk_cli")])
    finally:
        svc.close()
    r = runner.invoke(cli, ["audit", "verify", "--data-dir", d])
    assert r.exit_code == 0, r.output
    assert "intact" in r.output
    r = runner.invoke(cli, ["audit", "show", "--task", "tsk_cli", "--data-dir", d])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "." in ln and "#" in ln]
    assert ["tool.completed" in lines[-2], "task.started" in lines[0]] == [True, True]
    r = runner.invoke(cli, ["audit", "export", "--format", "ocsf", "--data-dir", d])
    assert r.exit_code == 0
    assert all(json.loads(x)["class_uid"] == 6003 for x in r.output.splitlines())
    r = runner.invoke(cli, ["audit", "erase", ids[1], "--data-dir", d])
    assert r.exit_code == 0, r.output
    svc = build_services(Settings(data_dir=tmp_path / "data"), migrate=False)
    try:
        with svc.db.write() as conn:
            conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(ts="2020-01-01T00:00:00.000000Z"))
    finally:
        svc.close()
    r = runner.invoke(cli, ["audit", "verify", "--data-dir", d])
    assert r.exit_code == 1
    assert "first bad seq 3" in r.output


def test_master_key_rotation_keeps_the_audit_key_and_content(tmp_path: Path) -> None:
    """tether credentials rotate-master re-seals the audit signing key and content: both open afterwards."""
    d = str(tmp_path / "data")
    assert runner.invoke(cli, ["init", "--data-dir", d, "--json"]).exit_code == 0
    svc = build_services(Settings(data_dir=tmp_path / "data"), migrate=False)
    try:
        assert svc.audit is not None
        rec = svc.audit.record_sync([Event(type="tool.requested", task_id="tsk_m")])[0]
        svc.audit.store_content(rec.id, {"prompt": "kept"})
        svc.audit.record_sync([Event(type="task.ended", task_id="tsk_m")])
        svc.extras["checkpointer"].checkpoint()
        kid = svc.extras["audit_key"].kid
    finally:
        svc.close()
    r = runner.invoke(cli, ["credentials", "rotate-master", "--data-dir", d])
    assert r.exit_code == 0, r.output
    svc = build_services(Settings(data_dir=tmp_path / "data"), migrate=False)
    try:
        assert "audit_key_error" not in svc.extras
        assert svc.extras["audit_key"].kid == kid
        assert read_content(svc.db, svc.extras["audit_content_key"], rec.id) == {"prompt": "kept"}
    finally:
        svc.close()
    assert runner.invoke(cli, ["audit", "verify", "--data-dir", d]).exit_code == 0


def test_recovery_names_an_mcp_outcome_by_the_id_its_result_was_given(services: Services) -> None:
    """An MCP result's id was handed to the client before its lazy record was committed; if the process died in
    between, the recovered outcome takes that very id (so a later hop's parent is in the log). An HTTP call's
    outcome, never named to anyone, gets an id of its own."""
    from tether.audit.chain import event_id
    from tether.audit.results import names_result_of, result_id

    assert services.audit is not None
    key = b"k" * 32
    mcp_decision, http_decision = event_id(), event_id()
    services.audit.record_sync([
        Event(id=mcp_decision, type="policy.decided", decision="allow", task_id="tsk_m", detail={"enforcement": "mcp"}),
        Event(id=http_decision, type="policy.decided", decision="allow", task_id="tsk_h",
              detail={"enforcement": "http"}),
    ])  # fmt: skip
    assert recover(services.db, name_result=lambda task, decision: result_id(key, task, decision)) == 2
    by_parent = {e["parent_id"]: e for e in query(services.db, type="tool.completed")[0]}
    given = result_id(key, "tsk_m", mcp_decision)
    assert by_parent[mcp_decision]["id"] == given
    assert by_parent[mcp_decision]["outcome"] == {"status": "unknown"}
    assert names_result_of(key, "tsk_m", given)
    http_id = by_parent[http_decision]["id"]
    assert http_id != result_id(key, "tsk_h", http_decision)
    assert not names_result_of(key, "tsk_h", http_id)


def test_a_late_outcome_under_an_id_recovery_took_is_kept_beside_it_and_fails_no_call(services: Services) -> None:
    """Recovery took a stalled process for gone and wrote its MCP call's outcome "unknown" under the result's id;
    the process then commits the real outcome under that same id, in one batch with another task's decision.
    Both are kept — the late outcome under an id of its own naming the given one — and the chain verifies."""
    from tether.audit.chain import event_id
    from tether.audit.results import result_id
    from tether.audit.verify import verify

    log = services.audit
    assert log is not None
    key = b"r" * 32
    decision = event_id()
    log.record_sync([Event(id=decision, type="policy.decided", decision="allow", task_id="tsk_a",
                           detail={"enforcement": "mcp", "instance": "ins_stalled"})])  # fmt: skip
    given = result_id(key, "tsk_a", decision)
    assert recover(services.db, name_result=lambda task, d: result_id(key, task, d)) == 1
    other = Event(id=event_id(), type="policy.decided", decision="allow", task_id="tsk_b")
    late = Event(id=given, type="tool.completed", task_id="tsk_a", parent_id=decision, outcome={"status": "ok"})

    async def both() -> list[object]:
        return list(await asyncio.gather(log.record(other), log.record(late, lazy=True)))

    receipts = asyncio.run(both())
    assert receipts[0].id == other.id
    assert receipts[1].id != given
    outcomes = {e["id"]: e for e in query(services.db, type="tool.completed", task_id="tsk_a")[0]}
    assert outcomes[given]["outcome"] == {"status": "unknown"}
    assert outcomes[receipts[1].id]["outcome"] == {"status": "ok"}
    assert outcomes[receipts[1].id]["detail"]["result_id"] == given
    assert [e["id"] for e in query(services.db, type="policy.decided", task_id="tsk_b")[0]] == [other.id]
    assert verify(services.db, None).ok
