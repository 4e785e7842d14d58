"""Request shapes of ``/services`` (Backend.AI's names and aliases).  Every field
has a type, a range or a length checked here, before any service runs: a wrong
one is 400 ``invalid-api-params`` naming the field.  What needs the database
(the model folder, the image, the project, the resource group, the runtime's
definition) is ``serving.services.endpoints.create_endpoint``'s to check."""
from __future__ import annotations

import math
import re
import time

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backendai.api import errors
from backendai.api.parsers import validated_params
from serving.models import MAX_REPLICAS
from serving.services import endpoints

NAME_MAX = 64
IMAGE_MAX = 512
ARCH_MAX = 32
LABEL_MAX = 64  # domain, project, resource group, tag
ACCESS_KEY_MAX = 20
MODEL_REF_MAX = 128  # a folder name or id
PATH_MAX = 255  # Endpoint.model_mount_destination / model_definition_path
CALLBACK_URL_MAX = 2048  # Endpoint.callback_url
COMMAND_MAX = 64 * 1024
SCRIPT_MAX = 256 * 1024
RUNTIME_MAX = 32
MAP_MAX_ENTRIES = 256
MAP_KEY_MAX = 256
MAP_VALUE_MAX = 32 * 1024
EXTRA_MOUNTS_MAX = 64
CLUSTER_SIZE_MAX = 64
#: token lifetimes (the service's bounds): at least a minute, at most a year
TOKEN_MIN_SECONDS, TOKEN_MAX_SECONDS = endpoints.TOKEN_MIN_SECONDS, endpoints.TOKEN_MAX_SECONDS
DURATION_RE = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)\s*([smhdw]?)")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class StrictText(serializers.CharField):
    """A string (never a number or a list coerced into one) without NUL or control
    characters (newlines and tabs only where ``multiline``), kept verbatim."""

    default_error_messages = {"invalid": "Must be a string.", "control": "Must not contain control characters."}

    def __init__(self, *, multiline: bool = False, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        self.multiline = multiline
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if "\x00" in data or (_CONTROL.search(data) if self.multiline else re.search(r"[\x00-\x1f\x7f]", data)):
            self.fail("control")
        return super().to_internal_value(data)


class StrictInt(serializers.IntegerField):
    """An integer: a JSON number without a fraction (not a bool, not a string)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        if isinstance(data, float) and (not math.isfinite(data) or not data.is_integer()):
            self.fail("invalid")
        return super().to_internal_value(int(data))


class StrictFloat(serializers.FloatField):
    """A finite JSON number (not a bool, not a string)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        if isinstance(data, int) and abs(data) > 2**53:
            self.fail("max_value", max_value=self.max_value)
        return super().to_internal_value(data)


class StrictBool(serializers.BooleanField):
    """``true``/``false`` (the client sends JSON booleans; ``"true"``/``1`` are taken, nothing else)."""

    def to_internal_value(self, data):
        if isinstance(data, (bool, int, str)) and not (isinstance(data, str) and len(data) > 8):
            return super().to_internal_value(data)
        self.fail("invalid", input=str(type(data).__name__))


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class StringMap(serializers.Field):
    """A JSON object of string keys to strings or numbers (environ, resources, resource_opts), bounded."""

    default_error_messages = {"invalid": "Must be an object of names to strings or numbers."}

    def __init__(self, *, numbers: bool = True, max_entries: int = MAP_MAX_ENTRIES, **kwargs):
        self.numbers = numbers
        self.max_entries = max_entries
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        if len(data) > self.max_entries:
            raise serializers.ValidationError(f"At most {self.max_entries} entries.")
        result = {}
        for key, value in data.items():
            if not isinstance(key, str) or not key or len(key) > MAP_KEY_MAX or "\x00" in key:
                raise serializers.ValidationError(f"Names must be strings of 1 to {MAP_KEY_MAX} characters.")
            if isinstance(value, bool) or value is None:
                raise serializers.ValidationError(f"{key[:64]}: must be a string or a number.")
            if isinstance(value, (int, float)):
                if not self.numbers or (isinstance(value, float) and not math.isfinite(value)):
                    raise serializers.ValidationError(f"{key[:64]}: must be a string.")
                if abs(value) > 2**63:
                    raise serializers.ValidationError(f"{key[:64]}: is out of range.")
            elif isinstance(value, str):
                if len(value) > MAP_VALUE_MAX or "\x00" in value:
                    raise serializers.ValidationError(f"{key[:64]}: at most {MAP_VALUE_MAX} characters, no NUL.")
            else:
                raise serializers.ValidationError(f"{key[:64]}: must be a string or a number.")
            result[key] = value
        return result

    def to_representation(self, value):
        return value


@extend_schema_field({"oneOf": [{"type": "object"}, {"type": "array"}]})
class ExtraMountsField(serializers.Field):
    """Extra folders mounted beside the model: 24.09's ``{folder id: {"mount_destination", "type"}}``
    or a list of ``{"vfolder_id", "mount_destination"}``.  Normalised to the list form."""

    default_error_messages = {"invalid": "Must be an object of folder ids to mount options, or a list of them."}

    def _one(self, ref, options) -> dict:
        if not isinstance(ref, str) or not ref or len(ref) > MODEL_REF_MAX or "\x00" in ref:
            raise serializers.ValidationError(f"A folder id or name must be a string of 1 to {MODEL_REF_MAX} characters.")
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise serializers.ValidationError(f"{ref[:40]}: mount options must be an object.")
        destination = options.get("mount_destination")
        if destination is not None and (not isinstance(destination, str) or len(destination) > PATH_MAX
                                        or "\x00" in destination):
            raise serializers.ValidationError(f"{ref[:40]}: mount_destination must be a path of at most {PATH_MAX} characters.")
        kind = options.get("type")
        if kind is not None and (not isinstance(kind, str) or len(kind) > 16):
            raise serializers.ValidationError(f"{ref[:40]}: type must be a short string.")
        permission = options.get("permission")
        if permission is not None and (not isinstance(permission, str) or len(permission) > 8):
            raise serializers.ValidationError(f"{ref[:40]}: permission must be a short string.")
        mount = {"vfolder_id": ref, "mount_destination": destination or None}
        if kind:
            mount["type"] = kind
        if permission:
            mount["permission"] = permission
        return mount

    def to_internal_value(self, data):
        if isinstance(data, dict):
            items = list(data.items())
        elif isinstance(data, list):
            items = []
            for entry in data:
                if isinstance(entry, str):
                    items.append((entry, {}))
                elif isinstance(entry, dict):
                    ref = entry.get("vfolder_id", entry.get("id"))
                    items.append((ref, entry))
                else:
                    self.fail("invalid")
        else:
            self.fail("invalid")
        if len(items) > EXTRA_MOUNTS_MAX:
            raise serializers.ValidationError(f"At most {EXTRA_MOUNTS_MAX} extra mounts.")
        return [self._one(ref, options) for ref, options in items]

    def to_representation(self, value):
        return value


@extend_schema_field(OpenApiTypes.STR)
class ModelVersionField(serializers.Field):
    """Unused by Backend.AI (reserved); an integer or a short string is accepted."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, str)) or (isinstance(data, str) and len(data) > 64):
            raise serializers.ValidationError("Must be an integer or a short string.")
        if isinstance(data, int) and not 0 <= data < 2**31:
            raise serializers.ValidationError("Is out of range.")
        return data

    def to_representation(self, value):
        return value


class ServiceConfigSerializer(serializers.Serializer):
    model = StrictText(max_length=MODEL_REF_MAX)
    model_version = ModelVersionField(required=False, allow_null=True)
    model_mount_destination = StrictText(max_length=PATH_MAX, required=False, allow_null=True, allow_blank=True)
    model_definition_path = StrictText(max_length=PATH_MAX, required=False, allow_null=True, allow_blank=True)
    environ = StringMap(numbers=False, required=False, allow_null=True)
    scaling_group = StrictText(max_length=LABEL_MAX, required=False, allow_null=True, allow_blank=True)
    resources = StringMap(max_entries=64, required=False, allow_null=True)
    resource_opts = StringMap(max_entries=32, required=False, allow_null=True)
    extra_mounts = ExtraMountsField(required=False, allow_null=True)


#: Backend.AI's aliases (request name -> canonical name), at the top level and in ``config``
ALIASES = {
    "service_name": "name", "clientSessionToken": "name",
    "desiredSessionCount": "desired_session_count",
    "lang": "image", "arch": "architecture",
    "groupName": "group", "group_name": "group", "domainName": "domain", "domain_name": "domain",
    "clusterSize": "cluster_size", "clusterMode": "cluster_mode",
    "startupCommand": "startup_command", "bootstrapScript": "bootstrap_script",
    "callbackUrl": "callback_url", "CallbackURL": "callback_url", "ownerAccessKey": "owner_access_key",
    "runtimeVariant": "runtime_variant", "openToPublic": "open_to_public",
}
CONFIG_ALIASES = {
    "modelVersion": "model_version", "modelMountDestination": "model_mount_destination",
    "modelDefinitionPath": "model_definition_path", "scalingGroup": "scaling_group",
    "resourceOpts": "resource_opts", "extraMounts": "extra_mounts",
}


class ServiceCreateSerializer(serializers.Serializer):
    name = StrictText(min_length=1, max_length=NAME_MAX)
    desired_session_count = StrictInt(min_value=0, max_value=MAX_REPLICAS, required=False, allow_null=True)
    replicas = StrictInt(min_value=0, max_value=MAX_REPLICAS, required=False, allow_null=True)
    image = StrictText(min_length=1, max_length=IMAGE_MAX)
    architecture = StrictText(max_length=ARCH_MAX, required=False, allow_null=True, allow_blank=True)
    group = StrictText(max_length=LABEL_MAX, required=False, allow_null=True, allow_blank=True)
    domain = StrictText(max_length=LABEL_MAX, required=False, allow_null=True, allow_blank=True)
    cluster_size = StrictInt(min_value=1, max_value=CLUSTER_SIZE_MAX, required=False, allow_null=True)
    cluster_mode = serializers.ChoiceField(choices=["single-node", "multi-node"], required=False, allow_null=True)
    tag = StrictText(max_length=LABEL_MAX, required=False, allow_null=True, allow_blank=True)
    startup_command = StrictText(multiline=True, max_length=COMMAND_MAX, required=False, allow_null=True,
                                 allow_blank=True)
    bootstrap_script = StrictText(multiline=True, max_length=SCRIPT_MAX, required=False, allow_null=True,
                                  allow_blank=True)
    callback_url = StrictText(max_length=CALLBACK_URL_MAX, required=False, allow_null=True, allow_blank=True)
    owner_access_key = StrictText(max_length=ACCESS_KEY_MAX, required=False, allow_null=True, allow_blank=True)
    open_to_public = StrictBool(required=False, allow_null=True)
    runtime_variant = StrictText(max_length=RUNTIME_MAX, required=False, allow_null=True, allow_blank=True)
    config = ServiceConfigSerializer()


def _canonical(data: dict, aliases: dict) -> dict:
    """The body with aliases renamed (a canonical key the client also sent wins)."""
    result = dict(data)
    for alias, name in aliases.items():
        if alias in result:
            value = result.pop(alias)
            if result.get(name) is None:
                result[name] = value
    return result


def parse_create(data) -> dict:
    """The validated create request as the spec ``create_endpoint`` takes: Backend.AI's body with the
    canonical names (``replicas`` for ``desired_session_count``), ``config`` nested, only what was sent."""
    if not isinstance(data, dict):
        raise errors.InvalidAPIParameters("The request body must be a JSON object")
    body = _canonical(data, ALIASES)
    config = body.get("config")
    if isinstance(config, dict):
        body["config"] = _canonical(config, CONFIG_ALIASES)
    elif config is None:
        raise errors.InvalidAPIParameters("config: is required (with config.model, the model folder)")
    serializer = ServiceCreateSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    spec = {key: value for key, value in serializer.validated_data.items() if key != "config"}
    spec["config"] = dict(serializer.validated_data["config"])
    replicas = spec.pop("replicas", None)
    count = spec.pop("desired_session_count", None)
    replicas = count if replicas is None else replicas
    if replicas is None:
        raise errors.InvalidAPIParameters("desired_session_count: is required (the number of replicas)")
    spec["replicas"] = replicas
    return spec


class ListSerializer(serializers.Serializer):
    name = StrictText(max_length=NAME_MAX, required=False, allow_null=True, allow_blank=True)
    owner_access_key = StrictText(max_length=ACCESS_KEY_MAX, required=False, allow_null=True, allow_blank=True)


class ScaleSerializer(serializers.Serializer):
    to = StrictInt(min_value=0, max_value=MAX_REPLICAS)


class TrafficRatioSerializer(serializers.Serializer):
    traffic_ratio = StrictFloat(min_value=0.0, max_value=100.0)


def parse_duration(value) -> float:
    """Backend.AI's ``TimeDuration``: ``"30m"``, ``"2h"``, ``"3d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise serializers.ValidationError("Must be a duration such as 30m, 2h, 3d or a number of seconds.")
    if isinstance(value, str):
        match = DURATION_RE.fullmatch(value.strip()) if len(value) <= 32 else None
        if match is None:
            raise serializers.ValidationError("Must be a duration such as 30m, 2h, 3d or a number of seconds.")
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    else:
        if not math.isfinite(value):
            raise serializers.ValidationError("Must be a finite number of seconds.")
        seconds = float(value)
    if seconds < TOKEN_MIN_SECONDS:
        raise serializers.ValidationError(f"Must be at least {TOKEN_MIN_SECONDS} seconds.")
    if seconds > TOKEN_MAX_SECONDS:
        raise serializers.ValidationError(f"Must be at most {TOKEN_MAX_SECONDS // 86400} days.")
    return seconds


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "number"}]})
class DurationField(serializers.Field):
    def to_internal_value(self, data):
        return parse_duration(data)

    def to_representation(self, value):
        return value


class TokenSerializer(serializers.Serializer):
    duration = DurationField(required=False, allow_null=True)
    valid_until = StrictInt(min_value=0, max_value=2**40, required=False, allow_null=True)


def token_seconds(p: dict) -> int:
    """The lifetime a validated ``TokenSerializer`` asks for: ``duration``, or ``valid_until`` from now."""
    duration = p.get("duration")
    if duration is None and p.get("valid_until") is not None:
        remaining = p["valid_until"] - time.time()
        if remaining < TOKEN_MIN_SECONDS:
            raise errors.InvalidAPIParameters(f"valid_until: must be at least {TOKEN_MIN_SECONDS} seconds ahead")
        if remaining > TOKEN_MAX_SECONDS:
            raise errors.InvalidAPIParameters(f"valid_until: at most {TOKEN_MAX_SECONDS // 86400} days ahead")
        duration = remaining
    if duration is None:
        raise errors.InvalidAPIParameters("duration or valid_until: one is required")
    return int(duration)


params = validated_params  # query parameters and the JSON body (which wins), validated
