"""The HTTP gateway's part of the gateway config (YAML, `TETHER_GATEWAY_CONFIG`):

    http:
      upstreams:
        m365:
          base_url: https://graph.microsoft.com      # scheme + host (+ port), no path
          route_map: graph                           # a shipped map, or a YAML file path
          credential: graph-obo                      # vault credential injected on the way out
          label_credential: graph-app                # app-only credential for the gateway's own lookups
          tenant_domains: [contoso.example]
          tls: {verify: true, ca_file: null}
          timeouts: {connect: 5, total: 60}
          max_request_bytes: 4194304                 # cap for routes without their own
          max_response_bytes: 1073741824
          redirect_hosts: []                         # hosts the gateway may follow redirects to (no credential)
          budget: {bytes: 104857600, items: 5000}    # per task; crossing it cuts the response off
          catalog: {DriveItem: {"01ABC": confidential}}   # known sensitivities, by resource type and id
          label_ttl: 300

Other top-level keys (the MCP gateway's) are left alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether.gateway.http.routes import SENSITIVITIES

UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    verify: bool = True
    ca_file: Path | None = None


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    connect: float = Field(5.0, gt=0, le=60)
    total: float = Field(60.0, gt=0, le=3600)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bytes: int | None = Field(None, ge=0)
    items: int | None = Field(None, ge=0)


class Upstream(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    base_url: str
    route_map: str = "graph"
    credential: str | None = None
    label_credential: str | None = None
    tenant_domains: list[str] = Field(default_factory=list)
    tls: TlsSettings = TlsSettings()
    timeouts: Timeouts = Timeouts()
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=0)
    max_response_bytes: int = Field(1024**3, ge=0)
    redirect_hosts: list[str] = Field(default_factory=list)
    budget: Budget = Budget()
    catalog: dict[str, dict[str, str]] = Field(default_factory=dict)
    label_ttl: float = Field(300.0, ge=0)
    #: JSON answers up to this size are parsed to rewrite paging links and strip pre-authenticated URLs
    json_rewrite_max: int = Field(16 * 1024 * 1024, ge=0)

    @field_validator("base_url")
    @classmethod
    def _origin(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("https", "http") or not u.hostname or u.query or u.fragment or u.username:
            raise ValueError("base_url must be http(s)://host[:port][/path] without query, fragment or userinfo")
        return v.rstrip("/")

    @field_validator("catalog")
    @classmethod
    def _levels(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for kind in v.values():
            for level in kind.values():
                if level not in SENSITIVITIES:
                    raise ValueError(f"catalog sensitivity {level!r} is not one of {', '.join(SENSITIVITIES)}")
        return v

    @property
    def host(self) -> str:
        return (urlsplit(self.base_url).hostname or "").lower()


class HttpGatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upstreams: dict[str, Upstream] = Field(default_factory=dict)

    @field_validator("upstreams")
    @classmethod
    def _names(cls, v: dict[str, Upstream]) -> dict[str, Upstream]:
        out = {}
        for name, up in v.items():
            if not UPSTREAM_NAME.match(name):
                raise ValueError(f"upstream name {name!r} must match {UPSTREAM_NAME.pattern}")
            out[name] = up.model_copy(update={"name": name})
        return out


def load_config(path: Path | None) -> HttpGatewayConfig:
    """The `http:` section of the gateway config; empty (no upstreams) when there is no file."""
    if path is None or not Path(path).exists():
        return HttpGatewayConfig()
    doc: Any = yaml.safe_load(Path(path).read_text()) or {}
    return HttpGatewayConfig.model_validate(doc.get("http") or {})


__all__ = ["Budget", "HttpGatewayConfig", "Timeouts", "TlsSettings", "Upstream", "load_config"]
