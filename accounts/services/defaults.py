"""The default domain, project and policies every installation has."""
from __future__ import annotations

from dataclasses import dataclass

from accounts.models import Domain, KeypairResourcePolicy, Project, ProjectResourcePolicy, UserResourcePolicy

DEFAULT_NAME = "default"


@dataclass
class Defaults:
    domain: Domain
    project: Project
    keypair_policy: KeypairResourcePolicy
    user_policy: UserResourcePolicy
    project_policy: ProjectResourcePolicy


def ensure_defaults() -> Defaults:
    """The default domain, project and policies; creating only what is missing."""
    keypair_policy, _ = KeypairResourcePolicy.objects.get_or_create(name=DEFAULT_NAME)
    user_policy, _ = UserResourcePolicy.objects.get_or_create(name=DEFAULT_NAME)
    project_policy, _ = ProjectResourcePolicy.objects.get_or_create(name=DEFAULT_NAME)
    domain, _ = Domain.objects.get_or_create(name=DEFAULT_NAME, defaults={"description": "The default domain"})
    project, _ = Project.objects.get_or_create(
        domain=domain, name=DEFAULT_NAME,
        defaults={"description": "The default project", "resource_policy": project_policy},
    )
    return Defaults(domain, project, keypair_policy, user_policy, project_policy)
