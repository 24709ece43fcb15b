"""Values of the credential vault. A secret never sits in a value that can be printed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tether.errors import InvalidRequest, NotFound, TetherError


class CredentialKind(StrEnum):
    BEARER = "bearer"  # static bearer token
    API_KEY = "api_key"  # a header carrying a key
    CLIENT_CREDENTIALS = "client_credentials"  # OAuth 2.0 client credentials (app-only)
    OBO = "obo"  # OAuth 2.0 on-behalf-of / token exchange: a per-person upstream token


#: which secret fields each kind needs, and which non-secret settings it accepts
SECRET_FIELDS: dict[CredentialKind, tuple[str, ...]] = {
    CredentialKind.BEARER: ("token",),
    CredentialKind.API_KEY: ("key",),
    CredentialKind.CLIENT_CREDENTIALS: ("client_secret",),
    CredentialKind.OBO: ("client_secret",),
}
CONFIG_FIELDS: dict[CredentialKind, tuple[str, ...]] = {
    CredentialKind.BEARER: ("app_only",),
    CredentialKind.API_KEY: ("header", "prefix", "app_only"),
    CredentialKind.CLIENT_CREDENTIALS: ("token_url", "client_id", "scope", "app_only"),
    CredentialKind.OBO: ("token_url", "client_id", "scope", "grant"),
}


class CredentialNotFound(NotFound):
    code, title = "credential_not_found", "No such credential"


class CredentialInvalid(InvalidRequest):
    code, title = "credential_invalid", "Invalid credential"


class UpstreamAuthFailed(TetherError):
    """The upstream's authorization server refused the gateway (never carries its answer's secrets)."""

    code, status, title = "upstream_auth_failed", 502, "Upstream authorization failed"


class SubjectTokenMissing(TetherError):
    code, status, title = "subject_token_missing", 403, "No subject token for this task"


class Secret:
    """A secret string that will not print itself (repr, str, format all show a mask)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """What may be shown of a credential: everything but the secret."""

    id: str
    name: str
    kind: CredentialKind
    config: Mapping[str, Any]
    master_kid: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def app_only(self) -> bool:
        return bool(self.config.get("app_only", False)) and self.kind is not CredentialKind.OBO

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "kind": self.kind.value, "config": dict(self.config),
            "app_only": self.app_only, "master_kid": self.master_kid, "created_by": self.created_by,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class SealedRow:
    """A row as stored: the secret sealed under its data key, the data key wrapped by the master key."""

    info: CredentialInfo
    secret_sealed: bytes
    data_key_wrapped: bytes


@dataclass(frozen=True, slots=True)
class SealedSubject:
    task_id: str
    person_id: str
    token_sealed: bytes
    data_key_wrapped: bytes
    master_kid: str
    expires_at: datetime


@dataclass(frozen=True)
class Injection:
    """Who the upstream call is for: the provider picks the per-person token from it (OBO)."""

    task_id: str
    person_id: str
    extra: Mapping[str, Any] = field(default_factory=dict)


__all__ = [
    "CONFIG_FIELDS",
    "SECRET_FIELDS",
    "CredentialInfo",
    "CredentialInvalid",
    "CredentialKind",
    "CredentialNotFound",
    "Injection",
    "SealedRow",
    "SealedSubject",
    "Secret",
    "SubjectTokenMissing",
    "UpstreamAuthFailed",
]
