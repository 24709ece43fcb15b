"""What the token service needs from storage. `tether.store.tokens` implements it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tether.audit.model import Event, Record


@dataclass(frozen=True, slots=True)
class KeyRow:
    kid: str
    alg: str
    public_jwk: dict[str, Any]
    private_sealed: bytes
    created_at: datetime
    retired_at: datetime | None
    publish_until: datetime | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    agent_id: str
    person_id: str
    delegation_id: str | None
    purpose: str
    scopes: tuple[str, ...]
    audience: str
    actors: tuple[str, ...]
    constraints: dict[str, Any] | None
    status: str  # "open" | "ended" (an open task past expires_at is reported "expired")
    started_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None

    def state(self, now: datetime) -> str:
        if self.status == "open" and self.expires_at <= now:
            return "expired"
        return self.status


@dataclass(frozen=True, slots=True)
class RevocationRow:
    seq: int
    kind: str
    subject_id: str
    created_at: datetime


class TokenRepo(Protocol):
    def keys(self) -> list[KeyRow]: ...
    def insert_key(self, row: KeyRow) -> None: ...
    def retire_keys(self, now: datetime, publish_until: datetime) -> list[str]: ...
    def consume_jti(self, client_id: str, jti: str, expires_at: datetime) -> bool: ...
    def purge_jtis(self, now: datetime) -> None: ...
    def insert_task(self, row: TaskRow) -> None: ...
    def extend_task(self, task_id: str, expires_at: datetime, actors: Sequence[str]) -> None: ...
    def get_task(self, task_id: str) -> TaskRow | None: ...
    def list_tasks(
        self, *, after: str | None, limit: int, agent_id: str | None, person_id: str | None, status: str | None,
        now: datetime,
    ) -> list[TaskRow]: ...  # fmt: skip
    def end_task(self, task_id: str, reason: str, now: datetime) -> bool: ...
    def add_revocation(
        self, kind: str, subject_id: str, reason: str, now: datetime, expires_at: datetime | None = None
    ) -> int: ...
    def revoked(self, subjects: Sequence[tuple[str, str]], issued_at: datetime) -> str | None: ...
    def revocations_after(
        self, seq: int, since: datetime, *, kept_longer: Mapping[str, datetime] | None = None
    ) -> list[RevocationRow]: ...
    def record(self, events: Sequence[Event]) -> list[Record]: ...


class TokenStore(Protocol):
    def read(self) -> AbstractContextManager[TokenRepo]: ...
    def write(self) -> AbstractContextManager[TokenRepo]: ...


__all__ = ["KeyRow", "RevocationRow", "TaskRow", "TokenRepo", "TokenStore"]
