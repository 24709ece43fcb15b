"""The registry of people and their agents (architecture §1)."""

from tether.identity.model import (
    Agent,
    AgentMode,
    AgentStatus,
    Delegation,
    DelegationStatus,
    Page,
    Person,
    PersonStatus,
    Role,
)
from tether.identity.service import IdentityService

__all__ = [
    "Agent",
    "AgentMode",
    "AgentStatus",
    "Delegation",
    "DelegationStatus",
    "IdentityService",
    "Page",
    "Person",
    "PersonStatus",
    "Role",
]
