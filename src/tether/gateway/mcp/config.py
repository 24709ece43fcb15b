"""The MCP gateway's part of the gateway config (YAML, `TETHER_GATEWAY_CONFIG`):

    mcp:
      allowed_origins: ["https://claude.ai"]     # browser origins /mcp accepts (others: 403)
      max_request_bytes: 1048576                 # a JSON-RPC message larger than this: JSON-RPC error
      max_response_bytes: 8388608                # an upstream result larger than this: tool error
      list_ttl: 30                               # seconds an upstream's tool list is reused
      servers:
        git:
          command: mcp-server-git                # stdio upstream (one process per person and task) …
          args: ["--repository", "/srv/repo"]
          env: {}
          # url: https://mcp.example.com/mcp     # … or a streamable HTTP upstream
          # transport: lean                    # URL servers: a small aiohttp client instead of the SDK's
          # credential: vault-ref                # vault credential injected into a URL upstream's requests
          timeout: 30                            # per call, seconds
          connect_timeout: 10
          max_concurrency: 16                    # calls in flight to this server, all sessions together
          # sessions_per_task: 1                 # >1: a task's tool calls spread over that many sessions
                                                 #   (only for servers that keep no state per session)
          idle_seconds: 300                      # an unused session is closed after this
          tools:
            git_commit:
              action: git:write                  # registered when new (give action_type)
              action_type: write
              resource: {type: Repository, id: "path(/repo_path)", sensitivity: internal}
              facts: {message_bytes: "len(/message)"}
              annotations: {destructiveHint: false}

Values that read the arguments are *expressions*: a JSON pointer (`/repo_path`), a literal
(`=internal`, or any string not starting with `/`), or one function of a pointer —
`len(/p)`, `lower(/p)`, `path(/p)` (normalised POSIX path), `host(/p)` (URL host),
`domain(/p)` (e-mail domain). They are parsed and checked when the config loads.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tether import actions

SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")  # no "_" so "<server>__<tool>" splits unambiguously
SENSITIVITIES = ("public", "internal", "confidential", "highly_confidential")
RESERVED_FACTS = frozenset({"approved", "breakglass", "user", "actors", "task"})
ANNOTATION_KEYS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
POINTER = re.compile(r"^(/([^/~]|~[01])*)+$|^$")
FUNC = re.compile(r"^([a-z]+)\((.*)\)$")
FUNCTIONS = ("len", "lower", "path", "host", "domain", "str")


class ExpressionError(ValueError):
    pass


class Missing(Exception):
    """A pointer names nothing in the arguments."""


@dataclass(frozen=True, slots=True)
class Expr:
    """A validated argument expression: literal, pointer, or function(pointer)."""

    source: str
    literal: Any = None
    pointer: tuple[str, ...] | None = None
    func: str | None = None

    @staticmethod
    def parse(source: Any) -> Expr:
        if not isinstance(source, str):
            if isinstance(source, bool | int | float) or source is None:
                return Expr(str(source), literal=source)
            raise ExpressionError(f"expression {source!r} must be a string, number or boolean")
        s = source.strip()
        if s.startswith("="):
            return Expr(source, literal=s[1:])
        m = FUNC.match(s)
        if m:
            name, arg = m.group(1), m.group(2).strip()
            if name not in FUNCTIONS:
                raise ExpressionError(f"unknown function {name!r} in {source!r} (known: {', '.join(FUNCTIONS)})")
            return Expr(source, pointer=_pointer(arg, source), func=name)
        if s.startswith("/"):
            return Expr(source, pointer=_pointer(s, source))
        return Expr(source, literal=s)

    def evaluate(self, args: Mapping[str, Any]) -> Any:
        if self.pointer is None:
            return self.literal
        value: Any = args
        for part in self.pointer:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value) and str(int(part)) == part:
                value = value[int(part)]
            else:
                raise Missing(self.source)
        if self.func is None:
            return value
        return _apply(self.func, value, self.source)


def _pointer(s: str, source: str) -> tuple[str, ...]:
    if not s.startswith("/") or not POINTER.match(s):
        raise ExpressionError(f"{source!r}: {s!r} is not a JSON pointer (RFC 6901)")
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in s.split("/")[1:])


def _apply(func: str, value: Any, source: str) -> Any:
    if func == "len":
        if isinstance(value, str | list | dict):
            return len(value)
        raise ExpressionError(f"{source}: len() of a {type(value).__name__}")
    if not isinstance(value, str):
        raise ExpressionError(f"{source}: {func}() needs a string, not a {type(value).__name__}")
    if func == "str":
        return value
    if func == "lower":
        return value.lower()
    if func == "path":
        if "\x00" in value or not value:
            raise ExpressionError(f"{source}: not a path")
        if not value.startswith("/"):
            # the upstream would resolve it against its own working directory, which the policy cannot see
            raise ExpressionError(f"{source}: not an absolute path")
        # resolve . and .. lexically so the resource the policy sees is the one the upstream touches
        return posixpath.normpath(value).replace("//", "/")
    if func == "host":
        return (urlsplit(value).hostname or "").lower()
    if func == "domain":
        return value.rpartition("@")[2].strip().lower()
    raise ExpressionError(f"unknown function {func}")  # pragma: no cover — parse() refuses it


def policy_resource_types() -> tuple[str, ...] | None:
    """The entity types Tether's Cedar schema declares (None when the policy context is absent)."""
    try:
        from tether.policy.schema import RESOURCE_TYPES
    except ImportError:
        return None
    return tuple(RESOURCE_TYPES)


class ResourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = Field(pattern=r"^[A-Z][A-Za-z0-9_]{0,63}$")
    id: str
    sensitivity: str = "=internal"
    owner: str | None = None

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        known = policy_resource_types()
        if known is not None and v not in known:
            raise ValueError(f"resource type {v!r} is not in the policy schema ({', '.join(known)})")
        return v

    @field_validator("id", "sensitivity", "owner")
    @classmethod
    def _expr(cls, v: str | None) -> str | None:
        if v is not None:
            Expr.parse(v)
        return v


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    action: str = "mcp:call"
    action_type: str | None = None
    resource: ResourceSpec | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    annotations: dict[str, bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ToolSpec:
        if not actions.ACTION_RE.match(self.action):
            raise ValueError(f"action {self.action!r} is not of the form system:verb")
        if self.action_type is not None:
            actions.register(self.action, self.action_type)
        elif not actions.is_known(self.action):
            raise ValueError(f"action {self.action} is not known: give its action_type to register it")
        for key, expr in self.facts.items():
            if key in RESERVED_FACTS:
                raise ValueError(f"fact name {key!r} is reserved for Tether")
            if not re.match(r"^[a-z_][a-z0-9_]{0,63}$", key):
                raise ValueError(f"fact name {key!r} must be lower_snake_case")
            Expr.parse(expr)
        for key in self.annotations:
            if key not in ANNOTATION_KEYS:
                raise ValueError(f"annotation {key!r} is not one of {', '.join(ANNOTATION_KEYS)}")
        return self


class ServerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    url: str | None = None
    #: `sdk` (the mcp SDK's ClientSession, default) or `lean` (a small aiohttp client; URL servers only)
    transport: Literal["sdk", "lean"] = "sdk"
    credential: str | None = None
    timeout: float = Field(30.0, gt=0, le=3600)
    connect_timeout: float = Field(10.0, gt=0, le=120)
    max_concurrency: int = Field(16, ge=1, le=1024)
    max_sessions: int = Field(256, ge=1, le=100_000)
    #: MCP sessions one task may have open to this server at once: more lets a task's tool calls run side by
    #: side in several sessions (the SDK's server does more work per call when many share one session). Only
    #: for servers that keep no state per session: everything but tool calls stays on the first one.
    sessions_per_task: int = Field(1, ge=1, le=16)
    idle_seconds: float = Field(300.0, gt=0)
    system: str | None = None
    tools: dict[str, ToolSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _transport(self) -> ServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("a server needs exactly one of `command` (stdio) or `url` (streamable HTTP)")
        if self.url is not None:
            u = urlsplit(self.url)
            if u.scheme not in ("http", "https") or not u.hostname or u.username or u.fragment:
                raise ValueError("url must be http(s)://host[:port]/path without userinfo or fragment")
        if self.transport == "lean" and self.url is None:
            raise ValueError("transport: lean is for URL servers only")
        if self.credential and self.command is not None:
            raise ValueError("credentials are injected only into URL upstreams (give a stdio server its env)")
        return self

    @property
    def system_name(self) -> str:
        return self.system or f"mcp:{self.name}"


class McpGatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allowed_origins: list[str] = Field(default_factory=list)
    max_request_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_response_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    list_ttl: float = Field(30.0, ge=0, le=3600)
    #: show tools unprefixed (`echo` rather than `srv__echo`); only allowed with a single server
    namespace: bool = True
    servers: dict[str, ServerSpec] = Field(default_factory=dict)

    @field_validator("servers")
    @classmethod
    def _names(cls, v: dict[str, ServerSpec]) -> dict[str, ServerSpec]:
        out = {}
        for name, spec in v.items():
            if not SERVER_NAME.match(name):
                raise ValueError(f"server name {name!r} must match {SERVER_NAME.pattern} (no underscores)")
            out[name] = spec.model_copy(update={"name": name})
        return out

    @model_validator(mode="after")
    def _flat(self) -> McpGatewayConfig:
        if not self.namespace and len(self.servers) > 1:
            raise ValueError("namespace: false is only allowed with one server (tools would shadow each other)")
        return self


def load_config(path: Path | None) -> McpGatewayConfig:
    """The `mcp:` section of the gateway config; empty (no servers) when there is no file."""
    if path is None or not Path(path).exists():
        return McpGatewayConfig()
    doc: Any = yaml.safe_load(Path(path).read_text()) or {}
    return McpGatewayConfig.model_validate(doc.get("mcp") or {})


__all__ = [
    "Expr",
    "ExpressionError",
    "McpGatewayConfig",
    "Missing",
    "ResourceSpec",
    "ServerSpec",
    "ToolSpec",
    "load_config",
]
