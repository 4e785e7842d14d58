"""``backendai_api_request_count`` / ``backendai_api_request_duration_sec`` for every API request.

Labels: ``method``; ``endpoint``, the URL route pattern that matched (``session/<str:session_name>``,
``func/...`` in session mode), ``unmatched`` when none did, never the raw path; ``status_code``; and
``domain``/``operation``/``error_detail`` from the ``type`` slug of a problem+json answer
(``telemetry.error_from_problem``; empty on success).  The web UI, the admin, static files and
``/metrics`` are not API requests (``backendai.api.middleware.is_api_path``).  It sits first after
django-prometheus' middleware, so the refusals of the middlewares below it are counted too.

Cost per request: two clock reads, two metric updates and, only for a problem answer, reading the
(small) JSON body it already holds; no database query.  The methods are bounded: anything but the
usual verbs is ``other`` (the effective method, after ``X-Method-Override``).
"""
from __future__ import annotations

import json
import time

from django.urls import Resolver404, resolve

from backendai import telemetry
from backendai.api.errors import PROBLEM_CONTENT_TYPE
from backendai.api.middleware import is_api_path

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_PROBLEM_BODY = 64 * 1024


def endpoint_of(request) -> str:
    """The route pattern of the request (resolving it when no view ran, e.g. an early refusal)."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return UNMATCHED
        except Exception:  # noqa: BLE001 - a path the resolver chokes on is not a route
            return UNMATCHED
    route = getattr(match, "route", None)
    return route if isinstance(route, str) and route else UNMATCHED


def error_labels(response) -> tuple[str, str, str]:
    if response.status_code < 400 or getattr(response, "streaming", False):
        return ("", "", "")
    if not str(response.get("Content-Type", "")).startswith(PROBLEM_CONTENT_TYPE):
        return ("", "", "")
    try:
        content = response.content
        if len(content) > MAX_PROBLEM_BODY:
            return ("api", "generic", "unknown")
        kind = json.loads(content).get("type")
    except (ValueError, AttributeError, TypeError):
        return ("api", "generic", "unknown")
    return telemetry.error_from_problem(kind if isinstance(kind, str) else "")


class APIMetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not is_api_path(request.path):
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        try:
            method = request.method if request.method in METHODS else "other"  # after X-Method-Override
            domain, operation, detail = error_labels(response)
            telemetry.observe_api_request(method, endpoint_of(request), response.status_code,
                                          time.perf_counter() - started, domain, operation, detail)
        except Exception:  # noqa: BLE001 - metrics never fail the request
            pass
        return response
