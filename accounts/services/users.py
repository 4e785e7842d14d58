"""Users: creation (with a main keypair and the default project), login, passwords, roles,
and the administration the GraphQL mutations do (create, modify, delete
which deactivates, purge which removes)."""
from __future__ import annotations

import logging
import uuid

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from accounts import hooks
from accounts.models import (
    Domain,
    Keypair,
    KeypairResourcePolicy,
    Project,
    ProjectMembership,
    User,
    UserResourcePolicy,
    UserRole,
    UserStatus,
)
from accounts.services import inputs
from accounts.services.access import administered_user, is_admin_like, require_admin, require_domain
from accounts.services.defaults import DEFAULT_NAME, ensure_defaults
from accounts.services.keypairs import create_keypair
from accounts.services.references import blocking_references
from backendai.actions import audited
from backendai.api import errors

log = logging.getLogger("accounts.services")


@audited("user", "create")
@transaction.atomic
def create_user(
    *,
    email: str,
    password: str | None,
    username: str | None = None,
    domain: Domain | None = None,
    role: str = UserRole.USER,
    status: str = UserStatus.ACTIVE,
    full_name: str = "",
    resource_policy: UserResourcePolicy | None = None,
    keypair_policy: KeypairResourcePolicy | None = None,
    projects: list[Project] | None = None,
    need_password_change: bool = False,
    allowed_client_ip: list[str] | None = None,
    description: str = "",
    sudo_session_enabled: bool = False,
) -> User:
    """Create a user with a main keypair; joins the domain's default project
    unless ``projects`` says otherwise."""
    defaults = ensure_defaults()
    domain = domain or defaults.domain
    email = User.objects.normalize_email(email)
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError({"email": "A user with this email already exists."})
    username = username or email.split("@")[0]
    if User.objects.filter(username=username).exists():
        raise ValidationError({"username": "A user with this username already exists."})
    user = User(
        email=email,
        username=username,
        domain=domain,
        role=role,
        status=status,
        full_name=full_name,
        resource_policy=resource_policy or defaults.user_policy,
        need_password_change=need_password_change,
        allowed_client_ip=allowed_client_ip or [],
        description=description,
        sudo_session_enabled=sudo_session_enabled,
    )
    if password:
        user.set_password(password)
        user.password_changed_at = timezone.now()
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password", "main_keypair"])
    user.save()
    if projects is None:
        projects = list(Project.objects.filter(domain=domain, name=DEFAULT_NAME))
    ProjectMembership.objects.bulk_create([ProjectMembership(user=user, project=p) for p in projects])
    keypair, _ = create_keypair(user, resource_policy=keypair_policy or defaults.keypair_policy)
    user.main_keypair = keypair
    user.save(update_fields=["main_keypair"])
    log.info("created user %s (%s) role=%s domain=%s", user.pk, user.email, user.role, user.domain_id)
    return user


@audited("user", "set-status", "users")
def set_user_status(users, status: str, actor: User | None = None) -> int:
    """Change the status of users; deactivated users can no longer log in or sign calls."""
    ids = [u.pk for u in users]
    count = User.objects.filter(pk__in=ids).update(status=status, modified_at=timezone.now())
    log.info("user status -> %s for %s by %s", status, ids, getattr(actor, "pk", None))
    return count


@audited("user", "assign-policy", "users")
def assign_user_policy(users, policy: UserResourcePolicy) -> int:
    return User.objects.filter(pk__in=[u.pk for u in users]).update(resource_policy=policy, modified_at=timezone.now())


@audited("user", "change-password", "user")
def change_password(user: User, old_password: str, new_password: str, new_password2: str) -> None:
    if not user.check_password(old_password):
        raise errors.GenericForbidden("Old password does not match")
    if new_password != new_password2:
        raise errors.InvalidAPIParameters("new_password does not match new_password2")
    try:
        password_validation.validate_password(new_password, user)
    except ValidationError as exc:
        raise errors.InvalidAPIParameters(" ".join(exc.messages)) from None
    user.set_password(new_password)
    user.password_changed_at = timezone.now()
    user.need_password_change = False
    user.save(update_fields=["password", "password_changed_at", "need_password_change", "modified_at"])
    log.info("password changed for user %s", user.pk)


def check_login(email: str, password: str, domain_name: str | None = None) -> User:
    """Verify a login and return the user, or raise the error the API reports."""
    query = User.objects.select_related("main_keypair").filter(email__iexact=email)
    if domain_name:
        query = query.filter(domain_id=domain_name)
    user = query.first()
    if user is None or not user.check_password(password):
        raise errors.AuthorizationFailed("User credential mismatch.")
    if user.status == UserStatus.BEFORE_VERIFICATION:
        raise errors.AuthorizationFailed("This account needs email verification.")
    if not user.is_active:
        raise errors.AuthorizationFailed("User credential mismatch.")
    return user


