"""Parse Backend.AI's session create request, with its key aliases, into an EnqueueRequest."""
from __future__ import annotations

from backendai.api import errors
from sessions import validation
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


def _pick(data: dict, names: tuple) -> tuple[object, str]:
    """The first alias present with a value, and the name the client used."""
    for name in names:
        if name in data and data[name] is not None:
            return data[name], name
    return None, names[0]


TOP_LEVEL = ("domain", "tag", "starts_at", "priority", "dependencies")
CONFIG_PLAIN = ("mounts", "environ", "resources")


def parse_create_request(data) -> EnqueueRequest:
    """Map the aliases to canonical names, then check every field's type, range and
    length (``sessions.validation``) before anything else happens."""
    if not isinstance(data, dict):
        raise errors.InvalidAPIParameters("The request body must be a JSON object")
    fields, names = {}, {}
    for key, aliases in ALIASES.items():
        fields[key], names[key] = _pick(data, aliases)
    for key in TOP_LEVEL:
        fields[key], names[key] = data.get(key), key
    config = data.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise validation.invalid("config", "must be an object")
    for key, aliases in CONFIG_ALIASES.items():
        value, used = _pick(config, aliases)
        fields[key], names[key] = value, f"config.{used}"
    for key in CONFIG_PLAIN:
        fields[key], names[key] = config.get(key), f"config.{key}"
    if fields.get("cluster_size") is None and config.get("clusterSize") is not None:
        fields["cluster_size"], names["cluster_size"] = config["clusterSize"], "config.clusterSize"
    if fields.get("image") in (None, ""):
        raise validation.invalid("image", "is required")
    cleaned = validation.clean_create(fields, names)
    return EnqueueRequest(**cleaned)
