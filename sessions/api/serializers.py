"""Parse Backend.AI's session create request, with its key aliases, into an EnqueueRequest."""
from __future__ import annotations

from backendai.api import errors
from sessions.enqueue import EnqueueRequest

ALIASES = {
    "name": ("name", "session_name", "sessionName", "clientSessionToken"),
    "image": ("image", "lang"),
    "architecture": ("architecture", "arch"),
    "session_type": ("type", "sessionType", "session_type"),
    "group": ("group", "groupName", "group_name"),
    "cluster_size": ("cluster_size", "clusterSize"),
    "cluster_mode": ("cluster_mode", "clusterMode"),
    "enqueue_only": ("enqueueOnly", "enqueue_only"),
    "max_wait_seconds": ("maxWaitSeconds", "max_wait_seconds"),
    "reuse_if_exists": ("reuseIfExists", "reuse_if_exists"),
    "startup_command": ("startupCommand", "startup_command"),
    "bootstrap_script": ("bootstrap_script", "bootstrapScript"),
    "callback_url": ("callback_url", "callbackUrl", "callbackURL"),
    "owner_access_key": ("owner_access_key", "ownerAccessKey"),
    "batch_timeout": ("batch_timeout", "batchTimeout"),
}
CONFIG_ALIASES = {
    "scaling_group": ("scaling_group", "scalingGroup"),
    "resource_opts": ("resource_opts", "resourceOpts"),
    "mount_map": ("mount_map", "mountMap"),
    "mount_options": ("mount_options", "mountOptions"),
    "preopen_ports": ("preopen_ports", "preopenPorts"),
    "agent_list": ("agent_list", "agentList"),
}


def _pick(data: dict, names: tuple) -> object:
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return None


def _as(kind, value, field):
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise errors.InvalidAPIParameters(f"{field} must be a boolean")
    if kind is int:
        if isinstance(value, bool):
            raise errors.InvalidAPIParameters(f"{field} must be an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise errors.InvalidAPIParameters(f"{field} must be an integer") from None
    if kind is str:
        if not isinstance(value, (str, int)):
            raise errors.InvalidAPIParameters(f"{field} must be a string")
        return str(value)
    if kind is dict:
        if not isinstance(value, dict):
            raise errors.InvalidAPIParameters(f"{field} must be an object")
        return value
    if kind is list:
        if not isinstance(value, list):
            raise errors.InvalidAPIParameters(f"{field} must be a list")
        return value
    return value


TYPES = {"name": str, "image": str, "architecture": str, "session_type": str, "group": str, "cluster_size": int,
         "cluster_mode": str, "enqueue_only": bool, "max_wait_seconds": int, "reuse_if_exists": bool,
         "startup_command": str, "bootstrap_script": str, "callback_url": str, "owner_access_key": str,
         "batch_timeout": int}
CONFIG_TYPES = {"scaling_group": str, "resource_opts": dict, "mount_map": dict, "mount_options": dict,
                "preopen_ports": list, "agent_list": list, "mounts": list, "environ": dict, "resources": dict}


def parse_create_request(data) -> EnqueueRequest:
    if not isinstance(data, dict):
        raise errors.InvalidAPIParameters("The request body must be a JSON object")
    fields = {}
    for key, names in ALIASES.items():
        fields[key] = _as(TYPES[key], _pick(data, names), names[0])
    for key in ("domain", "tag", "starts_at", "priority", "dependencies"):
        if data.get(key) is not None:
            fields[key] = data[key]
    config = _as(dict, data.get("config"), "config") or {}
    for key, names in CONFIG_ALIASES.items():
        fields[key] = _as(CONFIG_TYPES[key], _pick(config, names), names[0])
    for key in ("mounts", "environ", "resources"):
        fields[key] = _as(CONFIG_TYPES[key], config.get(key), key)
    if fields.get("cluster_size") is None and config.get("clusterSize") is not None:
        fields["cluster_size"] = _as(int, config["clusterSize"], "clusterSize")
    if not fields.get("image"):
        raise errors.InvalidAPIParameters("image is required")
    if "priority" in fields:
        fields["priority"] = _as(int, fields["priority"], "priority")
    if "dependencies" in fields:
        fields["dependencies"] = _as(list, fields["dependencies"], "dependencies")
    if fields.get("max_wait_seconds") is not None and fields["max_wait_seconds"] < 0:
        raise errors.InvalidAPIParameters("maxWaitSeconds must be >= 0")
    mounts = fields.get("mounts") or []
    if any(not isinstance(m, str) for m in mounts):
        raise errors.InvalidAPIParameters("config.mounts must be a list of folder names or ids")
    return EnqueueRequest(**{k: v for k, v in fields.items() if v is not None})
