"""Errors of the approvals context (all TetherErrors; the API renders problem+json)."""

from __future__ import annotations

from tether.errors import Conflict, Forbidden, ValidationFailed


class ApprovalInvalid(Forbidden):
    """The approval cannot authorise this call: not approved, used, expired, other task or digest."""

    code, title = "approval_invalid", "Approval not valid for this request"


class NotAnApprover(Forbidden):
    """The person may not decide this request (the policy's @approver rule, four eyes, status)."""

    code, title = "not_an_approver", "Not allowed to decide this approval"


class ApprovalClosed(Conflict):
    """The request was decided already, or expired."""

    code, title = "approval_closed", "Approval already decided or expired"


class BreakglassRefused(Forbidden):
    code, title = "breakglass_refused", "Break-glass refused"


class BreakglassInvalid(ValidationFailed):
    code, title = "breakglass_invalid", "Break-glass request not valid"


__all__ = ["ApprovalClosed", "ApprovalInvalid", "BreakglassInvalid", "BreakglassRefused", "NotAnApprover"]
