"""Request shapes of the worker API and of start-service."""
import json

from rest_framework import serializers

from appproxy.models import FrontendMode, Protocol
from backendai.daemons import METRICS_ADDRESS_RE


class RegisterSerializer(serializers.Serializer):
    frontend_mode = serializers.ChoiceField(choices=FrontendMode.values, default=FrontendMode.PORT)
    protocols = serializers.ListField(child=serializers.ChoiceField(choices=Protocol.values), required=False,
                                      allow_empty=False)
    scheme = serializers.ChoiceField(choices=["http", "https"], default="http")
    advertised_host = serializers.CharField(max_length=255)
    api_endpoint = serializers.URLField(max_length=512)
    hint_url = serializers.URLField(max_length=512, required=False, allow_blank=True)
    # host:port of the worker's /metrics (a wildcard host becomes advertised_host)
    metrics_address = serializers.RegexField(METRICS_ADDRESS_RE, max_length=262, required=False, allow_blank=True,
                                             default="")
    port_range = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=65535),
                                       min_length=2, max_length=2, required=False, allow_null=True)
    wildcard_domain = serializers.CharField(max_length=255, required=False, allow_blank=True, allow_null=True)
    wildcard_port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    capacity = serializers.IntegerField(min_value=0, required=False, default=0)
    version = serializers.CharField(max_length=64, required=False, allow_blank=True)


class HeartbeatSerializer(serializers.Serializer):
    circuits = serializers.DictField(child=serializers.JSONField(), required=False, default=dict,
                                     help_text="{circuit_id: last access (ISO 8601 or unix seconds)}")
    failed_ports = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=65535),
                                         required=False, default=list)
    inference = serializers.DictField(child=serializers.DictField(), required=False, default=dict,
                                      help_text="{circuit_id: {health: {route_id: {...}}, counters: {...}}}")

    def validate_inference(self, value):
        if len(value) > 500:
            raise serializers.ValidationError("at most 500 circuits")
        return value


class RouteHealthSerializer(serializers.Serializer):
    circuits = serializers.DictField(child=serializers.DictField(child=serializers.DictField()),
                                     help_text="{circuit_id: {route_id: {status, changed_at, checked_at, ...}}}")

    def validate_circuits(self, value):
        if len(value) > 500:
            raise serializers.ValidationError("at most 500 circuits")
        return value


class RedeemSetupSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=2048, trim_whitespace=False)


class JSONObjectField(serializers.Field):
    """A JSON object given as an object or as a JSON-encoded string (the SDK sends strings)."""

    default_error_messages = {"invalid": "expected a JSON object (or a string holding one)"}

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data.strip():
                return {}
            try:
                data = json.loads(data)
            except ValueError:
                self.fail("invalid")
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class StartServiceSerializer(serializers.Serializer):
    app = serializers.CharField(max_length=64)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    envs = JSONObjectField(required=False, allow_null=True)
    arguments = JSONObjectField(required=False, allow_null=True)
    login_session_token = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    open_to_public = serializers.BooleanField(required=False, allow_null=True, default=None)
    allowed_client_ips = serializers.JSONField(required=False, allow_null=True, default=None,
                                               help_text="List of IPs/CIDRs (or a comma string).")
    redirect = serializers.CharField(required=False, default="/", max_length=1024, trim_whitespace=False)


# --- the coordinator's own REST API (python -m appproxy.coordinator) --------------------------------

class WorkerRegisterByNameSerializer(RegisterSerializer):
    """``POST /workers/register``: today's register payload plus the worker's name."""

    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", max_length=64,
                                  error_messages={"invalid": "1-64 letters, digits, '.', '_' or '-'"})


class RouteCreateSerializer(serializers.Serializer):
    """``POST /routes``: a session's app, opened for ``user_id`` (default: the session's owner)."""

    session_id = serializers.UUIDField()
    app = serializers.CharField(max_length=64)
    user_id = serializers.UUIDField(required=False, allow_null=True, default=None)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True, default=None)
    envs = JSONObjectField(required=False, allow_null=True, default=None)
    arguments = JSONObjectField(required=False, allow_null=True, default=None)
    open_to_public = serializers.BooleanField(required=False, allow_null=True, default=None)
    allowed_client_ips = serializers.JSONField(required=False, allow_null=True, default=None,
                                               help_text="List of IPs/CIDRs (or a comma string).")
    redirect = serializers.CharField(required=False, default="/", max_length=1024, trim_whitespace=False)


class RouteFilterSerializer(serializers.Serializer):
    session_id = serializers.UUIDField(required=False)
    worker_id = serializers.UUIDField(required=False)
    reason = serializers.CharField(max_length=64, required=False, default="session-ended")
