"""The filters of the accounts API's lists (django-filter)."""
from __future__ import annotations

import django_filters

from accounts.models import Keypair


class KeypairListFilter(django_filters.FilterSet):
    """``GET /keypairs?user=<email>``: the keypairs of one user (case-insensitive), among
    those the caller may see.  A value that is not a plausible email length is a 400."""

    user = django_filters.CharFilter(field_name="user__email", lookup_expr="iexact", max_length=254)

    class Meta:
        model = Keypair
        fields = ["user"]
