"""The leak scanner finds an injected secret in any of its encodings, even split across chunks."""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import quote, quote_plus

import pytest

from tether.gateway.scan import LeakScanner

SECRET = "s3cr3t/" + secrets.token_urlsafe(24)  # with a "/", which some JSON encoders write as "\\/"


@pytest.mark.parametrize(
    "encoded",
    [
        SECRET.encode(),
        quote(SECRET, safe="").encode(),
        quote_plus(SECRET).encode(),
        json.dumps(SECRET).encode(),
        json.dumps(SECRET).replace("/", "\\/").encode(),
    ]
    + [base64.b64encode(b"x" * pad + SECRET.encode() + b"tail") for pad in range(3)]
    + [base64.urlsafe_b64encode(b"y" * pad + SECRET.encode()) for pad in range(3)],
)
def test_each_encoding_is_found_in_any_chunking(encoded: bytes) -> None:
    """Raw, percent-encoded, JSON-escaped and base64 at every alignment, fed in 7-byte chunks: found, nothing leaks."""
    data = b"<html>" * 50 + encoded + b"</html>" * 50
    scanner = LeakScanner([SECRET])
    sent = b""
    for i in range(0, len(data), 7):
        sent += scanner.feed(data[i : i + 7])
        if scanner.hit:
            break
    assert scanner.hit
    assert SECRET.encode()[:12] not in sent or SECRET.encode() not in sent
    assert encoded not in sent


def test_clean_data_passes_whole() -> None:
    """Without the secret, every byte comes out, in order."""
    data = secrets.token_bytes(100_000)
    scanner = LeakScanner([SECRET])
    out = b"".join(scanner.feed(data[i : i + 4096]) for i in range(0, len(data), 4096)) + scanner.flush()
    assert out == data
    assert not scanner.hit


@pytest.mark.parametrize("secret", [SECRET, "line\nbreak-" + SECRET])
def test_header_values_are_scanned_together_without_matching_across_them(secret: str) -> None:
    """`contains_any` finds a secret in any one value, and never one made of the end of a value and the next's start."""
    scanner = LeakScanner([secret])
    clean = [b"application/json", b"nosniff", b"sandbox"]
    assert not scanner.contains_any(clean)
    assert scanner.contains_any([*clean, b"x" + secret.encode() + b"y"])
    half = len(secret) // 2
    split = [secret[:half].encode(), secret[half:].encode()]
    assert not scanner.contains_any(split)
    assert not LeakScanner([]).contains_any([secret.encode()])
