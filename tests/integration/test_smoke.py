"""The server starts on both backends and answers its health and admin endpoints."""

import httpx


def test_health_ready_metrics_and_admin_auth(live_server, admin):
    """healthz/readyz answer, /metrics is Prometheus text, /v1 needs an admin token."""
    base = live_server.base
    assert httpx.get(base + "/healthz").json() == {"status": "ok"}
    assert httpx.get(base + "/readyz").status_code == 200
    assert "# TYPE" in httpx.get(base + "/metrics").text
    r = httpx.get(base + "/v1/agents")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    r = httpx.get(base + "/v1/agents", headers={"Authorization": f"Bearer {admin[1]}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "next_cursor": None}


def test_the_start_up_heap_is_beyond_the_cyclic_gc_while_serving(services):
    """Start-up leaves what it built frozen (collections under load skip it); shutdown gives it back."""
    import gc

    from fastapi.testclient import TestClient

    from tether.api.app import create_app

    gc.unfreeze()
    with TestClient(create_app(services)) as c:
        assert c.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000  # modules, engines, the policy bundle…
    assert gc.get_freeze_count() == 0
