"""Projects (Backend.AI's groups): the project a request names, and what the GraphQL
mutations do (create, modify including adding and removing members, delete which
deactivates, purge which removes).  A superadmin manages every project, a domain admin
those of their own domain."""
from __future__ import annotations

import logging
import uuid

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from accounts import hooks
from accounts.models import Domain, Project, ProjectMembership, ProjectResourcePolicy, ProjectType, User
from accounts.services import inputs
from accounts.services.access import administered_project, require_admin, require_domain, visible_projects
from accounts.services.defaults import ensure_defaults
from accounts.services.references import blocking_references
from backendai.actions import audited
from backendai.api import errors

log = logging.getLogger("accounts.services")


def project_for_user(user: User, name_or_id: str) -> Project:
    query = Project.objects.filter(domain_id=user.domain_id)
    project = query.filter(name=name_or_id).first()
    if project is None:
        try:
            project = query.filter(pk=name_or_id).first()
        except (ValueError, ValidationError):
            project = None
    if project is None:
        raise errors.object_not_found("group (project)")
    if not user.is_superadmin and not project.memberships.filter(user=user).exists():
        if not (user.is_domain_admin and project.domain_id == user.domain_id):
            raise errors.object_not_found("group (project)")
    return project


def listed_projects(actor: User, *, domain_name=None, is_active=None, types=None) -> QuerySet[Project]:
    """The projects the actor sees, narrowed by domain, activity and type."""
    query = visible_projects(actor).select_related("domain", "resource_policy")
    if domain_name is not None:
        query = query.filter(domain_id=inputs.text("domain_name", domain_name, 64))
    if is_active is not None:
        query = query.filter(is_active=is_active)
    if types:
        query = query.filter(type__in=[_type(t) for t in inputs.string_list("type", types)])
    return query.order_by("domain_id", "name")


def _type(value) -> str:
    """``general``/``model-store``, also spelled as Backend.AI's enum names (``GENERAL``, ``MODEL_STORE``)."""
    normal = value.lower().replace("_", "-") if isinstance(value, str) else value
    return inputs.choice("type", normal, ProjectType.values)


def _project_policy_named(name) -> ProjectResourcePolicy:
    policy = ProjectResourcePolicy.objects.filter(pk=inputs.text("resource_policy", name, 256)).first()
    if policy is None:
        raise errors.object_not_found("project resource policy")
    return policy


def _apply(project: Project, props: dict) -> None:
    """Set the given project fields, each checked first."""
    if props.get("name") is not None:
        project.name = inputs.text("name", props["name"], 64, blank=False)
    if "description" in props:
        project.description = inputs.text("description", props["description"] or "")
    if "is_active" in props:
        project.is_active = bool(props["is_active"])
    if "total_resource_slots" in props:
        project.total_resource_slots = inputs.resource_slots("total_resource_slots", props["total_resource_slots"])
    if "allowed_vfolder_hosts" in props:
        project.allowed_vfolder_hosts = inputs.host_permissions("allowed_vfolder_hosts",
                                                                props["allowed_vfolder_hosts"])
    if "integration_id" in props:
        project.integration_id = inputs.text("integration_id", props["integration_id"] or "", 512)
    if props.get("resource_policy") is not None:
        project.resource_policy = _project_policy_named(props["resource_policy"])
    if props.get("type") is not None:
        project.type = _type(props["type"])
    if "container_registry" in props:
        project.container_registry = inputs.json_object("container_registry", props["container_registry"])


def _save(project: Project) -> None:
    taken = Project.objects.filter(domain_id=project.domain_id, name=project.name).exclude(pk=project.pk)
    if taken.exists():
        raise errors.InvalidAPIParameters(f"A group named {project.name!r} already exists in {project.domain_id!r}.")
    try:
        project.full_clean()
    except ValidationError as exc:
        raise inputs.invalid(exc) from None
    project.save()


@audited("project", "create", "name")
@transaction.atomic
def admin_create_project(actor: User, name, props: dict) -> Project:
    require_admin(actor, "create groups")
    domain = Domain.objects.filter(pk=inputs.text("domain_name", props.get("domain_name"), 64)).first()
    if domain is None:
        raise errors.object_not_found("domain")
    require_domain(actor, domain.pk, "create groups")
    project = Project(domain=domain, resource_policy=ensure_defaults().project_policy)
    _apply(project, {**props, "name": name if name is not None else ""})
    _save(project)
    log.info("group %s (%s) created by %s", project.pk, project.name, actor.pk)
    return project


def _members(project: Project, user_uuids) -> list[User]:
    ids = set()
    for value in inputs.string_list("user_uuids", user_uuids if user_uuids is not None else [], max_items=1000):
        try:
            ids.add(uuid.UUID(value))
        except ValueError:
            raise errors.InvalidAPIParameters(f"user_uuids: {value[:40]!r} is not a UUID") from None
    users = list(User.objects.filter(pk__in=ids, domain_id=project.domain_id))
    if len(users) != len(ids):
        raise errors.InvalidAPIParameters(f"user_uuids: every user must exist in the domain {project.domain_id!r}")
    return users


@audited("project", "modify", "project_id")
@transaction.atomic
def admin_modify_project(actor: User, project_id, props: dict) -> Project:
    """Change a project; ``user_update_mode`` ``add``/``remove`` with ``user_uuids`` changes
    its members (users of the project's domain only)."""
    project = administered_project(actor, project_id, "modify groups")
    if props.get("domain_name") is not None and props["domain_name"] != project.domain_id:
        raise errors.InvalidAPIParameters("domain_name: a group stays in its domain")
    mode = props.get("user_update_mode")
    if mode is not None:
        mode = inputs.choice("user_update_mode", mode, ("add", "remove"))
        users = _members(project, props.get("user_uuids"))
    elif props.get("user_uuids"):
        raise errors.InvalidAPIParameters("user_uuids: give user_update_mode (add or remove) with it")
    _apply(project, props)
    _save(project)
    if mode == "add":
        ProjectMembership.objects.bulk_create([ProjectMembership(user=u, project=project) for u in users],
                                              ignore_conflicts=True)
    elif mode == "remove":
        ProjectMembership.objects.filter(project=project, user__in=users).delete()
    log.info("group %s modified (%s) by %s", project.pk, ", ".join(sorted(props)), actor.pk)
    return project


@audited("project", "delete", "project_id")
@transaction.atomic
def admin_delete_project(actor: User, project_id) -> Project:
    """Backend.AI's ``delete_group``: the project becomes inactive; ``purge_group`` removes it."""
    project = administered_project(actor, project_id, "delete groups")
    Project.objects.filter(pk=project.pk).update(is_active=False)
    project.is_active = False
    log.info("group %s deactivated by %s", project.pk, actor.pk)
    return project


@audited("project", "purge", "project_id")
@transaction.atomic
def admin_purge_project(actor: User, project_id) -> None:
    """Remove a project with its memberships, and what other apps hold of it through their
    purge handlers (``accounts.hooks``): refused while it has a live session; its ended
    sessions and its folders (trashed ones too) go."""
    project = administered_project(actor, project_id, "purge groups")
    hooks.run_purge_handlers(hooks.Purge(project, actor))
    remaining = blocking_references(project)
    if remaining:
        raise errors.InvalidAPIParameters(f"The group {project.name!r} still has {', '.join(remaining)}.")
    project.delete()
    log.info("group %s purged by %s", project_id, actor.pk)
