"""Keypairs: creation (the secret shown once, to its owner), secrets, activity, policies,
SSH keypairs, and the administration the GraphQL mutations and the admin do."""
from __future__ import annotations

import logging
import threading
import time

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from accounts.models import Keypair, KeypairResourcePolicy, User, UserRole
from accounts.services import inputs
from accounts.services.access import (
    administered_keypair,
    administered_user,
    is_admin_like,
    managed_keypair,
    visible_keypairs,
)
from accounts.services.defaults import ensure_defaults
from accounts.services.keys import generate_access_key, generate_secret_key, generate_ssh_keypair
from backendai.actions import audited
from backendai.api import errors
from backendai.prepared import Prepared

log = logging.getLogger("accounts.services")


@audited("keypair", "create")
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


@audited("keypair", "regenerate-secret", "keypair")
def regenerate_secret(keypair: Keypair) -> str:
    """A fresh secret for an existing access key; the old one stops working at once."""
    secret = generate_secret_key()
    Keypair.objects.filter(pk=keypair.pk).update(secret_key=secret, modified_at=timezone.now())
    keypair.secret_key = secret
    log.info("regenerated secret of keypair %s", keypair.access_key)
    return secret


@audited("keypair", "set-active", "keypairs")
def set_keypair_active(keypairs, active: bool, actor: User | None = None) -> int:
    keys = [k.pk for k in keypairs]
    count = Keypair.objects.filter(pk__in=keys).update(is_active=active, modified_at=timezone.now())
    log.info("keypairs %s active=%s by %s", keys, active, getattr(actor, "pk", None))
    return count


@audited("keypair", "assign-policy", "keypairs")
def assign_keypair_policy(keypairs, policy: KeypairResourcePolicy) -> int:
    return Keypair.objects.filter(pk__in=[k.pk for k in keypairs]).update(
        resource_policy=policy, modified_at=timezone.now()
    )


_authentication_read = Prepared("keypair for authentication")


def keypair_for_authentication(access_key: str) -> Keypair | None:
    """The keypair of a signed request with its user and policy (every API call: compiled once)."""
    return _authentication_read.first(
        Keypair.objects.select_related("user", "resource_policy").filter(access_key=access_key))


_uses: dict[str, list] = {}  # access key -> [calls not yet written, monotonic time of the last write]
_uses_lock = threading.Lock()


def record_keypair_use(keypair: Keypair) -> None:
    """Count a signed call: ``last_used`` and ``num_queries``.  Written at most once per
    ``KEYPAIR_USE_INTERVAL`` seconds per keypair by this process, with the calls since the last write
    added up (0: every call writes).  A write per call made every concurrent call of one keypair wait
    for the previous one's row lock and commit.  At most the last interval's calls of a process that
    stops are not counted, and ``last_used`` may lag by the interval."""
    interval = settings.KEYPAIR_USE_INTERVAL
    count = 1
    if interval > 0:
        now = time.monotonic()
        with _uses_lock:
            entry = _uses.setdefault(keypair.pk, [0, None])
            entry[0] += 1
            if entry[1] is not None and now - entry[1] < interval:
                return
            count, entry[0], entry[1] = entry[0], 0, now
    Keypair.objects.filter(pk=keypair.pk).update(last_used=timezone.now(), num_queries=F("num_queries") + count)


@audited("keypair", "set-active", "access_key")
def deactivate_own_keypair(actor: User, access_key: str, active: bool = False) -> Keypair:
    keypair = managed_keypair(actor, access_key)
    set_keypair_active([keypair], active, actor)
    keypair.is_active = active
    return keypair


@audited("keypair", "regenerate-ssh-keypair", "keypair")
def regenerate_ssh_keypair(keypair: Keypair) -> str:
    public, private = generate_ssh_keypair()
    Keypair.objects.filter(pk=keypair.pk).update(ssh_public_key=public, ssh_private_key=private)
    keypair.ssh_public_key, keypair.ssh_private_key = public, private
    return public


@audited("keypair", "upload-ssh-keypair", "keypair")
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


# --- administration (GraphQL: keypairs, keypair_list, create/modify/delete_keypair) ---------------

