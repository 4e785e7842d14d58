"""``POST /v2/audit-logs/search``: the 26.09 client's ``backend.ai v2 audit-log search``
(``backendai.audit_client.search`` reads and shapes the entries; superadmins and domain
admins only)."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai import audit_client
from backendai.api.schema import problem_responses


class AuditLogSearchView(APIView):
    """The audit log, filtered, ordered and paged (``AdminSearchAuditLogsInput`` ->
    ``SearchAuditLogsPayload``)."""

    @extend_schema(tags=["audit"], summary="Search the audit log (superadmins; domain admins: their domain)",
                   request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT, **problem_responses(400, 401, 403)})
    def post(self, request):
        return Response(audit_client.search(request.user, request.data))
