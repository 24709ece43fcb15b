"""Redaction of secrets in prompt text (`prompt_mode = "redacted"`).

Replaced by `[REDACTED:<kind>]`: PEM private keys, JWTs, bearer/basic credentials,
`password=`/`secret:`-style assignments, API-key-like strings (well-known prefixes, and
long high-entropy tokens) and payment card numbers that pass the Luhn check.
"""

from __future__ import annotations

import re

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_AUTH = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")
_ASSIGN = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|api[_-]?key|access[_-]?token|client[_-]?secret|token)\b(\s*[:=]\s*)"
    r"(\"[^\"]*\"|'[^']*'|\S+)"
)
_PREFIXED = re.compile(
    r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|\bsk-[A-Za-z0-9_-]{16,}|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{35}\b|\bglpat-[A-Za-z0-9_-]{20,}"
)
_LONG = re.compile(r"\b(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    return "[REDACTED:card]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def redact(text: str) -> str:
    """`text` with secrets replaced; the order matters (keys and JWTs before generic tokens)."""
    text = _PEM.sub("[REDACTED:private_key]", text)
    text = _JWT.sub("[REDACTED:jwt]", text)
    text = _AUTH.sub(lambda m: f"{m.group(1)} [REDACTED:credential]", text)
    text = _ASSIGN.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED:password]", text)
    text = _PREFIXED.sub("[REDACTED:api_key]", text)
    text = _CARD.sub(_card, text)
    return _LONG.sub("[REDACTED:api_key]", text)


__all__ = ["luhn_ok", "redact"]
