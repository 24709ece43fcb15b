"""/v1/policies (bundle status, reload) and the AuthZEN PDP (`/access/v1/evaluation[s]`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field

from tether.api.deps import AdminDep, ReaderDep, ServicesDep
from tether.api.problems import COMMON_RESPONSES
from tether.audit.model import Event
from tether.errors import InvalidRequest, Unauthenticated, Unavailable
from tether.policy import BundleError, DecisionRequest, Effect, Resource
from tether.policy.engine import RESERVED_FACTS

router = APIRouter(responses=COMMON_RESPONSES)


class PolicyStatus(BaseModel):
    bundle: str
    source: str | None
    files: list[str]
    policies: list[dict[str, Any]]
    last_error: str | None


@router.get("/v1/policies", tags=["policies"])
def policy_status(svc: ServicesDep, who: ReaderDep) -> PolicyStatus:
    """The loaded bundle: hash, files, policies with their annotations, and the last reload error."""
    engine = svc.policy
    if engine is None:
        raise Unavailable("no policy engine")
    b = engine.bundle
    policies = [
        {"id": p.id, "effect": p.effect, "file": p.file, "line": p.line, "reason": p.reason,
         "obligation": p.obligation, "approver": p.approver, "breakglass_never": p.breakglass_never}
        for p in (b.policies.values() if b else [])
    ]  # fmt: skip
    return PolicyStatus(
        bundle=engine.bundle_hash, source=b.source if b else None, files=list(b.files) if b else [],
        policies=policies, last_error=engine.last_error,
    )  # fmt: skip


@router.post("/v1/policies/reload", tags=["policies"], responses={422: {"description": "Bundle refused"}})
def reload_policies(svc: ServicesDep, who: AdminDep) -> PolicyStatus:
    """Re-read the bundle directory; a bad bundle is refused (422, file:line:message) and the running one stays."""
    if svc.policy is None:
        raise Unavailable("no policy engine")
    try:
        svc.policy.load()
    except BundleError:
        raise
    return policy_status(svc, who)


# ------------------------------------------------------------------ AuthZEN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Subject(_Strict):
    type: str = Field(max_length=50)
    id: str = Field(max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class ActionIn(_Strict):
    name: str = Field(max_length=80)
    properties: dict[str, Any] = Field(default_factory=dict)


class ResourceIn(_Strict):
    type: str = Field(max_length=50)
    id: str = Field(max_length=500)
    properties: dict[str, Any] = Field(default_factory=dict)


class Evaluation(_Strict):
    subject: Subject
    action: ActionIn
    resource: ResourceIn
    context: dict[str, Any] = Field(default_factory=dict)


class EvaluationOut(BaseModel):
    decision: bool
    context: dict[str, Any]


class Evaluations(_Strict):
    subject: Subject | None = None
    action: ActionIn | None = None
    resource: ResourceIn | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    evaluations: list[dict[str, Any]] = Field(max_length=100)


class EvaluationsOut(BaseModel):
    evaluations: list[EvaluationOut]


def _caller(svc: ServicesDep, authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("an enforcement point authenticates with an admin token (Authorization: Bearer …)")
    return svc.admin_tokens.authenticate(token.strip()).person_id


async def _evaluate(svc: ServicesDep, ev: Evaluation, caller: str) -> EvaluationOut:
    reserved = RESERVED_FACTS & set(ev.context)
    if reserved:
        raise InvalidRequest(f"reserved context keys: {', '.join(sorted(reserved))}", field="context")
    token = ev.subject.properties.get("token")
    if not isinstance(token, str) or svc.verifier is None:
        raise InvalidRequest(
            "subject.properties.token must carry the agent's task token", field="subject.properties.token"
        )
    audience = ev.subject.properties.get("audience")
    if not isinstance(audience, str):
        raise InvalidRequest(
            "subject.properties.audience names the token's resource", field="subject.properties.audience"
        )
    verified = svc.verifier.verify(token, audience=audience)
    if ev.subject.id not in (verified.agent_id, verified.person_id):
        raise InvalidRequest("subject.id does not match the task token", field="subject.id")
    props = ev.resource.properties
    req = DecisionRequest(
        agent_id=verified.agent_id, person_id=verified.person_id, actors=tuple(verified.actors[1:]),
        task_id=verified.task_id, scopes=verified.scopes, action=ev.action.name,
        resource=Resource(type=ev.resource.type, id=ev.resource.id, system=str(props.get("system", "pdp")),
                          sensitivity=str(props.get("sensitivity", "internal")), owner=props.get("owner"),
                          attrs={k: v for k, v in props.items() if k not in ("system", "sensitivity", "owner")}),
        facts=ev.context,
    )  # fmt: skip
    if svc.policy is None or svc.audit is None:
        raise Unavailable("the policy engine or the audit log is not available")
    decision = svc.policy.decide(req)
    await svc.audit.record(
        Event(
            type="policy.decided",
            actor=caller,
            task_id=verified.task_id,
            agent_id=verified.agent_id,
            person_id=verified.person_id,
            action=req.action,
            resource={"type": req.resource.type, "id": req.resource.id, "system": req.resource.system},
            decision=decision.effect.value,
            policy_ids=decision.policy_ids,
            detail={
                "decision_id": decision.id,
                "enforcement": "pdp",
                "bundle": decision.bundle,
                "reasons": list(decision.reasons),
            },
        )
    )
    return EvaluationOut(
        decision=decision.effect is Effect.ALLOW,
        context={"tether": {"effect": decision.effect.value, "decision_id": decision.id,
                            "policy_ids": list(decision.policy_ids), "reasons": list(decision.reasons),
                            "approval_id": None}},
    )  # fmt: skip


@router.post("/access/v1/evaluation", tags=["authzen"])
async def evaluation(
    body: Evaluation, svc: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> EvaluationOut:
    """OpenID AuthZEN 1.0 access evaluation. The subject is proven by its task token, never asserted."""
    return await _evaluate(svc, body, _caller(svc, authorization))


@router.post("/access/v1/evaluations", tags=["authzen"])
async def evaluations(
    body: Evaluations, svc: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> EvaluationsOut:
    """AuthZEN batch: each item inherits subject, action, resource and context defaults from the request."""
    caller = _caller(svc, authorization)
    out: list[EvaluationOut] = []
    for item in body.evaluations:
        merged: dict[str, Any] = {
            "subject": item.get("subject") or (body.subject.model_dump() if body.subject else None),
            "action": item.get("action") or (body.action.model_dump() if body.action else None),
            "resource": item.get("resource") or (body.resource.model_dump() if body.resource else None),
            "context": {**body.context, **(item.get("context") or {})},
        }
        try:
            ev = Evaluation.model_validate(merged)
        except ValueError as exc:
            raise InvalidRequest(f"evaluation {len(out)}: {str(exc).splitlines()[0]}", field="evaluations") from exc
        out.append(await _evaluate(svc, ev, caller))
    return EvaluationsOut(evaluations=out)
