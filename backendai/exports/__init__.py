"""CSV exports: the ``/export/...`` API of ``backend.ai admin export`` (client 26.09).

Plumbing only: the apps that own the data describe their reports (columns, filters,
orderings, the query and who may run it) and register them from their
``AppConfig.ready()`` (``accounts.exports``, ``sessions.exports``); this package checks
a request against the report before any query runs and streams the rows as CSV.

* ``registry``: ``Column``, ``Report``, ``register``, ``queryset_rows``;
* ``request``: the filter kinds (``Text``, ``Choice``, ``Range``, ``Flag``, ``UUIDs``,
  ``Nested``) and ``parse_request`` (every refusal a 400 ``invalid-api-params``);
* ``views`` / ``urls``: ``GET /export/reports``, ``GET /export/reports/<key>``,
  ``POST /export/<key>/csv``.

docs/client-compat.md ("CSV exports") describes the API.
"""
