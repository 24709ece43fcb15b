"""Response scanning for injected credentials (raw, base64, URL-encoded, JSON-escaped), over a rolling window.

Both gateways withhold an answer that holds a credential they injected.

`LeakScanner.feed(chunk)` returns the bytes that are safe to send: it holds back the last
`longest needle - 1` bytes, so a secret split across chunks is still seen whole before any
of it leaves. Needles cover the secret as is, percent-encoded (both forms), JSON-escaped (also with `\\/`),
and base64 (standard and URL-safe) at each of the three byte alignments it can take inside
a longer base64 text.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_SECRET = 8  # shorter values would match by chance; providers' secrets are far longer


@functools.lru_cache(maxsize=4096)
def _needles(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    out: set[bytes] = set()
    for s in secrets:
        if len(s) < MIN_SECRET:
            continue
        raw = s.encode()
        escaped = json.dumps(s)[1:-1]
        # JSON-escaped as Python writes it, and with "/" as "\/" as other encoders (PHP's, for one) write it
        out.update({raw, quote(s, safe="").encode(), quote_plus(s).encode(), escaped.encode(),
                    escaped.replace("/", "\\/").encode()})  # fmt: skip
        for pad in range(3):
            for enc in (base64.b64encode, base64.urlsafe_b64encode):
                b = enc(b"\0" * pad + raw).rstrip(b"=")
                # drop the characters that mix in the neighbouring bytes
                head = {0: 0, 1: 2, 2: 3}[pad]
                tail = len(b) - 1 if (pad + len(raw)) % 3 else len(b)
                core = b[head:tail]
                if len(core) >= MIN_SECRET:
                    out.add(core)
    return tuple(sorted(out, key=len, reverse=True))


@functools.lru_cache(maxsize=4096)
def _joinable(needles: tuple[bytes, ...]) -> bool:
    return not any(b"\n" in n for n in needles)


def needles(secrets: Iterable[str]) -> tuple[bytes, ...]:
    """Every form of the secrets to look for (cached: providers hand out the same values for a while)."""
    return _needles(tuple(sorted(set(secrets))))


class LeakScanner:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.needles = needles(secrets)
        self.keep = max((len(n) for n in self.needles), default=1) - 1
        self._tail = b""
        self.hit = False

    def contains(self, data: bytes) -> bool:
        for n in self.needles:  # noqa: SIM110 — a loop, not any(<generator>): this runs on every response
            if n in data:
                return True
        return False

    def contains_any(self, values: Iterable[bytes]) -> bool:
        """Whether any of the values holds a needle: scanned as one text, each value on a line of its own
        (so no needle matches across two values), or one by one if a needle holds a line break."""
        needles = self.needles
        if not needles:
            return False
        if _joinable(needles):
            return self.contains(b"\n".join(values))
        return any(self.contains(v) for v in values)

    def feed(self, chunk: bytes) -> bytes:
        """Bytes safe to send now; sets `hit` (and returns b"") when a needle is found."""
        if not self.needles:
            return chunk
        window = self._tail + chunk
        if self.contains(window):
            self.hit = True
            return b""
        if len(window) <= self.keep:
            self._tail = window
            return b""
        cut = len(window) - self.keep
        self._tail = window[cut:]
        return window[:cut]

    def flush(self) -> bytes:
        rest, self._tail = self._tail, b""
        return rest


__all__ = ["LeakScanner", "needles"]
