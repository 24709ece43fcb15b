"""Bundles: bad policies are refused with file, line and message; a bad reload keeps the good bundle."""

from pathlib import Path

import pytest

from tether.policy import BundleError, PolicyEngine, load_bundle

GOOD = '@id("p")\n@reason("ok")\npermit (principal is Agent, action, resource);\n'


def write(d: Path, name: str, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return d


def problems(d: Path) -> list[str]:
    with pytest.raises(BundleError) as info:
        load_bundle(d)
    return [str(p) for p in info.value.problems]


def test_a_policy_that_does_not_parse_is_refused_with_file_and_line(tmp_path):
    """A syntax error names the file and the line of the statement that fails."""
    d = write(tmp_path / "b", "a.cedar", GOOD + '\n@id("bad")\nforbid (principal action, resource);\n')
    assert problems(d) == ["a.cedar:5: does not parse: unexpected token `action`"]


def test_an_unknown_action_is_refused(tmp_path):
    """A policy naming an action outside the catalogue never loads."""
    d = write(tmp_path / "b", "a.cedar", '@id("x")\npermit (principal, action == Action::"mail:exfiltrate", resource);')
    found = problems(d)
    assert any("unknown action(s): mail:exfiltrate" in p for p in found)


def test_a_policy_failing_schema_validation_is_refused(tmp_path):
    """An attribute the schema does not know is a validation error at load, not a runtime surprise."""
    d = write(
        tmp_path / "b", "a.cedar", GOOD + '@id("y")\nforbid (principal, action, resource) when { context.nosuch };\n'
    )
    assert problems(d) == ["a.cedar:4: schema: attribute `nosuch` in context not found"]


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ('@obligation("maybe")', '@obligation must be "approval"'),
        ('@approver("anyone")', "@approver 'anyone'"),
        ('@breakglass("sometimes")', '@breakglass must be "never"'),
    ],
)
def test_meaningful_annotations_are_checked(tmp_path, annotation, message):
    """Annotations Tether acts on only take the values it understands."""
    d = write(tmp_path / "b", "a.cedar", GOOD + f'@id("f")\n{annotation}\nforbid (principal, action, resource);\n')
    assert any(message in p for p in problems(d))


def test_policies_need_unique_ids(tmp_path):
    """Every policy has an @id, unique in the bundle (decisions and audit records name it)."""
    d = write(tmp_path / "b", "a.cedar", GOOD + "permit (principal, action, resource);\n")
    write(d, "b.cedar", GOOD)
    found = problems(d)
    assert any("needs an @id" in p for p in found)
    assert any("duplicate @id 'p'" in p for p in found)


def test_a_bad_reload_keeps_the_running_bundle(tmp_path):
    """Loading a broken bundle raises, and decisions keep using the bundle that was loaded."""
    d = write(tmp_path / "b", "a.cedar", GOOD)
    engine = PolicyEngine(d)
    good = engine.load()
    (d / "a.cedar").write_text("permit (principal,, action, resource);")
    with pytest.raises(BundleError):
        engine.load()
    assert engine.bundle is good
    assert engine.last_error
    assert "a.cedar:1" in engine.last_error