def listed_keypairs(actor: User, *, email: str | None = None, is_active: bool | None = None,
                    domain_name: str | None = None) -> QuerySet[Keypair]:
    """The keypairs the actor may see, narrowed by owner email, activity and domain."""
    query = visible_keypairs(actor)
    if email is not None:
        query = query.filter(user__email__iexact=inputs.text("email", email, 254))
    if is_active is not None:
        query = query.filter(is_active=is_active)
    if domain_name is not None:
        query = query.filter(user__domain_id=inputs.text("domain_name", domain_name, 64))
    return query


def keypair_policy_named(name) -> KeypairResourcePolicy:
    policy = KeypairResourcePolicy.objects.filter(pk=inputs.text("resource_policy", name, 256)).first()
    if policy is None:
        raise errors.object_not_found("keypair resource policy")
    return policy


def _check_is_admin(user: User, is_admin: bool | None) -> None:
    if is_admin and not is_admin_like(user):
        raise errors.InvalidAPIParameters(
            "is_admin: only a keypair of a domain admin or a superadmin can be an admin keypair")


@audited("keypair", "create", "email")
@transaction.atomic
def admin_create_keypair(actor: User, email: str, *, is_active: bool = True, is_admin: bool | None = None,
                         resource_policy: str | None = None, rate_limit: int | None = None,
                         ) -> tuple[Keypair, str | None]:
    """A new keypair for the user ``email``, made by an admin of that user.  Returns it with
    its secret when the actor is its owner, else with None: a secret is shown to its owner only
    (the owner gets a working one by regenerating it on their API keys page)."""
    user = administered_user(actor, inputs.text("user_id", email, 254), "create keypairs for")
    _check_is_admin(user, is_admin)
    policy = keypair_policy_named(resource_policy) if resource_policy is not None else None
    if rate_limit is not None:
        inputs.integer("rate_limit", rate_limit, 1)
    keypair, secret = create_keypair(user, resource_policy=policy, rate_limit=rate_limit, is_active=is_active)
    if is_admin is not None and keypair.is_admin != is_admin:
        Keypair.objects.filter(pk=keypair.pk).update(is_admin=is_admin)
        keypair.is_admin = is_admin
    log.info("keypair %s created for user %s by %s", keypair.access_key, user.pk, actor.pk)
    return keypair, (secret if user.pk == actor.pk else None)


@audited("keypair", "modify", "access_key")
@transaction.atomic
def admin_modify_keypair(actor: User, access_key: str, *, is_active: bool | None = None,
                         is_admin: bool | None = None, resource_policy: str | None = None,
                         rate_limit: int | None = None) -> Keypair:
    """Change a keypair.  An admin changes those of the users they administer; a user only
    switches their own keypairs on and off (as ``PATCH /keypairs/<ak>`` does)."""
    keypair = managed_keypair(actor, inputs.text("access_key", access_key, 20))
    if not is_admin_like(actor) and (is_admin, resource_policy, rate_limit) != (None, None, None):
        raise errors.InsufficientPrivilege(
            "Only superadmins and domain admins may change a keypair's policy, rate limit or admin flag.")
    _check_is_admin(keypair.user, is_admin)
    changes: dict = {}
    if is_active is not None:
        changes["is_active"] = is_active
    if is_admin is not None:
        changes["is_admin"] = is_admin
    if resource_policy is not None:
        changes["resource_policy"] = keypair_policy_named(resource_policy)
    if rate_limit is not None:
        changes["rate_limit"] = inputs.integer("rate_limit", rate_limit, 1)
    if changes:
        Keypair.objects.filter(pk=keypair.pk).update(**changes, modified_at=timezone.now())
        for field, value in changes.items():
            setattr(keypair, field, value)
        log.info("keypair %s changed (%s) by %s", keypair.access_key, ", ".join(changes), actor.pk)
    return keypair


@audited("keypair", "delete", "access_key")
@transaction.atomic
def admin_delete_keypair(actor: User, access_key: str) -> None:
    """Delete a keypair; a user's main keypair stays until another one is made main."""
    keypair = administered_keypair(actor, inputs.text("access_key", access_key, 20), "delete keypairs")
    if keypair.user.main_keypair_id == keypair.access_key:
        raise errors.InvalidAPIParameters(
            f"{keypair.access_key} is the main access key of {keypair.user.email}; make another keypair "
            "their main access key first (modify_user main_access_key).")
    keypair.delete()
    log.info("keypair %s deleted by %s", access_key, actor.pk)
