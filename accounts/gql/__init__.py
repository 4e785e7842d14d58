"""The accounts part of ``/admin/gql``, with Backend.AI's names, arguments and shapes (the
documents of the official clients 23.9.10, 24.9.14 and 26.9.6): users, keypairs, domains,
groups (projects) and their members, keypair/user/project resource policies.  One module
per kind (``users``, ``keypairs``, ``domains``, ``groups``, ``policies``); ``Query`` and
``Mutation`` here merge them, and ``backendai/api/graphql.py`` merges those into the schema.

Every resolver calls ``accounts.services`` (the rules the Django admin and REST use too):
a superadmin sees and manages everything, a domain admin their own domain (never a
superadmin nor another domain), a user themselves.  A refused mutation is a GraphQL error
naming the reason (``insufficient-privilege``, ``object-not-found``,
``invalid-api-params``) and changes nothing.

Secrets: ``secret_key`` answers ``accounts.services.MASKED_SECRET`` everywhere but in
``create_keypair``'s answer to the owner of the new keypair; no type has a password or an
SSH private key."""
from __future__ import annotations

from strawberry.tools import merge_types

from accounts.gql import domains, groups, keypairs, policies, users

_MODULES = (keypairs, users, domains, groups, policies)

Query = merge_types("AccountsQuery", tuple(m.Query for m in _MODULES))
Mutation = merge_types("AccountsMutation", tuple(m.Mutation for m in _MODULES))

__all__ = ["Query", "Mutation"]
