"""Domains in ``/admin/gql``: ``domain`` (by name, or the caller's), ``domains``, and the
superadmins' mutations ``create_domain``, ``modify_domain`` (``name`` renames),
``delete_domain`` (deactivates) and ``purge_domain`` (removes).  A superadmin sees every
domain, everyone else their own.  ``total_resource_slots`` and ``allowed_vfolder_hosts``
are JSON-encoded strings, in answers and in inputs (Backend.AI's JSONString)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import strawberry
from strawberry.types import Info

from accounts import services as account_services
from backendai.api.gqlkit import actor, iso_or_none, json_or_none


@strawberry.type
class Domain:
    name: str
    description: str
    is_active: bool
    created_at: Optional[str]
    modified_at: Optional[str]
    total_resource_slots: Optional[str]
    allowed_vfolder_hosts: Optional[str]
    allowed_docker_registries: list[str]
    # this manager's addition: within those registries, the only images allowed (empty: all)
    allowed_images: list[str]
    integration_id: Optional[str]


def domain_of(domain) -> Domain:
    return Domain(name=domain.name, description=domain.description, is_active=domain.is_active,
                  created_at=iso_or_none(domain.created_at), modified_at=iso_or_none(domain.modified_at),
                  total_resource_slots=json_or_none(domain.total_resource_slots or {}),
                  allowed_vfolder_hosts=json_or_none(domain.allowed_vfolder_hosts or {}),
                  allowed_docker_registries=[str(r) for r in domain.allowed_docker_registries or []],
                  allowed_images=[str(r) for r in domain.allowed_images or []],
                  integration_id=domain.integration_id or None)


@strawberry.input
class DomainInput:
    description: Optional[str] = ""
    is_active: Optional[bool] = True
    total_resource_slots: Optional[str] = None
    allowed_vfolder_hosts: Optional[str] = None
    allowed_docker_registries: Optional[list[str]] = None
    allowed_images: Optional[list[str]] = None
    integration_id: Optional[str] = None


@strawberry.input
class ModifyDomainInput:
    name: Optional[str] = None
    description: Optional[str] = None
    is_active: Optional[bool] = None
    total_resource_slots: Optional[str] = None
    allowed_vfolder_hosts: Optional[str] = None
    allowed_docker_registries: Optional[list[str]] = None
    allowed_images: Optional[list[str]] = None
    integration_id: Optional[str] = None


@strawberry.type
class CreateDomain:
    ok: bool
    msg: str
    domain: Optional[Domain]


@strawberry.type
class ModifyDomain:
    ok: bool
    msg: str
    domain: Optional[Domain]


@strawberry.type
class DeleteDomain:
    ok: bool
    msg: str


@strawberry.type
class PurgeDomain:
    ok: bool
    msg: str


def _given(props) -> dict:
    return {k: v for k, v in dataclasses.asdict(props).items() if v is not None}


@strawberry.type
class Query:
    @strawberry.field
    def domain(self, info: Info, name: Optional[str] = None) -> Optional[Domain]:
        user, _ = actor(info)
        found = account_services.visible_domains(user).filter(pk=user.domain_id if name is None else name).first()
        return domain_of(found) if found else None

    @strawberry.field
    def domains(self, info: Info, is_active: Optional[bool] = None) -> list[Domain]:
        user, _ = actor(info)
        query = account_services.visible_domains(user).order_by("name")
        if is_active is not None:
            query = query.filter(is_active=is_active)
        return [domain_of(d) for d in query]


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_domain(self, info: Info, name: str, props: DomainInput) -> CreateDomain:
        user, _ = actor(info)
        domain = account_services.admin_create_domain(user, name, _given(props))
        return CreateDomain(ok=True, msg="success", domain=domain_of(domain))

    @strawberry.mutation
    def modify_domain(self, info: Info, name: str, props: ModifyDomainInput) -> ModifyDomain:
        user, _ = actor(info)
        domain = account_services.admin_modify_domain(user, name, _given(props))
        return ModifyDomain(ok=True, msg="success", domain=domain_of(domain))

    @strawberry.mutation
    def delete_domain(self, info: Info, name: str) -> DeleteDomain:
        user, _ = actor(info)
        account_services.admin_delete_domain(user, name)
        return DeleteDomain(ok=True, msg="success")

    @strawberry.mutation
    def purge_domain(self, info: Info, name: str) -> PurgeDomain:
        user, _ = actor(info)
        account_services.admin_purge_domain(user, name)
        return PurgeDomain(ok=True, msg="success")
