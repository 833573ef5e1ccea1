"""/api/v1/projects/{project}/tag-rules and /api/v1/system/tag-rules: immutable, deny and require rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import Field

from dockyard.api.mgmt.common import CallerDep, Input, Model
from dockyard.domain.names import validate_name, validate_tag

router = APIRouter(tags=["tag rules"])
# Ids are database integers: anything past int64 is simply not a rule (400, not an overflow in the driver).
RuleId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The rule's id.")]


class TagRuleIn(Input):
    kind: Literal["immutable", "deny", "require"] = Field(description="immutable, deny or require.")
    repository_pattern: str = Field(
        "**", description="Glob with `**`; for project rules, the path inside the project (`**`, `app/*`)."
    )
    tag_pattern: str = Field(
        description="A glob such as `v*` (every kind), or `re:` and a full-match RE2 regular expression (`re:v[0-9]+`)."
    )
    description: str | None = Field(None, max_length=500)


class TagRuleOut(Model):
    id: int
    project: str | None = Field(description="null for system-wide rules.")
    kind: str
    repository_pattern: str
    tag_pattern: str
    description: str | None
    created_at: datetime
    created_by: str | None


class TagRuleTestIn(Input):
    repository: str = Field(max_length=255, description="The repository's path inside the project (`app/api` of `team/app/api`).")
    tag: str = Field(max_length=128, description="The tag to test.")


class Outcome(Model):
    allowed: bool
    reason: str | None = Field(description="The refusal a client would get, naming the rule.")


class RuleMatch(Model):
    rule: TagRuleOut
    matches: bool = Field(description="Whether the rule's tag pattern matches the tag.")


class TagRuleTestOut(Model):
    repository: str
    tag: str
    rules: list[RuleMatch] = Field(description="Every rule (project and system) that applies to the repository.")
    push: Outcome = Field(description="Creating the tag.")
    overwrite: Outcome = Field(description="Moving the existing tag to another digest.")
    delete: Outcome = Field(description="Deleting the tag.")


def _detail(rule) -> dict:
    return {"id": rule.id, "kind": rule.kind, "repository_pattern": rule.repository_pattern, "tag_pattern": rule.tag_pattern}


@router.get("/projects/{project}/tag-rules", response_model=list[TagRuleOut], summary="A project's tag rules (read-settings)")
def list_project_rules(project: str, caller: CallerDep):
    caller.require_project(project, "read-settings")
    return caller.services.tag_policy.list_rules(project)


@router.post("/projects/{project}/tag-rules", response_model=TagRuleOut, status_code=201, summary="Add a tag rule (manage-policies)")
def create_project_rule(project: str, body: TagRuleIn, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    rule = caller.services.tag_policy.create_rule(
        project, body.kind, body.repository_pattern, body.tag_pattern, body.description, caller.principal.name
    )
    caller.audit("tag-rule.create", f"project/{project} tag-rule {rule.id}", project=project, detail=_detail(rule))
    return rule


@router.post("/projects/{project}/tag-rules/test", response_model=TagRuleTestOut,
             summary="Which rules match a tag, and what a push, overwrite or delete would do (read-settings)")
def test_project_rules(project: str, body: TagRuleTestIn, caller: CallerDep):
    caller.require_project(project, "read-settings")
    repository = validate_name(f"{project}/{body.repository}")
    validate_tag(body.tag)
    result = caller.services.tag_policy.explain(repository, body.tag)
    if not caller.is_admin:
        # System rules are listed to administrators only: a project member sees what a system rule matches
        # (as a refusal names it), not who wrote it or the description it was given.
        result["rules"] = [{**m, "rule": replace(m["rule"], description=None, created_by=None)} if m["rule"].project is None
                           else m for m in result["rules"]]
    return result


@router.delete("/projects/{project}/tag-rules/{rule_id}", status_code=204, summary="Delete a tag rule (manage-policies)")
def delete_project_rule(project: str, rule_id: RuleId, caller: CallerDep):
    caller.require_project(project, "manage-policies")
    rule = caller.services.tag_policy.delete_rule(project, rule_id)
    caller.audit("tag-rule.delete", f"project/{project} tag-rule {rule.id}", project=project, detail=_detail(rule))
    return Response(status_code=204)


@router.get("/system/tag-rules", response_model=list[TagRuleOut], summary="System-wide tag rules (admin)")
def list_system_rules(caller: CallerDep):
    caller.require_admin()
    return caller.services.tag_policy.list_rules(None)


@router.post("/system/tag-rules", response_model=TagRuleOut, status_code=201, summary="Add a system-wide tag rule (admin)")
def create_system_rule(body: TagRuleIn, caller: CallerDep):
    caller.require_admin()
    rule = caller.services.tag_policy.create_rule(
        None, body.kind, body.repository_pattern, body.tag_pattern, body.description, caller.principal.name
    )
    caller.audit("tag-rule.create", f"system tag-rule {rule.id}", detail=_detail(rule))
    return rule


@router.delete("/system/tag-rules/{rule_id}", status_code=204, summary="Delete a system-wide tag rule (admin)")
def delete_system_rule(rule_id: RuleId, caller: CallerDep):
    caller.require_admin()
    rule = caller.services.tag_policy.delete_rule(None, rule_id)
    caller.audit("tag-rule.delete", f"system tag-rule {rule.id}", detail=_detail(rule))
    return Response(status_code=204)
