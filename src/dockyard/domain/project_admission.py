"""Project admission: which projects a caller may enter through /v2 beyond its grants.

Two decisions that used to sit in the HTTP access gate (api/auth.py) and are domain rules, not
request handling: creating a missing project on the first push (auto_create_projects), and the
filter that limits the catalog to repositories the caller may pull. The gate only calls them.
"""

from __future__ import annotations

from dockyard.auth.authenticator import Authenticator
from dockyard.auth.principals import ANONYMOUS, Principal
from dockyard.domain.audit import AuditService
from dockyard.domain.projects import ProjectService
from dockyard.errors import Conflict, Denied
from dockyard.policy.access import AccessPolicy, project_of


class ProjectAdmission:
    def __init__(
        self, access: AccessPolicy, authenticator: Authenticator, projects: ProjectService, audit: AuditService, *, enabled: bool
    ):
        self.access = access
        self.authenticator = authenticator
        self.projects = projects
        self.audit = audit
        self.enabled = enabled  # auth_mode != "none": with access control off every repository is visible

    def create_project_on_push(self, principal: Principal, repository: str) -> None:
        """auto_create_projects: the first push into a missing project creates it, pusher as admin.

        When the project exists, the caller's push right is read from the database: a token granted push on
        a then-missing project (the auto-create grant) must not push into the project someone else created
        meanwhile. The auto-create grant of pull on a missing project is not re-checked (pulls stay a cache
        lookup); it lasts the token's lifetime (token_ttl_seconds) at most."""
        project = project_of(repository)
        account = self.authenticator.account(principal.name) if principal.name else None
        if self.access.project_exists(project):
            if account is None or "push" not in self.access.repository_actions(account, repository):
                raise Denied(f"project {project} does not exist, or you may not push in it",
                             detail=[{"Type": "repository", "Name": repository, "Action": "push"}])
            return
        if account is None or account.kind != "user":
            raise Denied(self.access.explain_denial(principal, repository, "push"))
        try:
            self.projects.create(project, public=False, creator=account)
        except Conflict:
            return  # a concurrent first push created it
        self.audit.record(actor=account, action="project.create", object=f"project {project}", project=project,
                          detail={"reason": "auto-created on first push"})

    def repository_filter(self, principal: Principal):
        """For the catalog: a SQL condition over `projects` the caller may pull from (None: sees everything).
        The account is read afresh, so a token's holder sees what its account may pull now."""
        if not self.enabled:
            return None
        account = self.authenticator.account(principal.name) if principal.name else ANONYMOUS
        return self.access.pull_condition(account)
