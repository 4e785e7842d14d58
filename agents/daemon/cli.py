"""Command line entry point: ``python -m agents.daemon [--discover] [options]``."""
from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import sys
from collections.abc import Sequence
from typing import Any

from backendai import logformat

from .config import AgentConfig, ConfigError, load_config

__all__ = ["discover_json", "local_backend_refusal", "main"]

log = logging.getLogger("agents.daemon")


def _setup_logging(config: AgentConfig) -> None:
    logformat.setup_daemon_logging(  # in json, agent_id a field of every line (docs/observability.md)
        log_format=config.log_format, log_level=config.log_level, task="agent", label=f"agent {config.agent_id}",
        fields={"agent_id": config.agent_id}, quiet=("httpx", "httpcore", "urllib3", "websockets", "docker"))


def _probe_and_resources(config: AgentConfig, nvml: Any = None) -> tuple[Any, Any]:
    from .discovery import GpuProbe, discover

    probe = GpuProbe(nvml=nvml, mask=config.gpu_devices)
    resources = discover(reserved_cpu=config.reserved_cpu, reserved_mem=config.reserved_mem,
                         cpu_limit=config.cpu_limit, mem_limit=config.mem_limit, gpu_probe=probe)
    return probe, resources


def discover_json(config: AgentConfig, nvml: Any = None) -> dict[str, Any]:
    """What ``--discover`` prints: capacity, slot types, plugins, devices and live GPU stats."""
    probe, resources = _probe_and_resources(config, nvml)
    try:
        data = resources.to_json()
        data["gpu_stats"] = probe.stats()
        data["agent_id"] = config.agent_id
        return data
    finally:
        probe.close()


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def local_backend_refusal(config: AgentConfig, euid: int) -> str | None:
    """Why the daemon must not start (None: it may): the local backend has no isolation, so as
    root it would run every user's kernels as root, unless the operator said so."""
    if config.backend != "local" or euid != 0 or config.local_allow_root:
        return None
    return ("the local backend runs kernels as this daemon's user without any isolation, and this daemon runs as "
            "root: every session would run as root on this host. Run it as an unprivileged user, use --backend "
            "docker, or pass --local-allow-root (env BAI_AGENT_LOCAL_ALLOW_ROOT=true) to accept that")


def warn_about_local_backend(config: AgentConfig, euid: int) -> None:
    if config.backend != "local":
        return
    log.warning("the local backend runs kernels as user %s (uid %d) directly on this host, with no isolation: "
                "every session can read and change whatever that user can. Never offer it to untrusted users "
                "(use --backend docker)%s", _user_name(euid), euid,
                "; running as root because --local-allow-root was given" if euid == 0 else "")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, args = load_config(argv)
    except ConfigError as exc:
        print(f"agent: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    if args.discover:
        print(json.dumps(discover_json(config), indent=2))
        return 0
    if not config.token:
        print("agent: error: a token is required: --token or BAI_AGENT_TOKEN", file=sys.stderr)
        return 2
    refusal = local_backend_refusal(config, os.geteuid())
    if refusal:
        print(f"agent: error: {refusal}", file=sys.stderr)
        return 2
    warn_about_local_backend(config, os.geteuid())

    from .agent import Agent
    from .backends import BackendSettings, make_backend
    from .client import ManagerClient

    probe, resources = _probe_and_resources(config)
    gpus = resources.cuda.devices if resources.cuda else []
    try:
        backend = make_backend(config.backend, BackendSettings.from_config(config, gpus))
    except Exception as exc:  # noqa: BLE001 - e.g. no Docker engine
        print(f"agent: error: cannot start the {config.backend} backend: {exc}", file=sys.stderr)
        return 1
    client = ManagerClient(config.manager_url, config.token)
    agent = Agent(config, backend, client, resources, gpu_probe=probe if resources.cuda else None)

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: shutting down (kernels keep running)", signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return agent.run()
