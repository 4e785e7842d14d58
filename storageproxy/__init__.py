"""The Backend.AI storage proxy: a standalone daemon (``python -m storageproxy``) that holds the
folders' bytes.  The manager decides (permissions, quotas, tokens) over the manager API; clients
upload (tus 1.0) and download directly over the client API with tokens the manager obtained.

Imports nothing from Django nor from the manager's packages (``.venv/bin/lint-imports`` checks);
the manager may import the pure helpers :mod:`storageproxy.paths` and :mod:`storageproxy.names`."""

__version__ = "24.09.0"
