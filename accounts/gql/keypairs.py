"""Keypairs in ``/admin/gql``: ``keypair`` (the caller's own, or one they may see by access
key), ``keypairs`` and ``keypair_list`` (what ``admin keypair list`` pages through), and
the mutations ``create_keypair``, ``modify_keypair`` and ``delete_keypair``.

Secrets: ``secret_key`` stays in the type (the client asks for it) and answers
``accounts.services.MASKED_SECRET``, except in the answer of ``create_keypair`` to the
caller who owns the new keypair (docs/security.md: shown to its owner once, to nobody
else).  No type has the SSH private key."""
from __future__ import annotations

import uuid
from typing import Optional

import strawberry
from django.conf import settings
from strawberry.types import Info

from accounts import hooks
from accounts import services as account_services
from backendai.api.gqlkit import actor, apply_filter, apply_order, iso_or_none, page

FIELDS = {"access_key": "access_key", "user_id": "user__email", "email": "user__email",
          "resource_policy": "resource_policy_id", "full_name": "user__full_name"}
ORDER = {**FIELDS, "created_at": "created_at", "last_used": "last_used", "rate_limit": "rate_limit",
         "num_queries": "num_queries", "is_active": "is_active", "is_admin": "is_admin"}


@strawberry.type
class UserInfo:
    email: Optional[str]
    full_name: Optional[str]


@strawberry.type
class KeyPair:
    user_id: str
    access_key: str
    secret_key: str
    is_active: bool
    is_admin: bool
    resource_policy: str
    rate_limit: int
    num_queries: int
    created_at: Optional[str]
    last_used: Optional[str]
    user_info: UserInfo
    projects: list[str]
    modified_at: Optional[str]
    user: uuid.UUID
    full_name: Optional[str]
    concurrency_used: Optional[int]
    ssh_public_key: Optional[str]
    bootstrap_script: Optional[str]


def keypair_of(kp, secret: Optional[str] = None, concurrency: Optional[dict] = None) -> KeyPair:
    """A keypair as GraphQL shows it: the secret key masked unless ``secret`` is given (the
    answer that created it, to its owner)."""
    return KeyPair(user_id=kp.user.email, access_key=kp.access_key, secret_key=secret or account_services.MASKED_SECRET,
                   is_active=kp.is_active, is_admin=kp.is_admin, resource_policy=kp.resource_policy_id,
                   rate_limit=kp.rate_limit, num_queries=kp.num_queries, created_at=iso_or_none(kp.created_at),
                   last_used=iso_or_none(kp.last_used),
                   user_info=UserInfo(email=kp.user.email, full_name=kp.user.full_name),
                   projects=[p.name for p in kp.user.projects.all()],
                   modified_at=iso_or_none(kp.modified_at), user=kp.user_id, full_name=kp.user.full_name,
                   concurrency_used=(concurrency or {}).get(kp.access_key),
                   ssh_public_key=kp.ssh_public_key or None, bootstrap_script=kp.bootstrap_script)


def keypairs_of(keypairs) -> list[KeyPair]:
    keypairs = list(keypairs)
    concurrency = hooks.concurrency_used(kp.access_key for kp in keypairs)
    return [keypair_of(kp, concurrency=concurrency) for kp in keypairs]


@strawberry.type
class KeyPairList:
    items: list[KeyPair]
    total_count: int


@strawberry.input
class KeyPairInput:
    is_active: Optional[bool] = True
    is_admin: Optional[bool] = None
    resource_policy: Optional[str] = None
    rate_limit: Optional[int] = None


@strawberry.input
class ModifyKeyPairInput:
    is_active: Optional[bool] = None
    is_admin: Optional[bool] = None
    resource_policy: Optional[str] = None
    rate_limit: Optional[int] = None


@strawberry.type
class CreateKeyPair:
    ok: bool
    msg: str
    keypair: Optional[KeyPair]


@strawberry.type
class ModifyKeyPair:
    ok: bool
    msg: str


@strawberry.type
class DeleteKeyPair:
    ok: bool
    msg: str


def _listed(info: Info, email, is_active, domain_name=None):
    user, _ = actor(info)
    return account_services.listed_keypairs(user, email=email, is_active=is_active, domain_name=domain_name
                                            ).prefetch_related("user__projects")


@strawberry.type
class Query:
    @strawberry.field
    def keypair(self, info: Info, domain_name: Optional[str] = None, access_key: Optional[str] = None) -> Optional[KeyPair]:
        user, own = actor(info)
        if access_key and access_key != own.access_key:
            found = (account_services.visible_keypairs(user).filter(access_key=access_key).first()
                     if len(access_key) <= 20 else None)
            return keypairs_of([found])[0] if found else None
        return keypairs_of([own])[0]

    @strawberry.field
    def keypairs(self, info: Info, domain_name: Optional[str] = None, email: Optional[str] = None,
                 is_active: Optional[bool] = None) -> list[KeyPair]:
        query = _listed(info, email, is_active, domain_name).order_by("-created_at")
        return keypairs_of(query[:settings.GRAPHQL_MAX_LIST_SIZE])

    @strawberry.field
    def keypair_list(self, info: Info, limit: int, offset: int, domain_name: Optional[str] = None,
                     email: Optional[str] = None, is_active: Optional[bool] = None, filter: Optional[str] = None,
                     order: Optional[str] = None) -> KeyPairList:
        limit, offset = page(limit, offset)
        query = apply_filter(_listed(info, email, is_active, domain_name), filter, FIELDS)
        total = query.count()
        items = apply_order(query, order, ORDER, "-created_at")[offset:offset + limit]
        return KeyPairList(items=keypairs_of(items), total_count=total)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_keypair(self, info: Info, user_id: str, props: KeyPairInput) -> CreateKeyPair:
        user, _ = actor(info)
        keypair, secret = account_services.admin_create_keypair(
            user, user_id, is_active=True if props.is_active is None else props.is_active, is_admin=props.is_admin,
            resource_policy=props.resource_policy, rate_limit=props.rate_limit)
        return CreateKeyPair(ok=True, msg="success", keypair=keypair_of(keypair, secret=secret))

    @strawberry.mutation
    def modify_keypair(self, info: Info, access_key: str, props: ModifyKeyPairInput) -> ModifyKeyPair:
        user, _ = actor(info)
        account_services.admin_modify_keypair(user, access_key, is_active=props.is_active, is_admin=props.is_admin,
                                              resource_policy=props.resource_policy, rate_limit=props.rate_limit)
        return ModifyKeyPair(ok=True, msg="success")

    @strawberry.mutation
    def delete_keypair(self, info: Info, access_key: str) -> DeleteKeyPair:
        user, _ = actor(info)
        account_services.admin_delete_keypair(user, access_key)
        return DeleteKeyPair(ok=True, msg="success")
