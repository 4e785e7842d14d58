"""Users in ``/admin/gql``: ``user`` (by email, or the caller), ``user_from_uuid``,
``users`` and ``user_list`` (what ``admin user list`` pages through), and the mutations
``create_user``, ``modify_user``, ``delete_user`` (the user becomes ``deleted``) and
``purge_user`` (the row goes).  Who sees and changes whom: ``accounts.services.access``.
Roles and statuses are Backend.AI's lower-case values (``user``, ``active``); no type
has a password."""
from __future__ import annotations

import dataclasses
import uuid
from typing import Optional

import strawberry
from django.conf import settings
from strawberry.types import Info

from accounts import services as account_services
from accounts.models import UserStatus
from backendai.api import errors
from backendai.api.gqlkit import actor, apply_filter, apply_order, iso_or_none, page

FIELDS = {"username": "username", "email": "email", "full_name": "full_name", "status": "status",
          "status_info": "status_info", "role": "role", "domain_name": "domain_id", "description": "description"}
ORDER = {**FIELDS, "uuid": "id", "created_at": "created_at", "modified_at": "modified_at",
         "need_password_change": "need_password_change"}


@strawberry.type
class UserGroup:
    id: uuid.UUID
    name: str


@strawberry.type
class User:
    id: strawberry.ID
    uuid: uuid.UUID
    username: str
    email: str
    need_password_change: bool
    full_name: str
    description: str
    is_active: bool
    status: str
    status_info: Optional[str]
    created_at: Optional[str]
    modified_at: Optional[str]
    domain_name: str
    role: str
    resource_policy: str
    allowed_client_ip: list[str]
    totp_activated: bool
    totp_activated_at: Optional[str]
    sudo_session_enabled: bool
    main_access_key: Optional[str]
    integration_id: Optional[str]
    groups: list[UserGroup]


def user_of(user) -> User:
    return User(id=strawberry.ID(str(user.pk)), uuid=user.pk, username=user.username, email=user.email,
                need_password_change=user.need_password_change, full_name=user.full_name,
                description=user.description, is_active=user.is_active, status=user.status,
                status_info=user.status_info or None, created_at=iso_or_none(user.created_at),
                modified_at=iso_or_none(user.modified_at), domain_name=user.domain_id, role=user.role,
                resource_policy=user.resource_policy_id, allowed_client_ip=[str(a) for a in user.allowed_client_ip or []],
                totp_activated=False, totp_activated_at=None, sudo_session_enabled=user.sudo_session_enabled,
                main_access_key=user.main_keypair_id, integration_id=user.integration_id or None,
                groups=[UserGroup(id=p.pk, name=p.name) for p in user.projects.all()])


@strawberry.type
class UserList:
    items: list[User]
    total_count: int


@strawberry.input
class UserInput:
    password: Optional[str] = None
    username: Optional[str] = None
    full_name: Optional[str] = None
    description: Optional[str] = None
    domain_name: Optional[str] = "default"
    role: Optional[str] = "user"
    status: Optional[str] = "active"
    is_active: Optional[bool] = None  # deprecated in Backend.AI: ``status`` decides
    need_password_change: Optional[bool] = False
    allowed_client_ip: Optional[list[str]] = None
    totp_activated: Optional[bool] = False
    resource_policy: Optional[str] = None
    sudo_session_enabled: Optional[bool] = False
    group_ids: Optional[list[str]] = None
    container_uid: Optional[int] = None  # 26.09 clients send these (null unless asked); not supported
    container_main_gid: Optional[int] = None
    container_gids: Optional[list[int]] = None


@strawberry.input
class ModifyUserInput:
    password: Optional[str] = None
    username: Optional[str] = None
    full_name: Optional[str] = None
    description: Optional[str] = None
    domain_name: Optional[str] = None
    role: Optional[str] = None
    status: Optional[str] = None
    is_active: Optional[bool] = None
    need_password_change: Optional[bool] = None
    allowed_client_ip: Optional[list[str]] = None
    totp_activated: Optional[bool] = None
    resource_policy: Optional[str] = None
    sudo_session_enabled: Optional[bool] = None
    main_access_key: Optional[str] = None
    group_ids: Optional[list[str]] = None
    container_uid: Optional[int] = None
    container_main_gid: Optional[int] = None
    container_gids: Optional[list[int]] = None


@strawberry.input
class PurgeUserInput:
    # false (the default): the user's folders that other users use are handed over to the caller
    purge_shared_vfolders: Optional[bool] = False
    # 26.x: model-serving endpoints the user owns go to the caller (this manager serves none yet)
    delegate_endpoint_ownership: Optional[bool] = False


@strawberry.type
class CreateUser:
    ok: bool
    msg: str
    user: Optional[User]


@strawberry.type
class ModifyUser:
    ok: bool
    msg: str
    user: Optional[User]


@strawberry.type
class DeleteUser:
    ok: bool
    msg: str


@strawberry.type
class PurgeUser:
    ok: bool
    msg: str


