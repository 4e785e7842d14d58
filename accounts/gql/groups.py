"""Groups (our projects) in ``/admin/gql``: ``group`` (by id), ``groups``,
``groups_by_name``, and the mutations ``create_group``, ``modify_group`` (with
``user_update_mode`` ``add``/``remove`` and ``user_uuids`` for members), ``delete_group``
(deactivates) and ``purge_group`` (removes).  A superadmin sees and manages every group, a
domain admin those of their domain; a user sees the groups they belong to."""
from __future__ import annotations

import dataclasses
import uuid
from typing import Optional

import strawberry
from django.conf import settings
from strawberry.types import Info

from accounts import services as account_services
from backendai.api.gqlkit import actor, iso_or_none, json_or_none


@strawberry.type
class Group:
    id: uuid.UUID
    name: str
    description: str
    is_active: bool
    created_at: Optional[str]
    modified_at: Optional[str]
    domain_name: str
    total_resource_slots: Optional[str]
    allowed_vfolder_hosts: Optional[str]
    integration_id: Optional[str]
    resource_policy: str
    type: str
    container_registry: Optional[str]


def group_of(project) -> Group:
    return Group(id=project.pk, name=project.name, description=project.description, is_active=project.is_active,
                 created_at=iso_or_none(project.created_at), modified_at=iso_or_none(project.modified_at),
                 domain_name=project.domain_id, total_resource_slots=json_or_none(project.total_resource_slots or {}),
                 allowed_vfolder_hosts=json_or_none(project.allowed_vfolder_hosts or {}),
                 integration_id=project.integration_id or None, resource_policy=project.resource_policy_id,
                 type=project.type.upper().replace("-", "_"), container_registry=json_or_none(project.container_registry))


@strawberry.input
class GroupInput:
    domain_name: Optional[str] = None
    description: Optional[str] = ""
    is_active: Optional[bool] = True
    total_resource_slots: Optional[str] = None
    allowed_vfolder_hosts: Optional[str] = None
    integration_id: Optional[str] = None
    resource_policy: Optional[str] = None
    type: Optional[str] = None
    container_registry: Optional[str] = None


@strawberry.input
class ModifyGroupInput:
    name: Optional[str] = None
    description: Optional[str] = None
    is_active: Optional[bool] = None
    domain_name: Optional[str] = None
    total_resource_slots: Optional[str] = None
    user_update_mode: Optional[str] = None
    user_uuids: Optional[list[str]] = None
    allowed_vfolder_hosts: Optional[str] = None
    integration_id: Optional[str] = None
    resource_policy: Optional[str] = None
    container_registry: Optional[str] = None


@strawberry.type
class CreateGroup:
    ok: bool
    msg: str
    group: Optional[Group]


@strawberry.type
class ModifyGroup:
    ok: bool
    msg: str
    group: Optional[Group]


@strawberry.type
class DeleteGroup:
    ok: bool
    msg: str


@strawberry.type
class PurgeGroup:
    ok: bool
    msg: str


def _given(props) -> dict:
    return {k: v for k, v in dataclasses.asdict(props).items() if v is not None}


@strawberry.type
class Query:
    @strawberry.field
    def group(self, info: Info, id: uuid.UUID, domain_name: Optional[str] = None) -> Optional[Group]:
        user, _ = actor(info)
        query = account_services.visible_projects(user).filter(pk=id)
        if domain_name is not None:
            query = query.filter(domain_id=domain_name)
        found = query.first()
        return group_of(found) if found else None

    @strawberry.field
    def groups(self, info: Info, domain_name: Optional[str] = None, is_active: Optional[bool] = None,
               type: Optional[list[str]] = None) -> list[Group]:
        user, _ = actor(info)
        query = account_services.listed_projects(user, domain_name=domain_name, is_active=is_active, types=type)
        return [group_of(p) for p in query[:settings.GRAPHQL_MAX_LIST_SIZE]]

    @strawberry.field
    def groups_by_name(self, info: Info, name: str, domain_name: Optional[str] = None) -> list[Group]:
        user, _ = actor(info)
        query = account_services.listed_projects(user, domain_name=domain_name).filter(name=name)
        return [group_of(p) for p in query[:settings.GRAPHQL_MAX_LIST_SIZE]]


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_group(self, info: Info, name: str, props: GroupInput) -> CreateGroup:
        user, _ = actor(info)
        project = account_services.admin_create_project(user, name, _given(props))
        return CreateGroup(ok=True, msg="success", group=group_of(project))

    @strawberry.mutation
    def modify_group(self, info: Info, gid: uuid.UUID, props: ModifyGroupInput) -> ModifyGroup:
        user, _ = actor(info)
        project = account_services.admin_modify_project(user, gid, _given(props))
        return ModifyGroup(ok=True, msg="success", group=group_of(project))

    @strawberry.mutation
    def delete_group(self, info: Info, gid: uuid.UUID) -> DeleteGroup:
        user, _ = actor(info)
        account_services.admin_delete_project(user, gid)
        return DeleteGroup(ok=True, msg="success")

    @strawberry.mutation
    def purge_group(self, info: Info, gid: uuid.UUID) -> PurgeGroup:
        user, _ = actor(info)
        account_services.admin_purge_project(user, gid)
        return PurgeGroup(ok=True, msg="success")
