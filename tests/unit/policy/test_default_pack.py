"""The shipped policy pack: valid against the schema, and every one of its cases holds."""

from tether.policy import DEFAULT_PACK, load_bundle
from tether.policy.testing import run_tests


def test_default_pack_loads_and_every_case_passes():
    """The pack validates and its YAML cases (allow, deny, approval, break-glass) all hold."""
    bundle = load_bundle(DEFAULT_PACK)
    report = run_tests(bundle, DEFAULT_PACK)
    assert len(report.results) >= 25
    assert [r.describe() for r in report.failed] == []


def test_every_default_policy_has_a_reason_for_humans():
    """Each policy carries an @id and an @reason, shown in every decision and audit record."""
    bundle = load_bundle(DEFAULT_PACK)
    assert all(p.reason for p in bundle.policies.values())
