"""The vfolders part of ``/admin/gql``: folders, storage volumes and quota scopes,
with Backend.AI's names, arguments and shapes (client-wire §8; the documents of
clients 23.9.10 to 26.9.6).  ``backendai/api/graphql.py`` merges ``Query`` and
``Mutation`` into the schema.

Queries:

* ``vfolder(id)``, ``vfolder_list(limit, offset, group_id, filter, order,
  domain_name, access_key)`` and the listings by kind of ``vfolder list-own``,
  ``list-invited`` and ``list-project``: ``vfolder_own_list``,
  ``vfolder_invited_list``, ``vfolder_project_list`` (``limit, offset, filter, order,
  domain_name, access_key``), answered by ``vfolders.services.listing``;
* ``storage_volume(id)``, ``storage_volume_list(limit, offset, filter, order)``
  (superadmins only; ``admin storage info|list``);
* ``quota_scope(storage_host_name, quota_scope_id)`` (``admin quota-scope get``).

Mutations: ``set_quota_scope(quota_scope_id, storage_host_name, props:
{hard_limit_bytes})`` and ``unset_quota_scope(quota_scope_id, storage_host_name)``,
each answering ``{quota_scope {...}}``.  Who sees and changes what is documented in
``vfolders.services.listing`` and ``vfolders.services.volumes``; a refusal is a
GraphQL error naming the reason, and changes nothing.

Values are what the client's formatters expect: ISO timestamps, lower-case folder
statuses (``ready``), permissions as ``rw``; ``hardware_metadata``,
``performance_metric`` and ``usage`` are JSON-encoded strings; sizes are ``BigInt``."""
from __future__ import annotations

import uuid
from typing import Optional

import strawberry
from strawberry.types import Info

from backendai.api import gqlkit
from backendai.api.gqlkit import BigInt, json_or_none
from vfolders.services import listing, volumes


@strawberry.type
class VirtualFolder:
    id: Optional[str]
    host: Optional[str]
    quota_scope_id: Optional[str]
    name: Optional[str]
    user: Optional[str]
    user_email: Optional[str]
    group: Optional[str]
    group_name: Optional[str]
    creator: Optional[str]
    unmanaged_path: Optional[str]
    usage_mode: Optional[str]
    permission: Optional[str]
    ownership_type: Optional[str]
    max_files: Optional[int]
    max_size: Optional[BigInt]
    created_at: Optional[str]
    last_used: Optional[str]
    num_files: Optional[int]
    cur_size: Optional[BigInt]
    cloneable: Optional[bool]
    status: Optional[str]


@strawberry.type
class VirtualFolderList:
    items: list[VirtualFolder]
    total_count: int


def _folder(row: dict) -> VirtualFolder:
    return VirtualFolder(**{name: row.get(name) for name in VirtualFolder.__annotations__})


def _folder_list(rows: list[dict], total: int) -> VirtualFolderList:
    return VirtualFolderList(items=[_folder(row) for row in rows], total_count=total)


@strawberry.type
class StorageVolume:
    id: Optional[str]
    backend: Optional[str]
    fsprefix: Optional[str]
    path: Optional[str]
    capabilities: Optional[list[Optional[str]]]
    hardware_metadata: Optional[str]
    performance_metric: Optional[str]
    usage: Optional[str]
    proxy: Optional[str]
    name: Optional[str]


def _volume(info: dict) -> StorageVolume:
    return StorageVolume(
        id=info["id"], backend=info["backend"], fsprefix=info["fsprefix"], path=info["path"],
        capabilities=info["capabilities"], hardware_metadata=json_or_none(info["hardware_metadata"]),
        performance_metric=json_or_none(info["performance_metric"]), usage=json_or_none(info["usage"]),
        proxy=info["proxy"], name=info["name"])


@strawberry.type
class StorageVolumeList:
    items: list[StorageVolume]
    total_count: int


@strawberry.type
class QuotaDetails:
    usage_bytes: Optional[BigInt]
    usage_count: Optional[BigInt]
    hard_limit_bytes: Optional[BigInt]


@strawberry.type
class QuotaScope:
    id: strawberry.ID
    quota_scope_id: str
    storage_host_name: str
    details: QuotaDetails


def _scope(info: dict) -> QuotaScope:
    return QuotaScope(id=strawberry.ID(f"QuotaScope:{info['storage_host_name']}/{info['quota_scope_id']}"),
                      quota_scope_id=info["quota_scope_id"], storage_host_name=info["storage_host_name"],
                      details=QuotaDetails(**info["details"]))


