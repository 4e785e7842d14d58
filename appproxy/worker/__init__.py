"""The app proxy worker: a standalone program (``python -m appproxy.worker``)
that imports no Django and talks to the coordinator only over HTTP."""
__version__ = "0.1.0"
