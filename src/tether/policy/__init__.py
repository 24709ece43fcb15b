"""The policy decision point: Cedar policy as code, decided at every call (architecture §3)."""

from tether.policy.bundle import DEFAULT_PACK, Bundle, BundleError, load_bundle
from tether.policy.engine import PolicyEngine
from tether.policy.model import (
    SENSITIVITY,
    Decision,
    DecisionRequest,
    Effect,
    Resource,
    decision_input,
    request_from_input,
)

__all__ = [
    "DEFAULT_PACK",
    "SENSITIVITY",
    "Bundle",
    "BundleError",
    "Decision",
    "DecisionRequest",
    "Effect",
    "PolicyEngine",
    "Resource",
    "decision_input",
    "load_bundle",
    "request_from_input",
]
