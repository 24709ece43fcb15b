"""`tether credentials add|list|remove|rotate-master`: the upstream credential vault.

Secrets are read from a prompt, stdin (`--secret-stdin`) or an environment variable named
by `--secret-env`, never from a command-line argument (shell history, `ps`).
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli._common import DataDir, Json, emit_json, fail, operator, out, services, settings, table
from tether.credentials import CredentialKind, Vault

credentials_app = typer.Typer(
    help="Upstream credentials the HTTP gateway injects (sealed at rest).", no_args_is_help=True
)

SECRET_FIELD = {"bearer": "token", "api_key": "key", "client_credentials": "client_secret", "obo": "client_secret"}


def vault_of(svc: Any) -> Vault:
    vault = svc.extras.get("vault")
    if vault is None:
        fail("the credential vault is not wired")
    return vault  # type: ignore[no-any-return]


def _read_secret(stdin: bool, env: str | None) -> str:
    if env:
        value = os.environ.get(env)  # an operator-named variable, read at the entry point
        if not value:
            fail(f"environment variable {env} is empty or unset")
        return str(value)
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Secret", hide_input=True))


@credentials_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Credential name, referenced from the gateway config.")],
    kind: Annotated[str, typer.Option(help="bearer | api_key | client_credentials | obo")],
    header: Annotated[str | None, typer.Option(help="api_key: header name (default X-API-Key).")] = None,
    prefix: Annotated[str | None, typer.Option(help="api_key: value prefix, e.g. 'Token'.")] = None,
    token_url: Annotated[str | None, typer.Option(help="OAuth: the upstream's token endpoint.")] = None,
    client_id: Annotated[str | None, typer.Option(help="OAuth: client id at the upstream.")] = None,
    scope: Annotated[str | None, typer.Option(help="OAuth: scope to request.")] = None,
    grant: Annotated[str | None, typer.Option(help="obo: jwt-bearer (Entra) or token-exchange (RFC 8693).")] = None,
    app_only: Annotated[bool, typer.Option("--app-only", help="Declare an app-only credential.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a credential of this name.")] = False,
    secret_stdin: Annotated[bool, typer.Option("--secret-stdin", help="Read the secret from stdin.")] = False,
    secret_env: Annotated[str | None, typer.Option("--secret-env", help="Read the secret from this env var.")] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Seal a credential in the vault (AES-256-GCM envelope encryption under the master key)."""
    try:
        k = CredentialKind(kind)
    except ValueError:
        fail(f"--kind must be one of {', '.join(c.value for c in CredentialKind)}")
    config: dict[str, Any] = {
        key: value
        for key, value in {"header": header, "prefix": prefix, "token_url": token_url, "client_id": client_id,
                           "scope": scope, "grant": grant}.items()
        if value is not None
    }  # fmt: skip
    if app_only:
        config["app_only"] = True
    secret = _read_secret(secret_stdin, secret_env)
    with services(data_dir) as svc:
        info = vault_of(svc).add(operator(svc), name, k, {SECRET_FIELD[k.value]: secret}, config, replace=replace)
    if as_json:
        emit_json(info.public())
    else:
        out.print(f"Sealed credential [bold]{info.name}[/bold] ({info.kind.value}) under master key {info.master_kid}")


@credentials_app.command("list")
def list_(data_dir: DataDir = None, as_json: Json = False) -> None:
    """The credentials in the vault: names, kinds and settings (never secrets)."""
    with services(data_dir) as svc:
        rows = vault_of(svc).list()
    if as_json:
        emit_json([r.public() for r in rows])
        return
    table("Credentials", ["name", "kind", "app only", "settings", "master key", "updated"],
          [(r.name, r.kind.value, r.app_only, ", ".join(f"{k}={v}" for k, v in r.config.items()), r.master_kid,
            r.updated_at.isoformat(timespec="seconds")) for r in rows])  # fmt: skip


@credentials_app.command("remove")
def remove(name: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Delete a credential (audited)."""
    with services(data_dir) as svc:
        gone = vault_of(svc).remove(name)
    if as_json:
        emit_json({"name": name, "removed": gone})
    elif gone:
        out.print(f"Removed credential {name}")
    else:
        fail(f"no credential named {name}", 2)


@credentials_app.command("rotate-master")
def rotate_master(data_dir: DataDir = None, as_json: Json = False) -> None:
    """Re-wrap every data key (and re-seal master-derived blobs) under a new master key file (0600)."""
    from tether.crypto import load_master_key, master_key_path
    from tether.store.credentials import rotate_master_everywhere

    s = settings(data_dir)
    if s.master_key is not None:
        fail("the master key comes from TETHER_MASTER_KEY: rotate it where that variable is managed")
    path = master_key_path(s)
    pending = path.with_name(path.name + ".new")
    with services(data_dir) as svc:
        vault = vault_of(svc)
        old = load_master_key(s, create=False)
        new = secrets.token_bytes(32)
        # write the new key first (0600), so a crash after the commit leaves it recoverable
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(new).decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            counts = rotate_master_everywhere(svc.db, vault.rewrapper(new), old, new, _kid(new), operator(svc))
        except BaseException:
            Path(pending).unlink(missing_ok=True)
            raise
        os.replace(pending, path)
    if as_json:
        emit_json({"master_kid": _kid(new), "rewrapped": counts})
    else:
        out.print(f"New master key {_kid(new)} written to {path} (mode 0600); re-wrapped: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))  # fmt: skip


def _kid(key: bytes) -> str:
    from tether.credentials import master_kid

    return master_kid(key)


__all__ = ["credentials_app"]
