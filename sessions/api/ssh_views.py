"""``GET /session/{s}/direct-access-info``: where a session's SSH server listens (sessions/ssh.py)."""
from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import APIView

from backendai.api import errors
from sessions import services, ssh

_NAME_LIMIT = 128


class DirectAccessInfoView(APIView):
    def get(self, request, name):
        owner = request.query_params.get("owner_access_key") or None
        if len(name) > _NAME_LIMIT or (owner is not None and len(owner) > _NAME_LIMIT):
            raise errors.InvalidAPIParameters(f"session name and owner_access_key are at most {_NAME_LIMIT} characters")
        session = services.get_session(request.user, request.auth, name, owner)
        return Response(ssh.direct_access_info(session))
