"""Decision semantics: obligations, lifting, errors as forbids, and slicing that never changes an answer."""

import functools
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.policy import SENSITIVITY, DecisionRequest, Effect, PolicyEngine, Resource
from tether.policy.engine import PolicyEngine as _Engine
from tether.policy.schema import RESOURCE_TYPES

AGENT = SimpleNamespace(
    id="agt_a",
    status="active",
    mode="executing",
    review_due=date.today() + timedelta(days=9),
    sponsor_id="per_s",
    owner_team="t",
)
PERSON = SimpleNamespace(id="per_p", status="active", email="p@example.com", groups=("staff",))


def engine(directory: Path | None = None) -> PolicyEngine:
    e = PolicyEngine(
        directory,
        agent_lookup={"agt_a": AGENT}.get,
        person_lookup=lambda i: (PERSON, frozenset()) if i == "per_p" else None,
    )
    e.load()
    return e


@functools.cache
def _shared_engine() -> PolicyEngine:
    """One engine on the default pack for the examples of a property test (loading the pack costs ~70 ms)."""
    return engine()


def req(action: str, *, rtype="MailMessage", sensitivity="internal", facts=None, usage=None, attrs=None, scopes=None):
    return DecisionRequest(
        "agt_a",
        "per_p",
        (),
        "tsk_1",
        frozenset(scopes or [action]),
        action,
        Resource(rtype, "r1", "test", sensitivity, None, attrs or {}),
        facts or {},
        usage or {},
    )


