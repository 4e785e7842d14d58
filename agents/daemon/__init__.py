"""The Backend.AI agent daemon: ``python -m agents.daemon``.

A standalone process that runs compute kernels (Docker containers or plain
process groups) on one node and converges with the manager over the protocol
described in ``docs/agent-protocol.md``.  It must never import Django or the
manager apps: it runs on compute nodes that only have this package, the Docker
SDK, ``nvidia-ml-py``, ``httpx`` and ``websockets``.

Layout:

* :mod:`.config`: flags, ``BAI_AGENT_*`` variables and an optional TOML file;
* :mod:`.discovery`: CPU/memory capacity (affinity, cgroups), GPUs via NVML, host stats;
* :mod:`.kernel`: the wire models (kernel specs from the manager, kernel states to it);
* :mod:`.ports`: host port allocation from the agent's range;
* :mod:`.backends`: the Docker and local (process group) backends;
* :mod:`.client`: the HTTP client for ``/agent-api/v1/*``;
* :mod:`.link`: the websocket link (pokes);
* :mod:`.agent`: the sync loop tying everything together;
* :mod:`.cli`: the command line entry point.
"""

__version__ = "0.1.0"