def _container_ids(props) -> None:
    if (props.container_uid, props.container_main_gid, props.container_gids) != (None, None, None):
        raise errors.InvalidAPIParameters("container_uid, container_main_gid, container_gids: not supported by "
                                          "this manager")


def _status(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    status = value.strip().lower()
    if status not in UserStatus.values:
        raise errors.InvalidAPIParameters(f"status: one of {', '.join(UserStatus.values)}")
    return status


def _listed(info: Info, domain_name, group_id, is_active, status):
    user, _ = actor(info)
    query = account_services.visible_users(user).prefetch_related("projects")
    if domain_name is not None:
        query = query.filter(domain_id=domain_name)
    if group_id is not None:
        query = query.filter(memberships__project_id=group_id)
    status = _status(status)
    if status is not None:
        query = query.filter(status=status)
    elif is_active is not None:
        query = query.filter(status=UserStatus.ACTIVE) if is_active else query.exclude(status=UserStatus.ACTIVE)
    return query


@strawberry.type
class Query:
    @strawberry.field
    def user(self, info: Info, domain_name: Optional[str] = None, email: Optional[str] = None) -> Optional[User]:
        """The user with ``email`` among those the caller sees (null otherwise), or the caller."""
        user, _ = actor(info)
        if email is None:
            return user_of(user)
        query = account_services.visible_users(user).filter(email__iexact=email[:254])
        if domain_name is not None:
            query = query.filter(domain_id=domain_name)
        found = query.first()
        return user_of(found) if found else None

    @strawberry.field
    def user_from_uuid(self, info: Info, domain_name: Optional[str] = None,
                       user_id: Optional[strawberry.ID] = None) -> Optional[User]:
        user, _ = actor(info)
        if user_id is None:
            return user_of(user)
        try:
            key = uuid.UUID(str(user_id)[:64])
        except ValueError:
            raise errors.InvalidAPIParameters("user_id: not a UUID") from None
        query = account_services.visible_users(user).filter(pk=key)
        if domain_name is not None:
            query = query.filter(domain_id=domain_name)
        found = query.first()
        return user_of(found) if found else None

    @strawberry.field
    def users(self, info: Info, domain_name: Optional[str] = None, group_id: Optional[uuid.UUID] = None,
              is_active: Optional[bool] = None, status: Optional[str] = None) -> list[User]:
        query = _listed(info, domain_name, group_id, is_active, status).order_by("-created_at")
        return [user_of(u) for u in query[:settings.GRAPHQL_MAX_LIST_SIZE]]

    @strawberry.field
    def user_list(self, info: Info, limit: int, offset: int, filter: Optional[str] = None,
                  order: Optional[str] = None, domain_name: Optional[str] = None, group_id: Optional[uuid.UUID] = None,
                  is_active: Optional[bool] = None, status: Optional[str] = None) -> UserList:
        limit, offset = page(limit, offset)
        query = apply_filter(_listed(info, domain_name, group_id, is_active, status), filter, FIELDS)
        total = query.count()
        items = apply_order(query, order, ORDER, "-created_at")[offset:offset + limit]
        return UserList(items=[user_of(u) for u in items], total_count=total)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_user(self, info: Info, email: str, props: UserInput) -> CreateUser:
        user, _ = actor(info)
        _container_ids(props)
        created = account_services.admin_create_user(
            user, email=email, password=props.password, domain_name=props.domain_name or "default",
            username=props.username, full_name=props.full_name or "", description=props.description or "",
            role=props.role or "user", status=props.status or "active",
            need_password_change=bool(props.need_password_change), allowed_client_ip=props.allowed_client_ip,
            sudo_session_enabled=bool(props.sudo_session_enabled), group_ids=props.group_ids,
            resource_policy=props.resource_policy, totp_activated=bool(props.totp_activated))
        return CreateUser(ok=True, msg="success", user=user_of(created))

    @strawberry.mutation
    def modify_user(self, info: Info, email: str, props: ModifyUserInput) -> ModifyUser:
        user, _ = actor(info)
        _container_ids(props)
        changes = {k: v for k, v in dataclasses.asdict(props).items()
                   if v is not None and k not in ("is_active", "container_uid", "container_main_gid", "container_gids")}
        if props.is_active is not None and "status" not in changes:
            changes["status"] = UserStatus.ACTIVE if props.is_active else UserStatus.INACTIVE
        changed = account_services.admin_modify_user(user, email, changes)
        return ModifyUser(ok=True, msg="success", user=user_of(changed))

    @strawberry.mutation
    def delete_user(self, info: Info, email: str) -> DeleteUser:
        user, _ = actor(info)
        account_services.admin_delete_user(user, email)
        return DeleteUser(ok=True, msg="success")

    @strawberry.mutation
    def purge_user(self, info: Info, email: str, props: Optional[PurgeUserInput] = None) -> PurgeUser:
        user, _ = actor(info)
        account_services.admin_purge_user(user, email,
                                          keep_shared_folders=not (props and props.purge_shared_vfolders))
        return PurgeUser(ok=True, msg="success")
