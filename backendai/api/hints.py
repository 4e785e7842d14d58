"""``POST /internal/hints``: hints relayed by processes whose channel layer ends at
themselves (the embedded mode's Celery worker), delivered here to the agents'
links and held syncs (``backendai.hints``).

Only a request signed by ``backendai.hints.signed_headers`` (an HMAC of
``SECRET_KEY`` over the timestamp and the body, at most ``MAX_SKEW`` seconds
old) is accepted; nothing else authenticates here, Backend.AI API signatures
and agent tokens included.  Answers 204, or a problem: 403 for a missing,
stale or wrong signature, 400 for a malformed body.
"""
from __future__ import annotations

import logging

from rest_framework.response import Response
from rest_framework.views import APIView

from backendai import hints
from backendai.api import errors

log = logging.getLogger(__name__)


class HintRelayView(APIView):
    authentication_classes: list = []  # the HMAC below is the only credential
    permission_classes: list = []

    def post(self, request):
        body = request.body
        why = hints.refusal(body, request.headers.get(hints.TIMESTAMP_HEADER),
                            request.headers.get(hints.SIGNATURE_HEADER))
        if why is not None:
            log.info("refused a relayed hint from %s: %s", request.META.get("REMOTE_ADDR"), why)
            raise errors.GenericForbidden(why.capitalize())
        try:
            agent_ids = hints.parse_relayed(body)
        except ValueError as exc:
            raise errors.InvalidAPIParameters(str(exc)) from None
        hints.deliver_local(agent_ids)
        log.debug("delivered a relayed hint for %d agent(s)", len(agent_ids))
        return Response(status=204)
