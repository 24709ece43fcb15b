"""Webhook signatures and the Slack message format."""

from __future__ import annotations

import time

from tether.approvals.notify import sign, slack_message, verify_signature


def test_signature_verifies_and_binds_the_body():
    """A signature checks out for its body and fails for any other body or key."""
    body = b'{"event":"approval.requested"}'
    header = sign(b"k" * 32, body)
    assert verify_signature(b"k" * 32, header, body)
    assert not verify_signature(b"k" * 32, header, body + b" ")
    assert not verify_signature(b"x" * 32, header, body)


def test_old_signature_is_refused():
    """A captured delivery replayed after the tolerance window does not verify."""
    body = b"{}"
    header = sign(b"k", body, ts=int(time.time()) - 3600)
    assert not verify_signature(b"k", header, body, tolerance=300)
    assert not verify_signature(b"k", "garbage", body)


def test_slack_message_escapes_assistant_text_and_never_links_a_decision():
    """Assistant-controlled text cannot become a Slack link or mention; the only link opens the console."""
    msg = slack_message(
        "approval.requested",
        {"approval_id": "apr_1", "action": "<https://evil.example|Approve now> <!channel>",
         "console_url": "http://127.0.0.1:8700/console/approvals/apr_1"},
    )  # fmt: skip
    text = msg["text"]
    assert "<https://evil.example" not in text
    assert "<!channel>" not in text
    assert "&lt;https://evil.example|Approve now&gt;" in text
    assert "/approve" not in text
    assert msg["blocks"][0]["text"]["text"] == text


def test_webhook_urls_must_be_http():
    """A file: or schemeless webhook URL is refused when the notifier is built."""
    import pytest

    from tether.approvals.notify import WebhookNotifier

    with pytest.raises(ValueError, match="http"):
        WebhookNotifier(store=None, urls=["file:///etc/passwd"], secret=b"k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier(store=None, slack_urls=["hooks.slack.com/x"], secret=b"k")  # type: ignore[arg-type]
