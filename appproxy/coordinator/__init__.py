"""The app proxy coordinator as its own process: ``python -m appproxy.coordinator``.

The same Django code and database as the manager, serving only the coordinator's
routes (``appproxy.coordinator.urls``): the worker API, the REST API for the manager and
``/health``.  The manager reaches it over HTTP when ``APPPROXY_COORDINATOR_URL`` is set
(``appproxy.gateway``); without it the coordinator runs inside the manager.
"""
