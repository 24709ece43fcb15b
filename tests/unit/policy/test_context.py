"""The context Cedar sees: the full record byte for byte as before; slim projections hold what policies read."""

import json
from datetime import date, timedelta
from types import SimpleNamespace

import cedarpy
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.policy import DecisionRequest, Resource
from tether.policy.context import FULL, context_reads, template
from tether.policy.engine import _FULL_FIXED, PolicyEngine

AGENT = SimpleNamespace(id="agt_a", status="active", mode="executing", review_due=date.today() + timedelta(days=9),
                        sponsor_id="per_s", owner_team="t")  # fmt: skip


def est(condition: str) -> dict:
    doc = json.loads(cedarpy.policies_to_json_str(f"permit (principal, action, resource) when {{ {condition} }};"))
    return doc["staticPolicies"]["policy0"]


def test_context_reads_finds_every_attribute_path_a_policy_reads():
    """Attribute chains (`.`, `has`, `[...]`) become a projection; deeper paths fold into a whole parent."""
    spec = context_reads(
        [
            est('context.task.scopes.contains(context.action) && context["user"].id == "u"'),
            est("context has request && context.request has size && context.task.usage.items > 1"),
            est("context.task.usage == context.task.usage && context.task.usage.bytes > 0"),
        ]
    )
    assert spec == {
        "task": {"scopes": None, "usage": None},
        "action": None,
        "user": {"id": None},
        "request": None,
    }
    assert context_reads([est("resource.sensitivity > 1")]) == {}


def test_a_policy_using_the_whole_context_gets_all_of_it():
    """`context` used as a value (not through an attribute) means the slice sees the full record."""
    assert context_reads([est("context.approved"), est("context == context")]) is None
    assert template(None) == FULL


def test_a_slim_template_renders_the_projection_of_the_full_record():
    """Rendering a projection equals projecting the rendered full record."""
    pieces = {name: json.dumps(f"v-{name}") for name in _leaf_names()}
    full = json.loads(FULL.format_map(pieces))
    spec = {"task": {"usage": {"items": None}}, "app_only": None, "user": {"id": None}}
    slim = json.loads(template(spec).format_map(pieces))
    assert slim == {
        "user": {"id": full["user"]["id"]},
        "task": {"usage": {"items": full["task"]["usage"]["items"]}},
        "app_only": full["app_only"],
    }
    assert template({}).format_map(pieces) == "{}"


def _leaf_names() -> list[str]:
    from tether.policy.context import leaves

    return leaves()


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
number = st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.none())


@settings(max_examples=200, deadline=None)
@given(
    actors=st.lists(text, max_size=3),
    task_id=text,
    scopes=st.frozensets(text, max_size=4),
    email=text,
    groups=st.lists(text, max_size=3),
    ents=st.frozensets(text, max_size=3),
    facts=st.fixed_dictionaries(
        {}, optional={k: number for k in ("recipients", "external_recipients", "size", "items")}
    ),
    usage=st.fixed_dictionaries({}, optional={k: number for k in ("items", "bytes", "calls", "external_recipients")}),
    app_only=st.booleans(),
    approved=st.booleans(),
    breakglass=st.booleans(),
)
def test_the_full_context_is_json_dumps_of_the_record_byte_for_byte(
    actors, task_id, scopes, email, groups, ents, facts, usage, app_only, approved, breakglass
):
    """The pieces assembled by the template give exactly the text `json.dumps` gives for the record."""
    person = SimpleNamespace(id="per_p", status="active", email=email, groups=tuple(groups))
    e = PolicyEngine(None, agent_lookup={"agt_a": AGENT}.get, person_lookup=lambda i: (person, ents))
    user = e._user("per_p")
    assert user is not None
    facts = {**facts, "app_only": app_only}
    r = DecisionRequest("agt_a", "per_p", tuple(actors), task_id, scopes, "mail:read",
                        Resource("MailMessage", "m1", "s"), facts, usage)  # fmt: skip
    got = e._full_context(r, user, approved, breakglass)
    assert got is not None
    record = json.loads(got)
    f = {k: int(facts.get(k, 0) or 0) for k in ("recipients", "external_recipients", "size", "items")}
    expected = {
        "action": "mail:read",
        "user": {"id": "per_p", "email": email, "groups": list(groups), "entitlements": sorted(ents)},
        "actors": list(actors),
        "task": {
            "id": task_id,
            "scopes": sorted(scopes),
            "usage": {k: int(usage.get(k, 0) or 0) for k in ("items", "bytes", "calls", "external_recipients")},
        },
        "request": f,
        "approved": approved,
        "breakglass": breakglass,
        "app_only": app_only,
        "now": record["now"],
        "hour": record["hour"],
    }
    assert got == json.dumps(expected)
    assert record["hour"] == record["now"] // 3600 % 24
    # the size limit counts the full record, whatever the slice sends, from the pieces' lengths
    pieces, _ = e._pieces(r, user, approved, breakglass)
    assert _FULL_FIXED + sum(map(len, pieces.values())) == len(got)
    assert e._context(r, user, approved, breakglass, template({})) is not None