@strawberry.input
class QuotaScopeInput:
    hard_limit_bytes: Optional[BigInt] = None


@strawberry.type
class SetQuotaScope:
    quota_scope: Optional[QuotaScope]


@strawberry.type
class UnsetQuotaScope:
    quota_scope: Optional[QuotaScope]


def _kind_list(info: Info, kind: str, limit: int, offset: int, filter, order, domain_name,
               access_key) -> VirtualFolderList:
    user, _ = gqlkit.actor(info)
    limit, offset = gqlkit.page(limit, offset)
    rows, total = listing.folder_page(user, kind, limit, offset, filter=filter, order=order,
                                      domain_name=domain_name, access_key=access_key)
    return _folder_list(rows, total)


@strawberry.type
class Query:
    @strawberry.field
    def vfolder(self, info: Info, id: Optional[str] = None) -> Optional[VirtualFolder]:
        user, _ = gqlkit.actor(info)
        row = listing.folder_by_id(user, id)
        return _folder(row) if row is not None else None

    @strawberry.field
    def vfolder_list(self, info: Info, limit: int, offset: int, group_id: Optional[uuid.UUID] = None,
                     filter: Optional[str] = None, order: Optional[str] = None,
                     domain_name: Optional[str] = None, access_key: Optional[str] = None) -> VirtualFolderList:
        user, _ = gqlkit.actor(info)
        limit, offset = gqlkit.page(limit, offset)
        rows, total = listing.vfolder_list(user, limit, offset, group_id=str(group_id) if group_id else None,
                                           filter=filter, order=order, domain_name=domain_name,
                                           access_key=access_key)
        return _folder_list(rows, total)

    @strawberry.field
    def vfolder_own_list(self, info: Info, limit: int, offset: int, filter: Optional[str] = None,
                         order: Optional[str] = None, domain_name: Optional[str] = None,
                         access_key: Optional[str] = None) -> VirtualFolderList:
        return _kind_list(info, "own", limit, offset, filter, order, domain_name, access_key)

    @strawberry.field
    def vfolder_invited_list(self, info: Info, limit: int, offset: int, filter: Optional[str] = None,
                             order: Optional[str] = None, domain_name: Optional[str] = None,
                             access_key: Optional[str] = None) -> VirtualFolderList:
        return _kind_list(info, "invited", limit, offset, filter, order, domain_name, access_key)

    @strawberry.field
    def vfolder_project_list(self, info: Info, limit: int, offset: int, filter: Optional[str] = None,
                             order: Optional[str] = None, domain_name: Optional[str] = None,
                             access_key: Optional[str] = None) -> VirtualFolderList:
        return _kind_list(info, "project", limit, offset, filter, order, domain_name, access_key)

    @strawberry.field
    def storage_volume(self, info: Info, id: Optional[str] = None) -> Optional[StorageVolume]:
        user, _ = gqlkit.actor(info)
        return _volume(volumes.storage_volume(user, id))

    @strawberry.field
    def storage_volume_list(self, info: Info, limit: int, offset: int, filter: Optional[str] = None,
                            order: Optional[str] = None) -> StorageVolumeList:
        user, _ = gqlkit.actor(info)
        limit, offset = gqlkit.page(limit, offset)
        rows, total = volumes.storage_volume_list(user, limit, offset, filter=filter, order=order)
        return StorageVolumeList(items=[_volume(row) for row in rows], total_count=total)

    @strawberry.field
    def quota_scope(self, info: Info, storage_host_name: str, quota_scope_id: str) -> Optional[QuotaScope]:
        user, _ = gqlkit.actor(info)
        return _scope(volumes.quota_scope(user, storage_host_name, quota_scope_id))


@strawberry.type
class Mutation:
    @strawberry.mutation
    def set_quota_scope(self, info: Info, quota_scope_id: str, storage_host_name: str,
                        props: QuotaScopeInput) -> SetQuotaScope:
        user, _ = gqlkit.actor(info)
        return SetQuotaScope(quota_scope=_scope(volumes.set_quota_scope(
            user, storage_host_name, quota_scope_id, props.hard_limit_bytes)))

    @strawberry.mutation
    def unset_quota_scope(self, info: Info, quota_scope_id: str, storage_host_name: str) -> UnsetQuotaScope:
        user, _ = gqlkit.actor(info)
        return UnsetQuotaScope(quota_scope=_scope(volumes.unset_quota_scope(user, storage_host_name,
                                                                             quota_scope_id)))
