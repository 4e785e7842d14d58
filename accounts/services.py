"""Business rules for accounts: the only place that changes users, keypairs,
projects, domains and policies.  REST views, web views, admin actions and
management commands all call these functions."""
from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.models import (
    Domain,
    Keypair,
    KeypairResourcePolicy,
    Project,
    ProjectMembership,
    ProjectResourcePolicy,
    User,
    UserResourcePolicy,
    UserRole,
    UserStatus,
)
from backendai.api import errors

log = logging.getLogger(__name__)

DEFAULT_NAME = "default"


# --- key material -----------------------------------------------------------------------------

#: What every place that lists a secret (GraphQL ``secret_key``, the admin) shows instead of it.
#: A secret key is shown in clear only to its owner, once: in the answer that created or
#: regenerated it (and to the owner who logs in with their password, ``/auth/authorize``).
MASKED_SECRET = "********"

def generate_access_key() -> str:
    """``AKIA`` + base32 of 10 random bytes: always 20 chars of A-Z and 2-7."""
    return "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode("ascii")


def generate_secret_key() -> str:
    """40 url-safe base64 characters."""
    return secrets.token_urlsafe(30)


def generate_ssh_keypair() -> tuple[str, str]:
    """An Ed25519 pair: (OpenSSH public key, OpenSSH private key).  Ed25519 rather
    than Backend.AI's RSA-2048: as widely accepted today, and generated in microseconds."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return public.decode() + " work@backend.ai\n", private.decode()


# --- defaults ---------------------------------------------------------------------------------

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


# --- users ------------------------------------------------------------------------------------

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


def set_user_status(users, status: str, actor: User | None = None) -> int:
    """Change the status of users; deactivated users can no longer log in or sign calls."""
    ids = [u.pk for u in users]
    count = User.objects.filter(pk__in=ids).update(status=status, modified_at=timezone.now())
    log.info("user status -> %s for %s by %s", status, ids, getattr(actor, "pk", None))
    return count


def assign_user_policy(users, policy: UserResourcePolicy) -> int:
    return User.objects.filter(pk__in=[u.pk for u in users]).update(resource_policy=policy, modified_at=timezone.now())


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


# --- keypairs ---------------------------------------------------------------------------------

def create_keypair(
    user: User,
    *,
    resource_policy: KeypairResourcePolicy | None = None,
    rate_limit: int | None = None,
    is_active: bool = True,
) -> tuple[Keypair, str]:
    """A new keypair for ``user``.  Returns it with its secret, to be shown once."""
    policy = resource_policy or (user.main_keypair.resource_policy if user.main_keypair_id else None)
    if policy is None:
        policy = ensure_defaults().keypair_policy
    public, private = generate_ssh_keypair()
    secret = generate_secret_key()
    keypair = Keypair.objects.create(
        access_key=generate_access_key(),
        secret_key=secret,
        user=user,
        is_active=is_active,
        is_admin=user.role in (UserRole.SUPERADMIN, UserRole.ADMIN),
        rate_limit=rate_limit or settings.BACKEND_DEFAULT_RATE_LIMIT,
        resource_policy=policy,
        ssh_public_key=public,
        ssh_private_key=private,
    )
    log.info("created keypair %s for user %s", keypair.access_key, user.pk)
    return keypair, secret


def regenerate_secret(keypair: Keypair) -> str:
    """A fresh secret for an existing access key; the old one stops working at once."""
    secret = generate_secret_key()
    Keypair.objects.filter(pk=keypair.pk).update(secret_key=secret, modified_at=timezone.now())
    keypair.secret_key = secret
    log.info("regenerated secret of keypair %s", keypair.access_key)
    return secret


def set_keypair_active(keypairs, active: bool, actor: User | None = None) -> int:
    keys = [k.pk for k in keypairs]
    count = Keypair.objects.filter(pk__in=keys).update(is_active=active, modified_at=timezone.now())
    log.info("keypairs %s active=%s by %s", keys, active, getattr(actor, "pk", None))
    return count


def assign_keypair_policy(keypairs, policy: KeypairResourcePolicy) -> int:
    return Keypair.objects.filter(pk__in=[k.pk for k in keypairs]).update(
        resource_policy=policy, modified_at=timezone.now()
    )


def keypair_for_authentication(access_key: str) -> Keypair | None:
    return (
        Keypair.objects.select_related("user", "resource_policy").filter(access_key=access_key).first()
    )


def record_keypair_use(keypair: Keypair) -> None:
    Keypair.objects.filter(pk=keypair.pk).update(last_used=timezone.now(), num_queries=F("num_queries") + 1)


def visible_keypairs(actor: User) -> QuerySet[Keypair]:
    """Superadmins see every keypair, domain admins those of their domain, users their own."""
    query = Keypair.objects.select_related("user", "resource_policy")
    if actor.is_superadmin:
        return query
    if actor.is_domain_admin:
        return query.filter(user__domain_id=actor.domain_id)
    return query.filter(user=actor)


def managed_keypair(actor: User, access_key: str) -> Keypair:
    keypair = visible_keypairs(actor).filter(access_key=access_key).first()
    if keypair is None:
        raise errors.object_not_found("keypair")
    if keypair.user.is_superadmin and not actor.is_superadmin:
        raise errors.InsufficientPrivilege("Only superadmins manage a superadmin's keypairs")
    return keypair


def deactivate_own_keypair(actor: User, access_key: str, active: bool = False) -> Keypair:
    keypair = managed_keypair(actor, access_key)
    set_keypair_active([keypair], active, actor)
    keypair.is_active = active
    return keypair


def regenerate_ssh_keypair(keypair: Keypair) -> str:
    public, private = generate_ssh_keypair()
    Keypair.objects.filter(pk=keypair.pk).update(ssh_public_key=public, ssh_private_key=private)
    keypair.ssh_public_key, keypair.ssh_private_key = public, private
    return public


def upload_ssh_keypair(keypair: Keypair, public_key: str, private_key: str) -> None:
    public_key, private_key = (public_key or "").strip(), (private_key or "").strip()
    if not public_key.startswith(("ssh-", "ecdsa-")):
        raise errors.InvalidAPIParameters("pubkey is not an OpenSSH public key")
    try:
        loaded = serialization.load_ssh_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError, Exception):
        raise errors.InvalidAPIParameters("privkey is not a readable unencrypted private key") from None
    derived = loaded.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if public_key.split()[:2] != derived.decode().split()[:2]:
        raise errors.InvalidAPIParameters("pubkey does not match privkey")
    Keypair.objects.filter(pk=keypair.pk).update(ssh_public_key=public_key + "\n", ssh_private_key=private_key + "\n")


def visible_users(actor: User) -> QuerySet[User]:
    if actor.is_superadmin:
        return User.objects.all()
    if actor.is_domain_admin:
        return User.objects.filter(domain_id=actor.domain_id)
    return User.objects.filter(pk=actor.pk)


def dashboard_context(user: User) -> dict:
    """What the dashboard shows: domain, projects, role and resource limits."""
    keypair = user.main_keypair
    policy = keypair.resource_policy if keypair else None
    projects = list(
        Project.objects.filter(Q(memberships__user=user)).select_related("resource_policy").order_by("name")
    )
    return {
        "domain": user.domain,
        "projects": projects,
        "role": user.get_role_display(),
        "keypair_policy": policy,
        "user_policy": user.resource_policy,
        "active_keypairs": user.keypairs.filter(is_active=True).count(),
    }
