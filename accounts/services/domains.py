"""Domains: what the GraphQL mutations of superadmins do (create, modify including a rename,
delete which deactivates, purge which removes)."""
from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import Domain, User
from accounts.services import inputs
from accounts.services.access import require_superadmin
from accounts.services.defaults import DEFAULT_NAME
from accounts.services.references import blocking_references
from backendai.actions import audited
from backendai.api import errors

log = logging.getLogger("accounts.services")

DOMAIN_FIELDS = ("description", "is_active", "total_resource_slots", "allowed_vfolder_hosts",
                 "allowed_docker_registries", "allowed_images", "integration_id")


def domain_named(name) -> Domain:
    domain = Domain.objects.filter(pk=inputs.text("name", name, 64)).first()
    if domain is None:
        raise errors.object_not_found("domain")
    return domain


def _apply(domain: Domain, props: dict) -> None:
    """Set the given domain fields, each checked first."""
    if "description" in props:
        domain.description = inputs.text("description", props["description"] or "")
    if "is_active" in props:
        domain.is_active = bool(props["is_active"])
    if "total_resource_slots" in props:
        domain.total_resource_slots = inputs.resource_slots("total_resource_slots", props["total_resource_slots"])
    if "allowed_vfolder_hosts" in props:
        domain.allowed_vfolder_hosts = inputs.host_permissions("allowed_vfolder_hosts", props["allowed_vfolder_hosts"])
    if "allowed_docker_registries" in props:
        domain.allowed_docker_registries = inputs.string_list(
            "allowed_docker_registries", props["allowed_docker_registries"] or [], max_length=255)
    if "allowed_images" in props:
        domain.allowed_images = inputs.image_patterns("allowed_images", props["allowed_images"] or [])
    if "integration_id" in props:
        domain.integration_id = inputs.text("integration_id", props["integration_id"] or "", 512)


def _save(domain: Domain, **save) -> None:
    try:
        domain.full_clean()
    except ValidationError as exc:
        raise inputs.invalid(exc) from None
    domain.save(**save)


@audited("domain", "create", "name")
@transaction.atomic
def admin_create_domain(actor: User, name, props: dict) -> Domain:
    require_superadmin(actor, "create domains")
    name = inputs.text("name", name, 64, blank=False)
    if Domain.objects.filter(pk=name).exists():
        raise errors.InvalidAPIParameters(f"A domain named {name!r} already exists.")
    domain = Domain(name=name)
    _apply(domain, props)
    _save(domain, force_insert=True)
    log.info("domain %s created by %s", name, actor.pk)
    return domain


def _rename(domain: Domain, new_name: str) -> Domain:
    """Give a domain a new name (its primary key): a copy under the new name, every row that
    points at the old one (users, projects, and other apps' rows alike, found through the
    model's relations) moved over, then the old row removed, in the caller's transaction."""
    if domain.pk == DEFAULT_NAME:
        raise errors.InvalidAPIParameters("The default domain keeps its name.")
    if Domain.objects.filter(pk=new_name).exists():
        raise errors.InvalidAPIParameters(f"A domain named {new_name!r} already exists.")
    old_name = domain.pk
    renamed = Domain(**{f.attname: getattr(domain, f.attname) for f in Domain._meta.concrete_fields})
    renamed.name = new_name
    _save(renamed, force_insert=True)
    Domain.objects.filter(pk=new_name).update(created_at=domain.created_at)
    for relation in Domain._meta.get_fields(include_hidden=True):
        if relation.auto_created and not relation.concrete and (relation.one_to_many or relation.one_to_one):
            field = relation.field.name
            relation.related_model._base_manager.filter(**{field: old_name}).update(**{field: new_name})
    Domain.objects.filter(pk=old_name).delete()
    return Domain.objects.get(pk=new_name)


@audited("domain", "modify", "name")
@transaction.atomic
def admin_modify_domain(actor: User, name, props: dict) -> Domain:
    require_superadmin(actor, "modify domains")
    domain = domain_named(name)
    _apply(domain, props)
    _save(domain)
    new_name = props.get("name")
    if new_name is not None:
        new_name = inputs.text("name", new_name, 64, blank=False)
        if new_name != domain.pk:
            domain = _rename(domain, new_name)
    log.info("domain %s modified (%s) by %s", domain.pk, ", ".join(sorted(props)), actor.pk)
    return domain


@audited("domain", "delete", "name")
@transaction.atomic
def admin_delete_domain(actor: User, name) -> Domain:
    """Backend.AI's ``delete_domain``: the domain becomes inactive; ``purge_domain`` removes it."""
    require_superadmin(actor, "delete domains")
    domain = domain_named(name)
    Domain.objects.filter(pk=domain.pk).update(is_active=False)
    domain.is_active = False
    log.info("domain %s deactivated by %s", domain.pk, actor.pk)
    return domain


@audited("domain", "purge", "name")
@transaction.atomic
def admin_purge_domain(actor: User, name) -> None:
    """Remove a domain with its projects; refused while it has users, or while other apps
    still hold data of it or of its projects."""
    require_superadmin(actor, "purge domains")
    domain = domain_named(name)
    if domain.pk == DEFAULT_NAME:
        raise errors.InvalidAPIParameters("The default domain cannot be purged.")
    users = domain.users.count()
    if users:
        raise errors.InvalidAPIParameters(f"The domain {domain.pk!r} still has {users} user(s); purge them first.")
    remaining = blocking_references(domain)
    for project in domain.projects.all():
        remaining += [f"{item} (group {project.name})" for item in blocking_references(project)]
    if remaining:
        raise errors.InvalidAPIParameters(f"The domain {domain.pk!r} still has {', '.join(remaining)}.")
    domain.delete()
    log.info("domain %s purged by %s", name, actor.pk)
