"""The credential vault: upstream secrets sealed at rest with envelope encryption.

    secret ──AES-256-GCM(data key, aad=row id)──► secret_sealed
    data key (random, per row) ──AES-256-GCM(master key, aad=row id)──► data_key_wrapped

The master key comes from `tether.crypto.load_master_key` (TETHER_MASTER_KEY or the 0600
key file). `rotate_master` re-wraps every data key under a new master key in one
transaction; the secrets themselves are not re-encrypted. Opened secrets are held in
process memory as `Secret` values (which never print) so the hot path reads no database.

On-behalf-of: the person's subject token for a task is sealed the same way
(`keep_subject_token`) and destroyed, with every upstream token cached from it, when the
task ends (`end_task`, or `sweep` for tasks that ended or expired elsewhere).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tether.credentials.model import (
    CONFIG_FIELDS,
    SECRET_FIELDS,
    CredentialInfo,
    CredentialInvalid,
    CredentialKind,
    CredentialNotFound,
    SealedRow,
    SealedSubject,
    Secret,
)
from tether.credentials.ports import CredentialStore
from tether.crypto import MASTER_KID, derive_key, seal, unseal
from tether.types import new_id

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def master_kid(master_key: bytes) -> str:
    """A fingerprint naming the master key (HMAC, so it reveals nothing of the key)."""
    return derive_key(master_key, MASTER_KID).hex()[:16]


def wrap(master_key: bytes, row_id: str, data_key: bytes) -> bytes:
    return seal(master_key, data_key, b"dk:" + row_id.encode())


def unwrap(master_key: bytes, row_id: str, wrapped: bytes) -> bytes:
    return unseal(master_key, wrapped, b"dk:" + row_id.encode())


class Vault:
    def __init__(
        self, store: CredentialStore, master_key: bytes, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self.store = store
        self._master = master_key
        self.kid = master_kid(master_key)
        self.clock = clock or (lambda: datetime.now(UTC))
        self._open: dict[str, tuple[CredentialInfo, dict[str, Secret]]] = {}
        self._subjects: dict[str, tuple[str, Secret, datetime]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------ credentials

    def add(
        self, actor: str, name: str, kind: CredentialKind | str, secret: Mapping[str, str],
        config: Mapping[str, Any] | None = None, *, replace: bool = False,
    ) -> CredentialInfo:  # fmt: skip
        """Seal and store a credential; `replace=True` overwrites one of the same name."""
        kind = CredentialKind(kind)
        if not name or len(name) > 64 or set(name) - NAME_CHARS:
            raise CredentialInvalid("a credential name is 1-64 of a-z 0-9 - _ .", field="name")
        missing = [f for f in SECRET_FIELDS[kind] if not secret.get(f)]
        if missing or set(secret) - set(SECRET_FIELDS[kind]):
            raise CredentialInvalid(
                f"a {kind.value} credential takes exactly the secret field(s) {', '.join(SECRET_FIELDS[kind])}",
                field="secret",
            )
        cfg = dict(config or {})
        unknown = set(cfg) - set(CONFIG_FIELDS[kind])
        if unknown:
            raise CredentialInvalid(
                f"unknown setting(s) for {kind.value}: {', '.join(sorted(unknown))}", field="config"
            )
        if kind in (CredentialKind.CLIENT_CREDENTIALS, CredentialKind.OBO):
            for f in ("token_url", "client_id"):
                if not cfg.get(f):
                    raise CredentialInvalid(f"a {kind.value} credential needs {f}", field=f)
            if not str(cfg["token_url"]).startswith(("https://", "http://127.0.0.1", "http://localhost")):
                raise CredentialInvalid("token_url must be https (or loopback http for tests)", field="token_url")
        if kind is CredentialKind.API_KEY and not cfg.get("header"):
            cfg["header"] = "X-API-Key"
        now = self.clock()
        existing = self.store.get(name)
        if existing is not None and not replace:
            raise CredentialInvalid(f"credential {name} exists (use replace)", field="name")
        row_id = existing.info.id if existing is not None else new_id("cred")
        info = CredentialInfo(
            id=row_id, name=name, kind=kind, config=cfg, master_kid=self.kid, created_by=actor,
            created_at=existing.info.created_at if existing is not None else now, updated_at=now,
        )  # fmt: skip
        data_key = secrets.token_bytes(32)
        blob = json.dumps(dict(secret), sort_keys=True).encode()
        row = SealedRow(info, seal(data_key, blob, row_id.encode()), wrap(self._master, row_id, data_key))
        if existing is None:
            self.store.insert(row)
        else:
            self.store.replace(row)
        with self._lock:
            self._open.pop(name, None)
        self._changed(name)
        return info

    def list(self) -> list[CredentialInfo]:
        return list(self.store.all())

    def info(self, name: str) -> CredentialInfo:
        return self.open(name)[0]

    def remove(self, name: str) -> bool:
        gone = self.store.delete(name)
        with self._lock:
            self._open.pop(name, None)
        self._changed(name)
        return gone

    def open(self, name: str) -> tuple[CredentialInfo, dict[str, Secret]]:
        """The credential and its secret fields, opened once and kept in memory."""
        hit = self._open.get(name)
        if hit is not None:
            return hit
        row = self.store.get(name)
        if row is None:
            raise CredentialNotFound(f"no credential named {name}")
        data_key = unwrap(self._master, row.info.id, row.data_key_wrapped)
        fields = json.loads(unseal(data_key, row.secret_sealed, row.info.id.encode()))
        opened = (row.info, {k: Secret(str(v)) for k, v in fields.items()})
        with self._lock:
            self._open[name] = opened
        return opened

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Called with a credential name when it is replaced or removed (providers drop caches)."""
        self._listeners.append(listener)

    def _changed(self, name: str) -> None:
        for fn in self._listeners:
            fn(name)

    # ------------------------------------------------------------ subject tokens (on-behalf-of)

    def keep_subject_token(self, task_id: str, person_id: str, token: str, expires_at: datetime) -> None:
        """Seal the person's subject token for a task (replacing an earlier one of the task)."""
        data_key = secrets.token_bytes(32)
        aad = b"subject:" + task_id.encode()
        self.store.put_subject(
            SealedSubject(
                task_id, person_id, seal(data_key, token.encode(), aad), wrap(self._master, "sub:" + task_id, data_key),
                self.kid, expires_at,
            )
        )  # fmt: skip
        with self._lock:
            self._subjects[task_id] = (person_id, Secret(token), expires_at)

    def subject_token(self, task_id: str) -> tuple[str, Secret] | None:
        """(person id, subject token) of a live task, or None."""
        hit = self._subjects.get(task_id)
        if hit is None:
            row = self.store.get_subject(task_id)
            if row is None:
                return None
            data_key = unwrap(self._master, "sub:" + task_id, row.data_key_wrapped)
            token = unseal(data_key, row.token_sealed, b"subject:" + task_id.encode()).decode()
            hit = (row.person_id, Secret(token), row.expires_at)
            with self._lock:
                self._subjects[task_id] = hit
        if hit[2] <= self.clock():
            self.end_task(task_id)
            return None
        return hit[0], hit[1]

    def end_task(self, task_id: str) -> None:
        """Destroy the task's subject token and every upstream token cached from it."""
        self.store.delete_subjects([task_id])
        with self._lock:
            self._subjects.pop(task_id, None)
        self._changed("task:" + task_id)

    def sweep(self) -> int:
        """End the subject tokens of tasks that ended or expired (in this or another process)."""
        done = self.store.finished_subjects(self.clock())
        for task_id in done:
            self.end_task(task_id)
        return len(done)

    # ------------------------------------------------------------ rotation

    def rewrapper(self, new_master: bytes) -> Callable[[str, bytes], bytes]:
        """(row id, wrapped data key) → the data key wrapped under `new_master`."""
        if len(new_master) != 32:
            raise ValueError("the new master key must be 32 bytes")

        def rewrap(row_id: str, wrapped: bytes) -> bytes:
            return wrap(new_master, row_id, unwrap(self._master, row_id, wrapped))

        return rewrap

    def rotate_master(self, new_master: bytes) -> int:
        """Re-wrap every data key under `new_master`; from now on this vault uses it."""
        count = self.store.rewrap_all(self.rewrapper(new_master), master_kid(new_master))
        self._master = new_master
        self.kid = master_kid(new_master)
        return count


__all__ = ["Vault", "master_kid", "unwrap", "wrap"]
