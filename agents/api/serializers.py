from rest_framework import serializers

from agents.models import agent_id_validator
from agents.protocol import ReportedStatus
from backendai.daemons import METRICS_ADDRESS_RE

KERNEL_STATES = [s.value for s in ReportedStatus]


class ServicePortSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    protocol = serializers.CharField(max_length=16)
    container_ports = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=65535))
    host_ports = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=65535, allow_null=True),
                                       required=False)


class KernelReportSerializer(serializers.Serializer):
    kernel_id = serializers.UUIDField()
    session_id = serializers.UUIDField(required=False, allow_null=True)
    status = serializers.ChoiceField(choices=KERNEL_STATES)
    container_id = serializers.CharField(max_length=128, required=False, allow_blank=True, allow_null=True)
    host = serializers.CharField(max_length=256, required=False, allow_blank=True, allow_null=True)
    service_ports = ServicePortSerializer(many=True, required=False)
    exit_code = serializers.IntegerField(required=False, allow_null=True)
    reason = serializers.CharField(max_length=64, required=False, allow_blank=True, allow_null=True)
    last_logs = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False)
    stats = serializers.DictField(required=False, allow_null=True)
    timestamp = serializers.DateTimeField(required=False, allow_null=True)
    restart_id = serializers.CharField(max_length=64, required=False, allow_blank=True, allow_null=True)


class SyncSerializer(serializers.Serializer):
    agent_id = serializers.CharField(max_length=64, validators=[agent_id_validator])
    scaling_group = serializers.CharField(max_length=64)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    address = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")
    public_host = serializers.CharField(max_length=256, required=False, allow_blank=True, default="")
    # host:port of the agent's own /metrics (docs/agent-protocol.md); a wildcard host becomes `address`
    metrics_address = serializers.RegexField(METRICS_ADDRESS_RE, max_length=262, required=False, allow_blank=True,
                                             default="")
    version = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    architecture = serializers.CharField(max_length=32, required=False, default="x86_64")
    backend = serializers.ChoiceField(choices=["docker", "local"], required=False, default="docker")
    capacity = serializers.DictField(child=serializers.CharField())
    slot_types = serializers.DictField(child=serializers.ChoiceField(choices=["count", "bytes", "unique"]), required=False,
                                       default=dict)
    compute_plugins = serializers.DictField(required=False, default=dict)
    devices = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    images = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    stats = serializers.DictField(required=False, default=dict)
    kernels = KernelReportSerializer(many=True, required=False, default=list)
    # the long poll (sessions/agent_longpoll.py): hold the answer up to `wait` seconds while it keeps `fingerprint`
    wait = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=3600)
    fingerprint = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=128)


class EventsSerializer(serializers.Serializer):
    agent_id = serializers.CharField(max_length=64, validators=[agent_id_validator])
    events = KernelReportSerializer(many=True)


class ShutdownSerializer(serializers.Serializer):
    agent_id = serializers.CharField(max_length=64, validators=[agent_id_validator])
