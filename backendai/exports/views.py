"""``/export``: the report list, one report, and a report's rows streamed as CSV.

A CSV request is checked in this order, and nothing is queried before the last check:
the report exists (404 ``object-not-found``), the caller may run it (403
``insufficient-privilege``, the report's own ``allowed``), the body is valid (400
``invalid-api-params``).  The rows are then read lazily (a server-side cursor on
PostgreSQL, ``CHUNK_ROWS`` at a time) and written as CSV in chunks of about
``CHUNK_BYTES``, so memory stays flat whatever the number of rows.  The first chunk
(the header and the first rows) is produced before the response starts, so a failing
query is still an error answer rather than a cut-off file.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime

from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai.api import errors
from backendai.exports import registry
from backendai.exports.request import parse_request
from backendai.streaming import streamed

CHUNK_BYTES = 64 * 1024
#: a spreadsheet runs a cell starting with one of these as a formula: text cells get a leading quote
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _report(key: str) -> registry.Report:
    report = registry.get(key)
    if report is None:
        raise errors.object_not_found("export report", f"No export report {key!r}")
    return report


_FIELD = {"key": serializers.CharField(), "name": serializers.CharField(), "description": serializers.CharField(),
          "field_type": serializers.CharField()}


def _report_info(**kwargs):
    return inline_serializer("ExportReport", {
        "report_key": serializers.CharField(), "name": serializers.CharField(), "description": serializers.CharField(),
        "fields": inline_serializer("ExportField", _FIELD, many=True)}, **kwargs)


class ReportListView(APIView):
    """``GET /export/reports``: every report with its fields (what ``admin export list-reports`` prints)."""

    @extend_schema(responses=inline_serializer("ExportReportList", {"reports": _report_info(many=True)}))
    def get(self, request):
        return Response({"reports": [report.describe() for report in registry.registered()]})


class ReportDetailView(APIView):
    """``GET /export/reports/<key>``."""

    @extend_schema(responses=inline_serializer("ExportReportDetail", {"report": _report_info()}))
    def get(self, request, report_key):
        return Response({"report": _report(report_key).describe()})


class ReportCSVView(APIView):
    """``POST /export/<key>/csv``: the rows the caller may see, as CSV."""

    @extend_schema(
        request=inline_serializer("ExportCSVInput", {
            "fields": serializers.ListField(child=serializers.CharField(), required=False),
            "filter": serializers.DictField(required=False),
            "order": serializers.ListField(child=serializers.DictField(), required=False),
            "encoding": serializers.CharField(required=False, default="utf-8")}),
        responses={(200, "text/csv"): OpenApiResponse(description="The report as CSV, streamed.")})
    def post(self, request, report_key):
        report = _report(report_key)
        if not report.allowed(request.user):
            raise errors.InsufficientPrivilege(f"You may not export the {report.key} report.")
        export = parse_request(report, request.data, request.headers.get("X-Export-Filename"), timezone.now())
        return csv_response(request, export, report.rows(request.user, export))


def csv_response(request, export, rows) -> StreamingHttpResponse:
    """``rows`` of ``export`` streamed as a CSV attachment (the API's export and the web UI's
    download links share it)."""
    chunks = csv_chunks(export.columns, rows, export.encoding)
    first = next(chunks)  # the query runs now: a failure is still an error answer
    response = StreamingHttpResponse(streamed(request, _resumed(first, chunks), thread_sensitive=True),
                                     content_type=f"text/csv; charset={export.charset}")
    response["Content-Disposition"] = content_disposition_header(True, export.filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


def cell(column, value) -> str:
    if value is None:
        return ""
    kind = column.field_type
    if kind == "datetime":
        return value.isoformat() if isinstance(value, datetime) else str(value)
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    if kind == "string" and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def csv_chunks(columns, rows, encoding: str):
    """The header (the columns' names) and the rows as CSV (RFC 4180, CRLF), encoded, in
    chunks of about ``CHUNK_BYTES``; a character the encoding lacks becomes ``?``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([column.name for column in columns])
    try:
        for row in rows:
            writer.writerow([cell(column, value) for column, value in zip(columns, row)])
            if buffer.tell() >= CHUNK_BYTES:
                yield buffer.getvalue().encode(encoding, "replace")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode(encoding, "replace")
    finally:
        getattr(rows, "close", lambda: None)()  # a client gone mid-way: the cursor closes now


def _resumed(first, rest):
    try:
        yield first
        yield from rest
    finally:
        rest.close()