def authorize(domain_name: str, email: str, password: str) -> tuple[User, Keypair]:
    """``POST /auth/authorize``: the user's main (or first active) keypair."""
    user = check_login(email, password, domain_name)
    keypair = user.main_keypair if user.main_keypair and user.main_keypair.is_active else None
    if keypair is None:
        keypair = user.keypairs.filter(is_active=True).order_by("created_at").first()
    if keypair is None:
        raise errors.AuthorizationFailed("The user has no active keypair.")
    return user, keypair


def roles_of(user: User, project: Project | None = None) -> dict:
    admin_like = user.role in (UserRole.SUPERADMIN, UserRole.ADMIN)
    result = {
        "global_role": "superadmin" if user.is_superadmin else "user",
        "domain_role": "admin" if admin_like else "user",
    }
    if project is not None:
        result["group_role"] = "admin" if admin_like else "user"
    return result


# --- administration (GraphQL: create_user, modify_user, delete_user, purge_user) ----------------

def _domain_named(name) -> Domain:
    domain = Domain.objects.filter(pk=inputs.text("domain_name", name, 64)).first()
    if domain is None:
        raise errors.object_not_found("domain")
    return domain


def _user_policy_named(name) -> UserResourcePolicy:
    policy = UserResourcePolicy.objects.filter(pk=inputs.text("resource_policy", name, 256)).first()
    if policy is None:
        raise errors.object_not_found("user resource policy")
    return policy


def _role(actor: User, value) -> str:
    role = inputs.choice("role", value, UserRole.values)
    if role == UserRole.SUPERADMIN and not actor.is_superadmin:
        raise errors.InsufficientPrivilege("Only superadmins may make a user a superadmin.")
    return role


def projects_of_domain(domain_id: str, group_ids) -> list[Project]:
    """The projects ``group_ids`` names, all of which must belong to ``domain_id``."""
    ids = set()
    for value in inputs.string_list("group_ids", group_ids):
        try:
            ids.add(uuid.UUID(value))
        except ValueError:
            raise errors.InvalidAPIParameters(f"group_ids: {value[:40]!r} is not a UUID") from None
    projects = list(Project.objects.filter(pk__in=ids, domain_id=domain_id))
    if len(projects) != len(ids):
        raise errors.InvalidAPIParameters(f"group_ids: every group must exist in the domain {domain_id!r}")
    return projects


def _check_password(password, user: User) -> str:
    if not isinstance(password, str) or not password or len(password) > 256:
        raise errors.InvalidAPIParameters("password: 1 to 256 characters are required")
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise errors.InvalidAPIParameters("password: " + " ".join(exc.messages)) from None
    return password


def _unsupported(**values) -> None:
    for name, value in values.items():
        if value:
            raise errors.InvalidAPIParameters(f"{name}: not supported by this manager")


def _free_username(email: str) -> str:
    """The local part of the email, or the whole email when another user has that name."""
    local = email.split("@")[0]
    return local if not User.objects.filter(username=local).exists() else email


@audited("user", "create", "email")
@transaction.atomic
def admin_create_user(actor: User, *, email, password, domain_name, username=None, full_name="",
                      description="", role=UserRole.USER, status=UserStatus.ACTIVE, need_password_change=False,
                      allowed_client_ip=None, sudo_session_enabled=False, group_ids=None, resource_policy=None,
                      totp_activated=False) -> User:
    """A user created by a superadmin (any domain) or a domain admin (their own domain, never
    a superadmin); the new user has a main keypair and joins ``group_ids`` (default: the
    domain's default project)."""
    require_admin(actor, "create users")
    domain = _domain_named(domain_name)
    require_domain(actor, domain.pk, "create users")
    role = _role(actor, role)
    _unsupported(totp_activated=totp_activated)
    email = inputs.text("email", email, 64, blank=False)
    try:
        validate_email(email)
    except ValidationError:
        raise errors.InvalidAPIParameters("email: not a valid email address") from None
    username = inputs.text("username", username or "", 64) or _free_username(email)
    candidate = User(email=email, username=username, full_name=inputs.text("full_name", full_name or "", 64))
    _check_password(password, candidate)
    projects = projects_of_domain(domain.pk, group_ids) if group_ids is not None else None
    try:
        user = create_user(
            email=email, password=password, username=username, domain=domain, role=role,
            status=inputs.choice("status", status, UserStatus.values), full_name=candidate.full_name,
            description=inputs.text("description", description or ""),
            resource_policy=_user_policy_named(resource_policy) if resource_policy is not None else None,
            projects=projects, need_password_change=bool(need_password_change),
            allowed_client_ip=inputs.api_client_ips(allowed_client_ip), sudo_session_enabled=bool(sudo_session_enabled))
    except ValidationError as exc:
        raise inputs.invalid(exc) from None
    log.info("user %s created by %s", user.pk, actor.pk)
    return user


def _set_main_keypair(user: User, access_key) -> None:
    keypair = Keypair.objects.filter(pk=inputs.text("main_access_key", access_key, 20), user=user).first()
    if keypair is None:
        raise errors.InvalidAPIParameters("main_access_key: not a keypair of this user")
    user.main_keypair = keypair


