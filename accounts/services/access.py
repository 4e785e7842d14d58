"""Who sees what and who manages what in accounts, in one place.

* A **superadmin** sees and manages everything.
* A **domain admin** sees the users, keypairs, projects and the domain of their own domain,
  and manages them, except superadmins (and their keypairs) and anything of another domain.
* A **user** sees themselves, their own keypairs, their domain and the projects they belong
  to, and manages none of it here (their own keypairs' activity flag aside: ``managed_keypair``).

What a caller may not see is answered as if it did not exist (``object-not-found``), so
names and ids cannot be probed; what they see but may not change is ``insufficient-privilege``."""
from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import Domain, Keypair, Project, User
from backendai.api import errors


def is_admin_like(actor: User) -> bool:
    return actor.is_superadmin or actor.is_domain_admin


def visible_users(actor: User) -> QuerySet[User]:
    if actor.is_superadmin:
        return User.objects.all()
    if actor.is_domain_admin:
        return User.objects.filter(domain_id=actor.domain_id)
    return User.objects.filter(pk=actor.pk)


def visible_keypairs(actor: User) -> QuerySet[Keypair]:
    """Superadmins see every keypair, domain admins those of their domain, users their own."""
    query = Keypair.objects.select_related("user", "resource_policy")
    if actor.is_superadmin:
        return query
    if actor.is_domain_admin:
        return query.filter(user__domain_id=actor.domain_id)
    return query.filter(user=actor)


def visible_domains(actor: User) -> QuerySet[Domain]:
    if actor.is_superadmin:
        return Domain.objects.all()
    return Domain.objects.filter(pk=actor.domain_id)


def visible_projects(actor: User) -> QuerySet[Project]:
    """Superadmins see every project, domain admins those of their domain, users those they belong to."""
    if actor.is_superadmin:
        return Project.objects.all()
    if actor.is_domain_admin:
        return Project.objects.filter(domain_id=actor.domain_id)
    return Project.objects.filter(memberships__user=actor)


def require_superadmin(actor: User, what: str) -> None:
    if not actor.is_superadmin:
        raise errors.InsufficientPrivilege(f"Only superadmins may {what}.")


def require_admin(actor: User, what: str) -> None:
    if not is_admin_like(actor):
        raise errors.InsufficientPrivilege(f"Only superadmins and domain admins may {what}.")


def require_domain(actor: User, domain_id: str, what: str) -> None:
    """The actor administers ``domain_id``: a superadmin, or the domain admin of that domain."""
    require_admin(actor, what)
    if not actor.is_superadmin and actor.domain_id != domain_id:
        raise errors.InsufficientPrivilege(f"A domain admin may {what} in their own domain only.")


def managed_keypair(actor: User, access_key: str) -> Keypair:
    keypair = visible_keypairs(actor).filter(access_key=access_key).first()
    if keypair is None:
        raise errors.object_not_found("keypair")
    if keypair.user.is_superadmin and not actor.is_superadmin:
        raise errors.InsufficientPrivilege("Only superadmins manage a superadmin's keypairs")
    return keypair


def administered_keypair(actor: User, access_key: str, what: str) -> Keypair:
    """A keypair the actor administers (``managed_keypair``, and the actor is an admin)."""
    keypair = managed_keypair(actor, access_key)
    require_admin(actor, what)
    return keypair


def administered_user(actor: User, email: str, verb: str) -> User:
    """The user with ``email`` (case-insensitive) if the actor administers them; ``verb``
    (``modify``, ``create keypairs for``...) words the refusal."""
    user = visible_users(actor).filter(email__iexact=email).first()
    if user is None:
        raise errors.object_not_found("user")
    require_admin(actor, f"{verb} users")
    if user.is_superadmin and not actor.is_superadmin:
        raise errors.InsufficientPrivilege(f"Only superadmins may {verb} a superadmin.")
    return user


def administered_project(actor: User, project_id, what: str) -> Project:
    """The project ``project_id`` (a UUID) if the actor administers it."""
    try:
        key = project_id if isinstance(project_id, uuid.UUID) else uuid.UUID(str(project_id))
    except ValueError:
        raise errors.InvalidAPIParameters("gid: not a UUID") from None
    project = visible_projects(actor).filter(pk=key).select_related("domain").first()
    if project is None:
        raise errors.object_not_found("group (project)")
    require_domain(actor, project.domain_id, what)
    return project