def bundle_dir(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "bundle"
    d.mkdir(exist_ok=True)
    (d / "p.cedar").write_text(text)
    return d


def test_a_default_deny_is_never_approvable(tmp_path):
    """With no permit satisfied, a satisfied approval forbid still yields deny, not approval."""
    e = engine(bundle_dir(tmp_path, '@id("f")\n@obligation("approval")\nforbid (principal, action, resource);\n'))
    d = e.decide(req("mail:read"))
    assert d.effect is Effect.DENY
    assert d.approver is None


def test_a_policy_whose_evaluation_errors_denies(tmp_path):
    """An evaluation error counts as a satisfied forbid without obligation, so the call is denied."""
    text = (
        '@id("p")\npermit (principal, action, resource);\n'
        '@id("overflow")\n@obligation("approval")\n'
        "forbid (principal, action, resource) when { context.request.size * 9223372036854775807 > 1 };\n"
    )
    e = engine(bundle_dir(tmp_path, text))
    d = e.decide(req("mail:read", facts={"size": 5}))
    assert d.effect is Effect.DENY
    assert "overflow" in d.policy_ids
    assert e.decide(req("mail:read", facts={"size": 5}), breakglass=True).effect is Effect.DENY


def test_an_approval_lifts_only_the_forbids_it_records():
    """Lifting one approvable forbid leaves another one in force."""
    e = engine()
    r = req(
        "files:share",
        rtype="DriveItem",
        sensitivity="confidential",
        facts={"external_recipients": 1},
        usage={"items": 0},
    )
    assert e.decide(r).effect is Effect.APPROVAL_REQUIRED
    assert e.decide(r, lifted_forbids=frozenset({"delete.needs-approval"})).effect is Effect.APPROVAL_REQUIRED
    d = e.decide(r, lifted_forbids=frozenset({"external.confidential-needs-approval"}))
    assert d.effect is Effect.ALLOW
    assert d.lifted == ("external.confidential-needs-approval",)


def test_breakglass_never_turns_a_default_deny_into_an_allow():
    """Break-glass lifts forbids; it cannot invent a permit or widen the task's scope."""
    e = engine()
    assert e.decide(req("mail:send", scopes=["mail:read"]), breakglass=True).policy_ids == ("tether:scope",)


def test_requests_that_cannot_be_evaluated_are_denied_with_a_reason():
    """Unknown types, sensitivities, actions and oversized facts deny with a reason; nothing raises."""
    e = engine()
    assert e.decide(req("mail:read", rtype="Spaceship")).policy_ids == ("tether:resource-type",)
    assert e.decide(req("mail:read", sensitivity="secret")).policy_ids == ("tether:sensitivity",)
    assert e.decide(req("mail:teleport")).policy_ids == ("tether:unknown-action",)
    assert e.decide(req("mail:read", facts={"size": "lots"})).policy_ids == ("tether:request-too-large",)
    huge = req("mail:read", scopes=["mail:read", *[f"x:{i}" for i in range(20000)]])
    assert e.decide(huge).effect is Effect.DENY
    unknown_agent = DecisionRequest(
        "agt_x", "per_p", (), "t", frozenset({"mail:read"}), "mail:read", Resource("MailMessage", "m", "s")
    )
    assert e.decide(unknown_agent).policy_ids == ("tether:agent-inactive",)


def test_no_loaded_bundle_fails_closed():
    """Before any bundle loads, every request is denied."""
    e = _Engine(None)
    assert e.decide(req("mail:read")).policy_ids == ("tether:no-policy",)


# ---------------------------------------------------------------- slicing

ACTIONS = [
    "mail:read",
    "mail:send",
    "mail:delete",
    "files:share",
    "files:read",
    "git:write",
    "mcp:call",
    "calendar:write",
]
SENS = ["public", "internal", "confidential", "highly_confidential"]

requests = st.builds(
    lambda action, rtype, sens, ext, items, ro, destr, mode, overdue, lifted, bg, app_only: (
        req(
            action,
            rtype=rtype,
            sensitivity=sens,
            facts={"external_recipients": ext, "app_only": app_only},
            usage={"items": items},
            attrs={"read_only": ro, "destructive": destr},
        ),
        mode,
        overdue,
        frozenset(lifted),
        bg,
    ),
    st.sampled_from(ACTIONS),
    st.sampled_from(list(RESOURCE_TYPES)),
    st.sampled_from(SENS),
    st.integers(0, 3),
    st.sampled_from([0, 499, 500, 10_000]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["advisory", "executing"]),
    st.booleans(),
    st.sets(st.sampled_from(["external.confidential-needs-approval", "delete.needs-approval"])),
    st.booleans(),
    st.booleans(),
)


def unsliced(e: PolicyEngine, r, lifted, bg):
    """The reference the fast path must agree with: the whole bundle with the policies' own effects,
    the full context, the entities as fresh JSON text, and a second pass for the permits on a deny."""
    from tether.policy.engine import _authorize, _error_policy

    b = e.bundle
    fast = e.decide(r, lifted_forbids=lifted, breakglass=bg)
    if fast.policy_ids and fast.policy_ids[0].startswith("tether:") and fast.policy_ids[0] != "tether:default-deny":
        return fast  # refused by the code checks before Cedar runs
    principal, user = e._principal(r.agent_id), e._user(r.person_id)
    level = SENSITIVITY[r.resource.sensitivity]
    request = e._cedar_request(r, principal, user, level, bool(lifted), bg)
    entities = e._entities(r, principal, level)
    full = b.policy_set_of(list(b.policies))
    decision, reasons, errors = _authorize(request, full, entities)
    errored = {_error_policy(x) for x in errors} - {None}
    if decision == "Allow" and not errored:
        permits, forbids = reasons, []
    else:
        forbids = [x for x in reasons if b.policies[x].effect == "forbid"]
        permits = _authorize(request, b.policy_set_of([i for i, p in b.policies.items() if p.effect == "permit"]),
                             entities)[1]  # fmt: skip
    return e._resolve(b, permits, forbids, errored, lifted, bg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_sliced_and_unsliced_decisions_agree_on_the_default_pack(case):
    """For random requests, deciding on the slice equals deciding on the whole default pack."""
    r, mode, overdue, lifted, bg = case
    AGENT.mode, AGENT.review_due = mode, date.today() - timedelta(days=1 if overdue else -9)
    e = _shared_engine()
    e.invalidate()  # the agent changed, as identity tells the engine in service
    a = e.decide(r, lifted_forbids=lifted, breakglass=bg)
    b = unsliced(e, r, lifted, bg)
    assert (a.effect, a.policy_ids, a.lifted) == (b.effect, b.policy_ids, b.lifted)


TEMPLATES = [
    '@id("{i}")\npermit (principal, action == Action::"{a}", resource is {t});',
    '@id("{i}")\npermit (principal, action in Action::"{g}", resource);',
    '@id("{i}")\n@obligation("approval")\n'
    'forbid (principal, action == Action::"{a}", resource) when {{ resource.sensitivity >= {n} }};',
    '@id("{i}")\nforbid (principal, action, resource is {t}) when {{ context.request.external_recipients > {n} }};',
    '@id("{i}")\npermit (principal, action, resource) when {{ context.task.usage.items < {n}00 }};',
    '@id("{i}")\npermit (principal, action == Action::"{a}", resource == {t}::"r{n}");',
    '@id("{i}")\nforbid (principal, action, resource == {t}::"r1") when {{ resource.sensitivity > {n} }};',
    # context read in every way the slim context must cover: chains, `has`, the whole record
    '@id("{i}")\npermit (principal, action == Action::"{a}", resource) '
    "when {{ context has request && context.request has size && context.request.external_recipients < {n} }};",
    '@id("{i}")\nforbid (principal, action in Action::"{g}", resource) '
    "when {{ context.app_only && resource.owner != context.user.id }};",
    '@id("{i}")\npermit (principal, action, resource) when {{ context.task.scopes.contains(context.action) }};',
    '@id("{i}")\n@obligation("approval")\nforbid (principal, action, resource is Tool) '
    "when {{ resource.destructive && context.task.usage == context.task.usage }};",
    '@id("{i}")\npermit (principal, action == Action::"{a}", resource) when {{ context != context || {n} < 2 }};',
    '@id("{i}")\nforbid (principal, action in Action::"{g}", resource) '
    "when {{ context.request has bogus || (context has task.usage && !(context has task.nothing) && {n} > 1) }};",
    '@id("{i}")\npermit (principal, action, resource is {t}) when {{ context.user.groups.contains("staff") }};',
    # resource attributes read directly, through `has`, and through an entity literal
    '@id("{i}")\nforbid (principal, action, resource) when {{ resource has label && resource.label == "public" }};',
    '@id("{i}")\n@obligation("approval")\nforbid (principal, action == Action::"{a}", resource) '
    'when {{ {t}::"r1".sensitivity > {n} }};',
    # a record literal whose attribute is named like an EST operator
    '@id("{i}")\nforbid (principal, action, resource) when {{ {{"Value": context}}.Value.request.size > {n} }};',
]


#: a random bundle: (template, action, resource type, action group, number) for each of its policies
bundles = st.lists(
    st.tuples(
        st.integers(0, len(TEMPLATES) - 1),
        st.sampled_from(ACTIONS),
        st.sampled_from(list(RESOURCE_TYPES)),
        st.sampled_from(["read", "write", "share", "delete", "execute"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=25,
)


def random_bundle(tmp_path_factory, policies) -> Path:  # type: ignore[no-untyped-def]
    """A directory holding the bundle `policies` (drawn from `bundles`) describe."""
    text = "\n".join(
        TEMPLATES[k].format(i=f"p{n}", a=a, t=t, g=g, n=num) for n, (k, a, t, g, num) in enumerate(policies)
    )
    d = tmp_path_factory.mktemp("rb")
    (d / "p.cedar").write_text(text)
    return d


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    bundles,
    st.lists(requests, min_size=1, max_size=8),
)
def test_sliced_and_unsliced_decisions_agree_on_random_bundles(tmp_path_factory, policies, cases):
    """For a random bundle and random requests, slicing never changes a decision."""
    AGENT.mode, AGENT.review_due = "executing", date.today() + timedelta(days=9)
    e = engine(random_bundle(tmp_path_factory, policies))
    for r, _mode, _overdue, lifted, bg in cases:
        a = e.decide(r, lifted_forbids=lifted, breakglass=bg)
        b = unsliced(e, r, lifted, bg)
        assert (a.effect, a.policy_ids) == (b.effect, b.policy_ids)


def test_decision_input_round_trips_through_from_input() -> None:
    """Replay rebuilds exactly the recorded request from its stored decision input."""
    from tether.policy.model import decision_input

    req = DecisionRequest(
        agent_id="agt_1",
        person_id="per_1",
        actors=("agt_1", "agt_0"),
        task_id="tsk_1",
        scopes=frozenset({"mail:read", "mail:send"}),
        action="mail:send",
        resource=Resource(
            type="MailMessage",
            id="m1",
            system="m365.mail",
            sensitivity="confidential",
            owner="per_1",
            attrs={"k": "v"},
        ),
        facts={"recipients": ["a@x.example"], "external_recipients": 1},
        usage={"items": 3},
        constraints={"max_items": 10},
    )
    assert DecisionRequest.from_input(decision_input(req)) == req


# ------------------------------------------------------- caches and fast path


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def cached_engine(directory: Path | None, agent, person, ents: set[str]):
    clock = Clock()

    def person_lookup(i):
        return (person, frozenset(ents)) if i == person.id else None

    e = PolicyEngine(directory, agent_lookup={agent.id: agent}.get, person_lookup=person_lookup, clock=clock)
    e.load()
    return e, clock


def test_a_changed_agent_changes_the_next_decision_once_its_cache_entry_expires_or_is_invalidated():
    """The pre-parsed entity graph follows the agent: mode and review changes take effect without a restart."""
    agent = SimpleNamespace(**vars(AGENT))
    agent.mode, agent.review_due = "executing", date.today() + timedelta(days=9)
    e, clock = cached_engine(None, agent, PERSON, set())
    send = req("mail:send")
    assert e.decide(send).effect is Effect.ALLOW
    agent.mode = "advisory"
    assert e.decide(send).effect is Effect.ALLOW  # still inside the cache's lifetime
    e.invalidate("agt_a")
    d = e.decide(send)
    assert (d.effect, d.policy_ids) == (Effect.DENY, ("mode.advisory-read-only",))
    agent.mode = "executing"
    agent.review_due = date.today() - timedelta(days=1)
    clock.now += 6  # past ENTITY_TTL, no invalidation
    assert e.decide(send).policy_ids == ("review.overdue-read-only",)
    agent.review_due = date.today() + timedelta(days=9)
    clock.now += 6
    assert e.decide(send).effect is Effect.ALLOW
    agent.status = "suspended"
    e.invalidate()
    assert e.decide(send).policy_ids == ("tether:agent-inactive",)


def test_a_changed_person_entitlement_changes_the_next_decision(tmp_path):
    """`context.user` is rebuilt when the person is read again: a revoked entitlement denies at once after."""
    text = '@id("ent")\npermit (principal, action, resource) when { context.user.entitlements.contains("mail") };\n'
    ents = {"mail"}
    e, clock = cached_engine(bundle_dir(tmp_path, text), AGENT, PERSON, ents)
    assert e.decide(req("mail:read")).effect is Effect.ALLOW
    ents.clear()
    clock.now += 6
    assert e.decide(req("mail:read")).policy_ids == ("tether:default-deny",)
    ents.add("mail")
    e.invalidate("per_p")
    assert e.decide(req("mail:read")).effect is Effect.ALLOW


def test_a_resource_whose_attributes_change_under_the_same_id_is_decided_on_its_new_attributes():
    """Cached entity graphs are keyed by the resource's content, not its id."""
    AGENT.mode, AGENT.review_due = "executing", date.today() + timedelta(days=9)
    e = engine()
    tool = "mcp:call"
    safe = req(tool, rtype="Tool", attrs={"read_only": True, "destructive": False})
    risky = req(tool, rtype="Tool", attrs={"read_only": False, "destructive": True})
    for _ in range(2):
        assert e.decide(safe).effect is Effect.ALLOW
        assert e.decide(risky).effect is Effect.APPROVAL_REQUIRED
    leaving = req("files:share", rtype="DriveItem", facts={"external_recipients": 1})
    assert e.decide(leaving).effect is Effect.ALLOW
    secret = req("files:share", rtype="DriveItem", sensitivity="highly_confidential", facts={"external_recipients": 1})
    assert e.decide(secret).policy_ids == ("external.highly-confidential-never",)


def test_the_size_limit_counts_the_whole_context_even_when_the_slice_reads_none_of_it(tmp_path):
    """A slice that reads no context still refuses a request whose context is too large."""
    e = engine(bundle_dir(tmp_path, '@id("p")\npermit (principal, action, resource);\n'))
    assert e.bundle.slice_for("mail:read", "MailMessage", "r1").context == "{{}}"
    assert e.decide(req("mail:read")).effect is Effect.ALLOW
    huge = req("mail:read", scopes=["mail:read", *[f"x:{i}" for i in range(20000)]])
    assert e.decide(huge).policy_ids == ("tether:request-too-large",)


def test_a_context_cedar_refuses_is_refused_even_where_the_slice_does_not_read_it(tmp_path):
    """Numbers beyond Cedar's Long, or a lone surrogate, deny as they did when the full context was sent."""
    e = engine(
        bundle_dir(tmp_path, '@id("p")\npermit (principal, action, resource) when { context.approved == false };\n')
    )
    assert e.decide(req("mail:read")).effect is Effect.ALLOW
    for r in (
        req("mail:read", usage={"bytes": 2**64}),
        req("mail:read", facts={"size": -(2**63) - 1}),
        DecisionRequest(
            "agt_a",
            "per_p",
            ("agt_\ud800",),
            "tsk_1",
            frozenset({"mail:read"}),
            "mail:read",
            Resource("MailMessage", "r1", "test"),
        ),
    ):
        d, ref = e.decide(r), unsliced(e, r, frozenset(), False)
        assert (d.effect, d.policy_ids) == (ref.effect, ref.policy_ids) == (Effect.DENY, ("tether:default-deny",))
    fine = req("mail:read", usage={"bytes": 2**63 - 1}, facts={"size": -(2**63)})
    assert e.decide(fine).effect is Effect.ALLOW
    # a surrogate pair (an emoji) is escaped the same way, and Cedar takes it: decided as usual
    AGENT.mode, AGENT.review_due = "executing", date.today() + timedelta(days=9)
    pack = engine()
    emoji = DecisionRequest("agt_a", "per_p", ("agt_\U0001f600",), "tsk_\U0001f600", frozenset({"mail:read"}),
                            "mail:read", Resource("MailMessage", "r1", "test"), {}, {"items": 600})  # fmt: skip
    d, ref = pack.decide(emoji), unsliced(pack, emoji, frozenset(), False)
    assert (d.effect, d.policy_ids) == (ref.effect, ref.policy_ids)
    assert d.policy_ids == ("budget.bulk-read-needs-approval",)


def test_a_resource_read_through_an_entity_literal_keeps_its_attributes(tmp_path):
    """A slice that might reach the resource other than through `resource` gets all its attributes."""
    text = (
        '@id("p")\npermit (principal, action, resource);\n'
        '@id("f")\n@obligation("approval")\nforbid (principal, action, resource) '
        'when { MailMessage::"r1".sensitivity >= 2 };\n'
    )
    e = engine(bundle_dir(tmp_path, text))
    assert e.bundle.slice_for("mail:read", "MailMessage", "r1").resource_attrs is None
    for sensitivity, effect in (("confidential", Effect.APPROVAL_REQUIRED), ("public", Effect.ALLOW)):
        r = req("mail:read", sensitivity=sensitivity)
        d, ref = e.decide(r), unsliced(e, r, frozenset(), False)
        assert (d.effect, d.policy_ids) == (ref.effect, ref.policy_ids)
        assert d.effect is effect


def test_threads_share_the_pre_parsed_caches():
    """Decisions from several threads (the gateways decide off the event loop) use the same handles safely."""
    import threading

    AGENT.mode, AGENT.review_due = "executing", date.today() + timedelta(days=9)
    e = engine()
    cases = [
        (req("mail:read"), Effect.ALLOW),
        (req("mail:delete"), Effect.APPROVAL_REQUIRED),
        (req("mcp:call", rtype="Tool", attrs={"read_only": True, "destructive": False}), Effect.ALLOW),
    ]
    seen: list[bool] = []

    def run() -> None:
        for _ in range(200):
            seen.extend(e.decide(r).effect is want for r, want in cases)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 * 200 * len(cases)
    assert all(seen)


def test_an_equal_question_reuses_cedars_answer_and_any_change_is_asked_again(tmp_path, monkeypatch):
    """Cedar is asked once per distinct question; what the slice reads (usage), the resource's attributes and
    a reloaded bundle each make a new question, and each new answer is the one Cedar gives."""
    from tether.metrics import Metrics
    from tether.policy import engine as engine_module

    asked = []
    evaluate = engine_module._evaluate
    monkeypatch.setattr(engine_module, "_evaluate", lambda *a: asked.append(a) or evaluate(*a))
    text = (
        '@id("p")\npermit (principal, action, resource);\n'
        '@id("budget")\n@obligation("approval")\n'
        "forbid (principal, action, resource) when { context.task.usage.items >= 500 };\n"
    )
    metrics = Metrics()
    e = PolicyEngine(
        bundle_dir(tmp_path, text),
        agent_lookup={"agt_a": AGENT}.get,
        person_lookup=lambda i: (PERSON, frozenset()) if i == "per_p" else None,
        metrics=metrics,
    )
    e.load()

    first = e.decide(req("mail:read", usage={"items": 10}))
    again = e.decide(req("mail:read", usage={"items": 10}))
    assert (first.effect, again.effect) == (Effect.ALLOW, Effect.ALLOW)
    assert again.policy_ids == first.policy_ids == ("p",)
    assert again.id != first.id  # every decision is its own, with its own id
    assert len(asked) == 1

    over = e.decide(req("mail:read", usage={"items": 500}))
    assert over.effect is Effect.APPROVAL_REQUIRED
    assert over.policy_ids == ("budget",)
    assert len(asked) == 2
    assert e.decide(req("mail:read", usage={"items": 10}, sensitivity="confidential")).effect is Effect.ALLOW
    assert len(asked) == 3

    (tmp_path / "bundle" / "p.cedar").write_text('@id("p")\npermit (principal, action, resource) when { false };\n')
    e.load()
    assert e.decide(req("mail:read", usage={"items": 10})).effect is Effect.DENY
    assert len(asked) == 4

    def count(answer: str) -> float | None:
        return metrics.registry.get_sample_value("tether_policy_evaluations_total", {"answer": answer})

    assert (count("evaluated"), count("reused")) == (4.0, 1.0)


def test_an_answer_with_evaluation_errors_is_asked_again_every_time(tmp_path, monkeypatch):
    from tether.policy import engine as engine_module

    asked = []
    evaluate = engine_module._evaluate
    monkeypatch.setattr(engine_module, "_evaluate", lambda *a: asked.append(a) or evaluate(*a))
    text = (
        '@id("p")\npermit (principal, action, resource);\n'
        '@id("overflow")\nforbid (principal, action, resource)\n'
        "when { context.request.size * 9223372036854775807 > 1 };\n"
    )
    e = engine(bundle_dir(tmp_path, text))
    for _ in range(3):
        assert e.decide(req("mail:read", facts={"size": 5})).effect is Effect.DENY
    assert len(asked) == 3


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    bundles,
    st.sampled_from(ACTIONS),
    st.sampled_from(list(RESOURCE_TYPES)),
    st.lists(
        st.tuples(
            st.sampled_from(SENS[:2]),
            st.integers(0, 3),
            st.sampled_from([0, 500]),
            st.booleans(),
            st.booleans(),
            st.sampled_from([frozenset(), frozenset({"p0", "p1", "p2"})]),
        ),
        min_size=2,
        max_size=40,
    ),
)
def test_reused_answers_agree_with_cedar_over_repeated_questions(tmp_path_factory, policies, action, rtype, sequence):
    """One action on one resource asked again and again, with what the policies can read varying between the
    calls (sensitivity, recipients, usage, app-only, break-glass, lifted forbids): every decision of the engine
    that reuses Cedar's answers equals the reference's, which asks Cedar each time."""
    AGENT.mode, AGENT.review_due = "executing", date.today() + timedelta(days=9)
    e = engine(random_bundle(tmp_path_factory, policies))
    for sens, ext, items, app_only, bg, lifted in sequence:
        r = req(action, rtype=rtype, sensitivity=sens, facts={"external_recipients": ext, "app_only": app_only},
                usage={"items": items})  # fmt: skip
        a = e.decide(r, lifted_forbids=lifted, breakglass=bg)
        b = unsliced(e, r, lifted, bg)
        assert (a.effect, a.policy_ids, a.lifted) == (b.effect, b.policy_ids, b.lifted)