def _move_domain(actor: User, user: User, domain_name) -> None:
    domain = _domain_named(domain_name)
    if domain.pk == user.domain_id:
        return
    require_domain(actor, domain.pk, "move users")
    ProjectMembership.objects.filter(user=user).exclude(project__domain_id=domain.pk).delete()
    user.domain = domain


@audited("user", "modify", "email")
@transaction.atomic
def admin_modify_user(actor: User, email, changes: dict) -> User:
    """Change a user the actor administers.  ``changes`` holds the fields given (Backend.AI's
    ModifyUserInput: username, password, full_name, description, domain_name, role, status,
    need_password_change, allowed_client_ip, sudo_session_enabled, main_access_key, group_ids,
    resource_policy); nothing is written unless every one of them is valid."""
    found = administered_user(actor, inputs.text("email", email, 64), "modify")
    user = User.objects.select_for_update().get(pk=found.pk)
    _unsupported(totp_activated=changes.pop("totp_activated", None))
    if user.pk == actor.pk and ({"role", "status", "domain_name"} & changes.keys()):
        raise errors.InsufficientPrivilege("Nobody changes their own role, status or domain.")
    if "domain_name" in changes:
        _move_domain(actor, user, changes["domain_name"])
    for field, limit in (("username", 64), ("full_name", 64), ("description", inputs.MAX_TEXT)):
        if field in changes:
            setattr(user, field, inputs.text(field, changes[field], limit, blank=field != "username"))
    if "username" in changes and User.objects.filter(username=user.username).exclude(pk=user.pk).exists():
        raise errors.InvalidAPIParameters("username: a user with this username already exists")
    role_before = user.role
    if "role" in changes:
        user.role = _role(actor, changes["role"])
    if "status" in changes:
        user.status = inputs.choice("status", changes["status"], UserStatus.values)
    for flag in ("need_password_change", "sudo_session_enabled"):
        if flag in changes:
            setattr(user, flag, bool(changes[flag]))
    if "allowed_client_ip" in changes:
        user.allowed_client_ip = inputs.api_client_ips(changes["allowed_client_ip"])
    if "main_access_key" in changes:
        _set_main_keypair(user, changes["main_access_key"])
    if "resource_policy" in changes:
        user.resource_policy = _user_policy_named(changes["resource_policy"])
    projects = projects_of_domain(user.domain_id, changes["group_ids"]) if "group_ids" in changes else None
    if "password" in changes:
        user.set_password(_check_password(changes["password"], user))
        user.password_changed_at = timezone.now()
    try:
        user.full_clean(exclude=["password", "main_keypair"])
    except ValidationError as exc:
        raise inputs.invalid(exc) from None
    user.save()
    if projects is not None:
        ProjectMembership.objects.filter(user=user).exclude(project__in=projects).delete()
        ProjectMembership.objects.bulk_create([ProjectMembership(user=user, project=p) for p in projects],
                                              ignore_conflicts=True)
    if user.role != role_before:  # a keypair's admin flag follows its owner's role
        Keypair.objects.filter(user=user).update(is_admin=is_admin_like(user), modified_at=timezone.now())
    log.info("user %s changed (%s) by %s", user.pk, ", ".join(sorted(changes)), actor.pk)
    return user


@audited("user", "delete", "email")
@transaction.atomic
def admin_delete_user(actor: User, email) -> User:
    """Backend.AI's ``delete_user``: the user becomes ``deleted`` and their keypairs inactive;
    the row, sessions and folders stay (``admin_purge_user`` removes them)."""
    user = administered_user(actor, inputs.text("email", email, 64), "delete")
    if user.pk == actor.pk:
        raise errors.InsufficientPrivilege("Nobody deletes themselves.")
    User.objects.filter(pk=user.pk).update(status=UserStatus.DELETED, modified_at=timezone.now())
    Keypair.objects.filter(user=user).update(is_active=False, modified_at=timezone.now())
    user.status = UserStatus.DELETED
    log.info("user %s deleted (deactivated) by %s", user.pk, actor.pk)
    return user


@audited("user", "purge", "email")
@transaction.atomic
def admin_purge_user(actor: User, email, *, keep_shared_folders: bool = True) -> None:
    """Remove a user with their keypairs and memberships, and what other apps hold of them
    through their purge handlers (``accounts.hooks``): refused while the user has a live
    session; their ended sessions and their folders go (the folders others use are handed
    over to ``actor`` when ``keep_shared_folders``).  Anything left that would cascade is
    named in the refusal."""
    user = administered_user(actor, inputs.text("email", email, 64), "purge")
    if user.pk == actor.pk:
        raise errors.InsufficientPrivilege("Nobody purges themselves.")
    hooks.run_purge_handlers(hooks.Purge(user, actor, keep_shared_folders=keep_shared_folders))
    remaining = blocking_references(user)
    if remaining:
        raise errors.InvalidAPIParameters(f"{user.email} still has {', '.join(remaining)}; remove them first.")
    user.delete()
    log.info("user %s purged by %s", user.pk, actor.pk)
