"""Resource policies in ``/admin/gql``: keypair policies (``keypair_resource_policy``,
``keypair_resource_policies``, ``create|modify|delete_keypair_resource_policy``, what
``admin keypair-resource-policy`` sends), and user and project policies with the same
shapes (``user_resource_policy``..., sent by the 26.09 client's ``admin
user-resource-policy``; ``project_resource_policy``...).  Superadmins see and change every
policy; everyone else sees the policies of what they see (``keypair_resource_policy``
without a name: the policy of the calling keypair).  Slot maps and host permissions are
JSON-encoded strings (Backend.AI's JSONString)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Optional

import strawberry
from strawberry.types import Info

from accounts import services as account_services
from backendai.api.gqlkit import BigInt, actor, iso_or_none, json_or_none, typed_mutation


@strawberry.type
class KeyPairResourcePolicy:
    name: str
    created_at: Optional[str]
    default_for_unspecified: str
    total_resource_slots: Optional[str]
    max_session_lifetime: int
    max_concurrent_sessions: int
    max_concurrent_sftp_sessions: int
    max_containers_per_session: int
    max_pending_session_count: Optional[int]
    max_pending_session_resource_slots: Optional[str]
    idle_timeout: BigInt
    allowed_vfolder_hosts: Optional[str]
    max_vfolder_count: int  # deprecated in Backend.AI (moved to user/project policies): 0
    max_vfolder_size: BigInt  # deprecated likewise: 0


def keypair_policy_of(policy) -> KeyPairResourcePolicy:
    return KeyPairResourcePolicy(
        name=policy.name, created_at=iso_or_none(policy.created_at),
        default_for_unspecified=policy.default_for_unspecified,
        total_resource_slots=json_or_none(policy.total_resource_slots or {}),
        max_session_lifetime=policy.max_session_lifetime, max_concurrent_sessions=policy.max_concurrent_sessions,
        max_concurrent_sftp_sessions=policy.max_concurrent_sftp_sessions,
        max_containers_per_session=policy.max_containers_per_session,
        max_pending_session_count=policy.max_pending_session_count,
        max_pending_session_resource_slots=json_or_none(policy.max_pending_session_resource_slots),
        idle_timeout=policy.idle_timeout, allowed_vfolder_hosts=json_or_none(policy.allowed_vfolder_hosts or {}),
        max_vfolder_count=0, max_vfolder_size=0)


@strawberry.type
class UserResourcePolicy:
    id: strawberry.ID
    name: str
    created_at: Optional[str]
    max_vfolder_count: int
    max_quota_scope_size: BigInt
    max_session_count_per_model_session: int
    max_customized_image_count: int


def user_policy_of(policy) -> UserResourcePolicy:
    return UserResourcePolicy(
        id=strawberry.ID(policy.name), name=policy.name, created_at=iso_or_none(policy.created_at),
        max_vfolder_count=policy.max_vfolder_count, max_quota_scope_size=policy.max_quota_scope_size,
        max_session_count_per_model_session=policy.max_session_count_per_model_session,
        max_customized_image_count=policy.max_customized_image_count)


@strawberry.type
class ProjectResourcePolicy:
    id: strawberry.ID
    name: str
    created_at: Optional[str]
    max_vfolder_count: int
    max_quota_scope_size: BigInt


def project_policy_of(policy) -> ProjectResourcePolicy:
    return ProjectResourcePolicy(id=strawberry.ID(policy.name), name=policy.name,
                                 created_at=iso_or_none(policy.created_at), max_vfolder_count=policy.max_vfolder_count,
                                 max_quota_scope_size=policy.max_quota_scope_size)


@strawberry.input
class CreateKeyPairResourcePolicyInput:
    default_for_unspecified: Optional[str] = None
    total_resource_slots: Optional[str] = None
    max_session_lifetime: Optional[int] = None
    max_concurrent_sessions: Optional[int] = None
    max_concurrent_sftp_sessions: Optional[int] = None
    max_containers_per_session: Optional[int] = None
    max_pending_session_count: Optional[int] = None
    max_pending_session_resource_slots: Optional[str] = None
    idle_timeout: Optional[BigInt] = None
    allowed_vfolder_hosts: Optional[str] = None
    max_vfolder_count: Optional[int] = None  # deprecated: accepted and ignored, as Backend.AI does
    max_vfolder_size: Optional[BigInt] = None


@strawberry.input
class ModifyKeyPairResourcePolicyInput(CreateKeyPairResourcePolicyInput):
    pass


@strawberry.input
class CreateUserResourcePolicyInput:
    max_vfolder_count: Optional[int] = None
    max_quota_scope_size: Optional[BigInt] = None
    max_session_count_per_model_session: Optional[int] = None
    max_customized_image_count: Optional[int] = None


@strawberry.input
class ModifyUserResourcePolicyInput(CreateUserResourcePolicyInput):
    pass


@strawberry.input
class CreateProjectResourcePolicyInput:
    max_vfolder_count: Optional[int] = None
    max_quota_scope_size: Optional[BigInt] = None


@strawberry.input
class ModifyProjectResourcePolicyInput(CreateProjectResourcePolicyInput):
    pass


@strawberry.type
class CreateKeyPairResourcePolicy:
    ok: bool
    msg: str
    resource_policy: Optional[KeyPairResourcePolicy]


@strawberry.type
class ModifyKeyPairResourcePolicy:
    ok: bool
    msg: str


@strawberry.type
class DeleteKeyPairResourcePolicy:
    ok: bool
    msg: str


@strawberry.type
class CreateUserResourcePolicy:
    ok: bool
    msg: str
    resource_policy: Optional[UserResourcePolicy]


@strawberry.type
class ModifyUserResourcePolicy:
    ok: bool
    msg: str


@strawberry.type
class DeleteUserResourcePolicy:
    ok: bool
    msg: str


@strawberry.type
class CreateProjectResourcePolicy:
    ok: bool
    msg: str
    resource_policy: Optional[ProjectResourcePolicy]


@strawberry.type
class ModifyProjectResourcePolicy:
    ok: bool
    msg: str


@strawberry.type
class DeleteProjectResourcePolicy:
    ok: bool
    msg: str


_DEPRECATED = ("max_vfolder_count", "max_vfolder_size")


def _given(props, drop=()) -> dict:
    return {k: v for k, v in dataclasses.asdict(props).items() if v is not None and k not in drop}


def _named(info: Info, kind, name: Optional[str]):
    user, _ = actor(info)
    return account_services.visible_policies(user, kind).filter(pk=name).first()


@strawberry.type
class Query:
    @strawberry.field
    def keypair_resource_policy(self, info: Info, name: Optional[str] = None) -> Optional[KeyPairResourcePolicy]:
        if name is None:
            return keypair_policy_of(actor(info)[1].resource_policy)
        found = _named(info, account_services.KEYPAIR_POLICY, name)
        return keypair_policy_of(found) if found else None

    @strawberry.field
    def keypair_resource_policies(self, info: Info) -> list[KeyPairResourcePolicy]:
        user, _ = actor(info)
        return [keypair_policy_of(p) for p in account_services.visible_policies(user, account_services.KEYPAIR_POLICY)]

    @strawberry.field
    def user_resource_policy(self, info: Info, name: Optional[str] = None) -> Optional[UserResourcePolicy]:
        if name is None:
            return user_policy_of(actor(info)[0].resource_policy)
        found = _named(info, account_services.USER_POLICY, name)
        return user_policy_of(found) if found else None

    @strawberry.field
    def user_resource_policies(self, info: Info) -> list[UserResourcePolicy]:
        user, _ = actor(info)
        return [user_policy_of(p) for p in account_services.visible_policies(user, account_services.USER_POLICY)]

    @strawberry.field
    def project_resource_policy(self, info: Info, name: str) -> Optional[ProjectResourcePolicy]:
        found = _named(info, account_services.PROJECT_POLICY, name)
        return project_policy_of(found) if found else None

    @strawberry.field
    def project_resource_policies(self, info: Info) -> list[ProjectResourcePolicy]:
        user, _ = actor(info)
        return [project_policy_of(p) for p in account_services.visible_policies(user, account_services.PROJECT_POLICY)]


def _policy_mutations(kind: str, shown: Callable, create: tuple, modify: tuple, delete: type, drop=()):
    """``create_*``, ``modify_*`` and ``delete_*`` of one kind of resource policy: ``create`` and
    ``modify`` are (input type, result type); ``shown`` makes the created policy's GraphQL type;
    ``drop`` names input fields accepted and ignored (Backend.AI's deprecated ones)."""
    (create_input, created), (modify_input, modified) = create, modify

    def make(info: Info, name: str, props):
        policy = account_services.admin_create_policy(actor(info)[0], kind, name, _given(props, drop))
        return created(ok=True, msg="success", resource_policy=shown(policy))

    def change(info: Info, name: str, props):
        account_services.admin_modify_policy(actor(info)[0], kind, name, _given(props, drop))
        return modified(ok=True, msg="success")

    def remove(info: Info, name: str):
        account_services.admin_delete_policy(actor(info)[0], kind, name)
        return delete(ok=True, msg="success")

    return (typed_mutation(make, {"name": str, "props": create_input}, created),
            typed_mutation(change, {"name": str, "props": modify_input}, modified),
            typed_mutation(remove, {"name": str}, delete))


@strawberry.type
class Mutation:
    create_keypair_resource_policy, modify_keypair_resource_policy, delete_keypair_resource_policy = \
        _policy_mutations(account_services.KEYPAIR_POLICY, keypair_policy_of,
                          (CreateKeyPairResourcePolicyInput, CreateKeyPairResourcePolicy),
                          (ModifyKeyPairResourcePolicyInput, ModifyKeyPairResourcePolicy),
                          DeleteKeyPairResourcePolicy, drop=_DEPRECATED)
    create_user_resource_policy, modify_user_resource_policy, delete_user_resource_policy = \
        _policy_mutations(account_services.USER_POLICY, user_policy_of,
                          (CreateUserResourcePolicyInput, CreateUserResourcePolicy),
                          (ModifyUserResourcePolicyInput, ModifyUserResourcePolicy), DeleteUserResourcePolicy)
    create_project_resource_policy, modify_project_resource_policy, delete_project_resource_policy = \
        _policy_mutations(account_services.PROJECT_POLICY, project_policy_of,
                          (CreateProjectResourcePolicyInput, CreateProjectResourcePolicy),
                          (ModifyProjectResourcePolicyInput, ModifyProjectResourcePolicy), DeleteProjectResourcePolicy)
