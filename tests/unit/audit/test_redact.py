"""Redacted prompt mode removes secrets and keeps the rest of the text."""

from __future__ import annotations

from tether.audit.redact import luhn_ok, redact

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKZ\n-----END PRIVATE KEY-----"


def test_jwt_bearer_and_private_key_are_redacted() -> None:
    """Tokens and key material never reach the content store in redacted mode."""
    out = redact(f"use {JWT} or Authorization: Bearer abcdefghijkl12345 and key {PEM} thanks")
    assert JWT not in out
    assert "abcdefghijkl12345" not in out
    assert "MC4CAQ" not in out
    assert out.startswith("use ")
    assert out.endswith(" thanks")


def test_password_assignments_and_api_keys_are_redacted() -> None:
    """password=, secret: and well-known API key shapes are replaced."""
    out = redact(
        'password=hunter2 secret: "s3 cret" sk-abcdefghijklmnopqrstuv ghp_abcdefghijklmnopqrstuvwx AKIAABCDEFGHIJKLMNOP'
    )
    for leaked in ("hunter2", "s3 cret", "sk-abcdefghijklmnop", "ghp_abcdefghij", "AKIAABCDEFGHIJKLMNOP"):
        assert leaked not in out


def test_card_numbers_pass_luhn_to_be_redacted() -> None:
    """A Luhn-valid card number is redacted; an order number of the same length is kept."""
    assert luhn_ok("4111111111111111")
    out = redact("card 4111-1111-1111-1111 order 1234567890123456")
    assert "4111" not in out
    assert "1234567890123456" in out


def test_plain_text_is_untouched() -> None:
    """Ordinary prose, dates and short numbers stay as written."""
    text = "Send the Q3 report to Bob on 2026-11-23 at 10:30, 3 copies."
    assert redact(text) == text
