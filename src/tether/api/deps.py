"""Request-scoped dependencies: the wired services and the calling Principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tether.api.auth import Principal
from tether.api.wiring import Services
from tether.identity.model import Role


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    svc: Services = request.app.state.services
    return svc.admin_tokens.authenticate(token.strip() if scheme.lower() == "bearer" else None)


def role(*roles: Role):  # type: ignore[no-untyped-def]
    """A dependency that requires one of `roles` (admin always passes)."""

    def check(p: Annotated[Principal, Depends(principal)]) -> Principal:
        p.require(*roles)
        return p

    return check


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
AdminDep = Annotated[Principal, Depends(role())]
ReaderDep = Annotated[Principal, Depends(role(Role.APPROVER, Role.AUDITOR))]

__all__ = ["AdminDep", "PrincipalDep", "ReaderDep", "ServicesDep", "principal", "role", "services"]
