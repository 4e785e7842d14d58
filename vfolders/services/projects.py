"""The projects a request names: the one a user may act for, and those a user may
create folders for."""
from __future__ import annotations

from accounts.models import Project, ProjectType, User
from backendai.api import errors
from vfolders.services.access import is_admin
from vfolders.services.inputs import check_text, parse_uuid


def project_for(user: User, ref) -> Project:
    """The project ``ref`` (an id or a name in the user's domain) if ``user`` belongs to it
    or administers it; not found otherwise."""
    check_text(ref, "group", max_chars=64)
    query = Project.objects.select_related("resource_policy")
    if not user.is_superadmin:
        query = query.filter(domain_id=user.domain_id)
    project_id = parse_uuid(ref)
    project = query.filter(pk=project_id).first() if project_id else None
    if project is None:
        project = query.filter(name=ref, domain_id=user.domain_id).first()
    if project is None:
        raise errors.object_not_found("group (project)", f"No such project: {ref}")
    if not (is_admin(user) or project.memberships.filter(user_id=user.pk).exists()):
        raise errors.object_not_found("group (project)", f"No such project: {ref}")
    return project


def creatable_projects(user: User) -> list[Project]:
    """Projects ``user`` may create folders for: any of the domain for admins (every
    project for superadmins), model-store projects one belongs to otherwise."""
    query = Project.objects.filter(is_active=True).order_by("domain_id", "name")
    if user.is_superadmin:
        return list(query)
    if user.is_domain_admin:
        return list(query.filter(domain_id=user.domain_id))
    return list(query.filter(type=ProjectType.MODEL_STORE, memberships__user=user))
