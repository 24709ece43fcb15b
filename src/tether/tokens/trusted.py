"""External identity providers whose tokens Tether accepts as subject tokens.

Configured by `TETHER_TRUSTED_ISSUERS`: a JSON or YAML file holding a list (or
`{"issuers": [...]}`) of entries

    issuer: https://login.example.com/tenant/v2.0   # exact `iss`
    audience: api://tether                          # the `aud` these tokens must carry
    person_claim: oid                               # which claim names the person: sub | oid | email
    jwks: {"keys": [...]}                           # inline, or
    jwks_file: /etc/tether/idp-jwks.json            # a file (relative to the config file)

Each key's algorithm is fixed by its type (EdDSA, ES256, RS256), never by a token header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.tokens.jose import VerifyKey, verify_key_from_jwk


class IssuerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    person_claim: Literal["sub", "oid", "email"] = "sub"
    jwks: dict[str, Any] | None = None
    jwks_file: Path | None = None

    @model_validator(mode="after")
    def _one_jwks(self) -> IssuerConfig:
        if (self.jwks is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks or jwks_file")
        return self


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    audience: str
    person_claim: str
    keys: dict[str, VerifyKey]


def load_trusted_issuers(path: Path | None) -> dict[str, TrustedIssuer]:
    """issuer → TrustedIssuer; an empty map when no file is configured."""
    if path is None:
        return {}
    raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    entries = raw.get("issuers", []) if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of issuers")
    out: dict[str, TrustedIssuer] = {}
    for entry in entries:
        cfg = IssuerConfig.model_validate(entry)
        jwks = cfg.jwks
        if cfg.jwks_file is not None:
            file = cfg.jwks_file if cfg.jwks_file.is_absolute() else path.parent / cfg.jwks_file
            jwks = json.loads(file.read_text())
        keys_list = (jwks or {}).get("keys")
        if not isinstance(keys_list, list) or not keys_list:
            raise ValueError(f"{path}: issuer {cfg.issuer} has no keys")
        keys: dict[str, VerifyKey] = {}
        for i, jwk in enumerate(keys_list):
            key = verify_key_from_jwk(jwk)
            keys[key.kid or f"#{i}"] = key
        out[cfg.issuer] = TrustedIssuer(cfg.issuer, cfg.audience, cfg.person_claim, keys)
    return out


__all__ = ["IssuerConfig", "TrustedIssuer", "load_trusted_issuers"]
