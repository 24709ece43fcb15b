"""Console templates keep to the rules the CSP and the escaping promise rely on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tether.console

TEMPLATES = sorted((Path(tether.console.__file__).parent / "templates").glob("*.html"))


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_marks_nothing_safe_and_has_no_inline_script_or_style(path: Path):
    """No `|safe`, no inline <script>, no on*= handlers, no style= attributes (the CSP would block them)."""
    text = path.read_text()
    assert "|safe" not in text.replace(" ", "")
    assert "autoescape false" not in text
    assert not re.search(r"<script(?![^>]*\bsrc=)", text)
    assert not re.search(r"\son[a-z]+\s*=", text)
    assert not re.search(r"\sstyle\s*=", text)


@pytest.mark.parametrize("path", [p for p in TEMPLATES if "<form" in p.read_text()], ids=lambda p: p.name)
def test_every_post_form_carries_the_csrf_field(path: Path):
    """Each form in a template includes the hidden csrf input."""
    text = path.read_text()
    forms = re.findall(r"<form[^>]*method=\"post\".*?</form>", text, flags=re.S)
    assert forms
    for form in forms:
        assert 'name="csrf"' in form
