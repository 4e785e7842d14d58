"""Resource policies (keypair, user, project): who sees them, and what the GraphQL
mutations of superadmins do.  A superadmin sees every policy; everyone else sees the
policies of what they see (their keypairs, their users, their projects)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import QuerySet

from accounts.models import (
    DefaultForUnspecified,
    KeypairResourcePolicy,
    ProjectResourcePolicy,
    User,
    UserResourcePolicy,
)
from accounts.services import inputs
from accounts.services.access import require_superadmin, visible_keypairs, visible_projects, visible_users
from accounts.services.defaults import DEFAULT_NAME
from backendai.actions import audited
from backendai.api import errors

log = logging.getLogger("accounts.services")

BIG = 2**63 - 1


def _default_for_unspecified(value) -> str:
    return inputs.choice("default_for_unspecified", value, DefaultForUnspecified.values)


def _optional_slots(name: str):
    return lambda value: None if value is None else inputs.resource_slots(name, value)


def _count(name: str, low: int = 0, high: int = inputs.INT32):
    return lambda value: inputs.integer(name, value, low, high)


def _optional_count(name: str):
    return lambda value: None if value is None else inputs.integer(name, value)


@dataclass(frozen=True)
class PolicyKind:
    label: str  # as error messages name it
    model: type[models.Model]
    fields: dict[str, Callable]  # field -> checker of a given value
    visible: Callable[[User], QuerySet]


def _visible_keypair_policies(actor: User) -> QuerySet:
    if actor.is_superadmin:
        return KeypairResourcePolicy.objects.all()
    used = visible_keypairs(actor).values("resource_policy_id")
    return KeypairResourcePolicy.objects.filter(pk__in=used)


def _visible_user_policies(actor: User) -> QuerySet:
    if actor.is_superadmin:
        return UserResourcePolicy.objects.all()
    return UserResourcePolicy.objects.filter(pk__in=visible_users(actor).values("resource_policy_id"))


def _visible_project_policies(actor: User) -> QuerySet:
    if actor.is_superadmin:
        return ProjectResourcePolicy.objects.all()
    return ProjectResourcePolicy.objects.filter(pk__in=visible_projects(actor).values("resource_policy_id"))


KEYPAIR = PolicyKind("keypair resource policy", KeypairResourcePolicy, {
    "default_for_unspecified": _default_for_unspecified,
    "total_resource_slots": lambda v: inputs.resource_slots("total_resource_slots", v),
    "max_session_lifetime": _count("max_session_lifetime"),
    "max_concurrent_sessions": _count("max_concurrent_sessions"),
    "max_concurrent_sftp_sessions": _count("max_concurrent_sftp_sessions"),
    "max_containers_per_session": _count("max_containers_per_session", 1),
    "idle_timeout": lambda v: inputs.integer("idle_timeout", v, -1, BIG),
    "allowed_vfolder_hosts": lambda v: inputs.host_permissions("allowed_vfolder_hosts", v),
    "max_pending_session_count": _optional_count("max_pending_session_count"),
    "max_pending_session_resource_slots": _optional_slots("max_pending_session_resource_slots"),
}, _visible_keypair_policies)

USER = PolicyKind("user resource policy", UserResourcePolicy, {
    "max_vfolder_count": _count("max_vfolder_count"),
    "max_quota_scope_size": lambda v: inputs.integer("max_quota_scope_size", v, -1, BIG),
    "max_session_count_per_model_session": _count("max_session_count_per_model_session"),
    "max_customized_image_count": _count("max_customized_image_count"),
}, _visible_user_policies)

PROJECT = PolicyKind("project resource policy", ProjectResourcePolicy, {
    "max_vfolder_count": _count("max_vfolder_count"),
    "max_quota_scope_size": lambda v: inputs.integer("max_quota_scope_size", v, -1, BIG),
}, _visible_project_policies)


def visible_policies(actor: User, kind: PolicyKind) -> QuerySet:
    return kind.visible(actor)


def _policy(kind: PolicyKind, name):
    policy = kind.model.objects.filter(pk=inputs.text("name", name, 256)).first()
    if policy is None:
        raise errors.object_not_found(kind.label)
    return policy


def _apply(kind: PolicyKind, policy, props: dict) -> None:
    for field, value in props.items():
        check = kind.fields.get(field)
        if check is None:
            raise errors.InvalidAPIParameters(f"{field}: not a field of a {kind.label}")
        setattr(policy, field, check(value))
    try:
        policy.full_clean()
    except ValidationError as exc:
        raise inputs.invalid(exc) from None


@audited("resource-policy", "create", "name")
@transaction.atomic
def admin_create_policy(actor: User, kind: PolicyKind, name, props: dict):
    require_superadmin(actor, f"create a {kind.label}")
    name = inputs.text("name", name, 256, blank=False)
    if kind.model.objects.filter(pk=name).exists():
        raise errors.InvalidAPIParameters(f"A {kind.label} named {name!r} already exists.")
    policy = kind.model(name=name)
    _apply(kind, policy, props)
    policy.save(force_insert=True)
    log.info("%s %s created by %s", kind.label, name, actor.pk)
    return policy


@audited("resource-policy", "modify", "name")
@transaction.atomic
def admin_modify_policy(actor: User, kind: PolicyKind, name, props: dict):
    require_superadmin(actor, f"modify a {kind.label}")
    policy = _policy(kind, name)
    _apply(kind, policy, props)
    policy.save()
    log.info("%s %s modified (%s) by %s", kind.label, policy.pk, ", ".join(sorted(props)), actor.pk)
    return policy


@audited("resource-policy", "delete", "name")
@transaction.atomic
def admin_delete_policy(actor: User, kind: PolicyKind, name) -> None:
    """Delete a policy nobody uses; the default policy stays."""
    require_superadmin(actor, f"delete a {kind.label}")
    policy = _policy(kind, name)
    if policy.pk == DEFAULT_NAME:
        raise errors.InvalidAPIParameters(f"The default {kind.label} cannot be deleted.")
    try:
        policy.delete()
    except models.ProtectedError as exc:
        raise errors.InvalidAPIParameters(
            f"The {kind.label} {policy.pk!r} is still used by {len(exc.protected_objects)} object(s).") from None
    log.info("%s %s deleted by %s", kind.label, name, actor.pk)
