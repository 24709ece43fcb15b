"""Human approvals, one-time grants, notifications and break-glass (architecture §1, §3, §8).

Public surface: `ApprovalService` (`request`, `decide`, `consume`, `wait`, `breakglass_for`,
break-glass start/end/review), the values `Approval`, `Breakglass`, `ApprovalStatus`, and the
errors. Storage is behind `ports.ApprovalStore` (`tether.store.approvals` implements it).
"""

from tether.approvals.errors import (
    ApprovalClosed,
    ApprovalInvalid,
    BreakglassInvalid,
    BreakglassRefused,
    NotAnApprover,
)
from tether.approvals.model import Approval, ApprovalStatus, Breakglass, Delivery, ReviewStatus
from tether.approvals.notify import WebhookNotifier, sign, slack_message, verify_signature
from tether.approvals.service import ApprovalService

__all__ = [
    "Approval",
    "ApprovalClosed",
    "ApprovalInvalid",
    "ApprovalService",
    "ApprovalStatus",
    "Breakglass",
    "BreakglassInvalid",
    "BreakglassRefused",
    "Delivery",
    "NotAnApprover",
    "ReviewStatus",
    "WebhookNotifier",
    "sign",
    "slack_message",
    "verify_signature",
]
