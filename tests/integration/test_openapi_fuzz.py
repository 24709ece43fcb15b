"""schemathesis against the live OpenAPI document, with an admin token: no generated input gets a 5xx."""

from __future__ import annotations

import contextlib
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import LiveServer

EXAMPLES = 25


def _fuzz(op: Any, headers: dict[str, str], calls: list[str], failures: list[str]) -> None:
    @given(case=op.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: Any) -> None:
        calls.append(op.label)
        try:
            case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=20)
        except Exception as exc:
            failures.append(f"{op.label}: {str(exc)[:600]}")
            raise

    with contextlib.suppress(Exception):  # recorded in `failures`, reported together below
        run()


def test_no_generated_input_gets_a_server_error(live_server: LiveServer, admin: tuple[str, str]) -> None:
    """Every operation, fed schema-generated input with a valid admin token, answers below 500."""
    schema = schemathesis.openapi.from_url(live_server.base + "/openapi.json")
    headers = {"Authorization": f"Bearer {admin[1]}"}
    failures: list[str] = []
    calls: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 10
    for op in operations:
        _fuzz(op, headers, calls, failures)
    assert not failures, "\n\n".join(failures)
    assert len(set(calls)) == len(operations)