def test_flatten_turns_attribute_chains_into_flat_keys_and_has_into_constants():
    """`context.a.b` reads `context["a.b"]`; `has` on the fixed shape is the constant it always is."""
    from tether.policy.context import flatten

    condition = "context.task.usage.items > 1 && context has task && !(context.task has nothing)"
    policies, tmpl = flatten([est(condition + " && context.task.usage == {}")])
    body = json.dumps(policies[0]["conditions"])
    assert '"attr": "task.usage.items"' in body
    assert '"attr": "task.usage"' in body
    assert '{"Value": true}' in body
    assert '{"Value": false}' in body
    pieces = {name: str(n) for n, name in enumerate(_leaf_names())}
    flat = json.loads(tmpl.format_map(pieces))
    full = json.loads(FULL.format_map(pieces))
    assert flat == {"task.usage.items": full["task"]["usage"]["items"], "task.usage": full["task"]["usage"]}


def test_a_slice_that_leaves_the_fixed_shape_stays_nested():
    """Unknown attributes, dotted names, `has` on a string, the whole context: no flattening."""
    from tether.policy.context import flatten

    for condition in (
        'context["task.usage"] > 1',
        "context.task.idx == 1",
        "context.task.id has x",
        "context.task.scopes.x == 1",
        "context == context",
    ):
        assert flatten([est(condition)]) is None, condition
    assert flatten([est('"context" == "x"')]) is not None


def test_resource_reads_lists_the_attributes_a_slice_can_read():
    """Direct reads and `has` are listed; reads through an entity literal or an `if` keep every attribute."""
    from tether.policy.context import resource_reads

    assert resource_reads(
        [est('resource.owner == principal.sponsor.email && resource has label && context.user.id == ""')]
    ) == {"owner", "label"}
    assert resource_reads([est('resource == MailMessage::"x" && resource in MailMessage::"y"')]) == frozenset()
    assert resource_reads([est('MailMessage::"r1".owner == ""')]) is None
    assert resource_reads([est('(if context.approved then resource else resource).owner == ""')]) is None


def test_literals_named_like_est_operators_are_read_as_expressions():
    """A record literal whose attribute is called `Value` or `Var` still counts the context and resource in it."""
    from tether.policy.context import flatten, resource_reads

    whole = est('{"Value": context} == {"Value": context}')
    assert context_reads([whole]) is None
    assert flatten([whole]) is None
    inner = est('{"Var": context.task.id, "Value": resource.owner}.Var == "t"')
    assert context_reads([inner]) == {"task": {"id": None}}
    assert resource_reads([est('{"Value": resource.owner} == {"Value": ""}')]) == {"owner"}
    assert resource_reads([est('{"Value": resource}.Value.owner == ""')]) is None
    policies, tmpl = flatten([inner])
    assert '"attr": "task.id"' in json.dumps(policies[0])
    assert tmpl == '{{"task.id": {task_id}}}'
