"""``POST|GET /session/{s}/commit`` and ``POST /session/{s}/imagify``: thin, the rules are in ``sessions.commit``."""
from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import APIView

from sessions import commit


def _param(request, name: str):
    """A query parameter (what the official clients send), else a field of a JSON/form body."""
    if name in request.query_params:
        return request.query_params.get(name)
    return request.data.get(name) if isinstance(request.data, dict) else None


class SessionCommitView(APIView):
    def post(self, request, name):
        task_id, image = commit.start_commit(request.user, request.auth, name, _param(request, "owner_access_key"))
        return Response({"task_id": task_id, "image": image})

    def get(self, request, name):
        return Response(commit.commit_status(request.user, request.auth, name,
                                             _param(request, "owner_access_key")))


class SessionImagifyView(APIView):
    """The 24.03+ clients' ``session convert-to-image SESSION IMAGE_NAME``: a commit to a name of one's own."""

    def post(self, request, name):
        image_name = _param(request, "image_name")
        if image_name is None:
            image_name = ""  # required: refused by the validation with the parameter's name
        task_id, image = commit.start_commit(request.user, request.auth, name, _param(request, "owner_access_key"),
                                             image_name=image_name)
        return Response({"task_id": task_id, "image": image})
