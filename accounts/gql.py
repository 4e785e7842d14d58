"""The accounts part of ``/admin/gql`` (client-wire.md §8): the ``keypair`` query
and its ``KeyPair``/``UserInfo`` types.  ``backendai/api/graphql.py`` merges this
``Query`` into the schema.

Secrets: ``secret_key`` stays in the schema (the client asks for it) but always
answers ``accounts.services.MASKED_SECRET``."""
from __future__ import annotations

from typing import Optional

import strawberry
from strawberry.types import Info

from accounts import services as account_services
from backendai.api.gqlkit import actor, iso_or_none


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


def keypair_of(kp) -> KeyPair:
    """A keypair as GraphQL shows it, to anyone, its owner included: the secret key is
    shown only once, in the answer that created or regenerated it, never here."""
    return KeyPair(user_id=kp.user.email, access_key=kp.access_key, secret_key=account_services.MASKED_SECRET,
                   is_active=kp.is_active, is_admin=kp.is_admin, resource_policy=kp.resource_policy_id,
                   rate_limit=kp.rate_limit, num_queries=kp.num_queries, created_at=iso_or_none(kp.created_at),
                   last_used=iso_or_none(kp.last_used),
                   user_info=UserInfo(email=kp.user.email, full_name=kp.user.full_name),
                   projects=[p.name for p in kp.user.projects.all()])


@strawberry.type
class Query:
    @strawberry.field
    def keypair(self, info: Info, domain_name: Optional[str] = None, access_key: Optional[str] = None) -> Optional[KeyPair]:
        user, own = actor(info)
        if access_key and access_key != own.access_key:
            found = account_services.visible_keypairs(user).filter(access_key=access_key).first()
            return keypair_of(found) if found else None
        return keypair_of(own)
