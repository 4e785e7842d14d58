"""Forms of the serving web UI ("Serving" page).

The forms only shape input: the rules of an endpoint (names, model folders,
runtimes, definitions, replicas, resources) live in ``serving.services``; what
they refuse comes back as a ``BackendAIError`` and ``attach_service_error``
puts its message beside the field it is about.  The forms check what only a
form can (a parseable amount, a number in range) before calling a service.
"""
from __future__ import annotations

import re

from django import forms

from agents import services as agent_services
from agents.models import Image, ImageType
from backendai.api import errors
from backendai.slots import SlotError, parse_binary_size, parse_count
from serving.models import DEFAULT_MODEL_MOUNT, MAX_REPLICAS, Comparator, MetricSource
from serving.services.endpoints import NAME_MAX
from vfolders import services as vfolder_services
from vfolders.models import UsageMode

#: Where a refused field of the create request is shown (the service's ``field`` or the
#: first word of it; Backend.AI's body names on the left).
FIELD_OF = {
    "name": "name", "service_name": "name", "model": "model", "config.model": "model", "image": "image",
    "architecture": "image", "arch": "image", "runtime_variant": "runtime_variant", "replicas": "replicas",
    "desired_session_count": "replicas", "resources": "cpu", "resource_opts": "cpu", "cpu": "cpu", "mem": "mem",
    "open_to_public": "open_to_public", "model_definition_path": "model_definition_path",
    "model_definition": "model_definition_path",
    "model_mount_destination": "model_mount_destination", "mount_destination": "model_mount_destination",
    "scaling_group": None, "group": None, "domain": None,
}
#: Where other refusals belong, by words in their message (first match wins).
ERROR_FIELDS = [
    (("model definition", "model-definition", "definition"), "model_definition_path"),
    (("mount destination", "mount_destination"), "model_mount_destination"),
    (("runtime",), "runtime_variant"),
    (("replica",), "replicas"),
    (("memory", " mem"), "mem"),
    (("cpu", "resource", "slot", "quota"), "cpu"),
    (("model folder", "vfolder", "folder", "model"), "model"),
    (("image",), "image"),
    (("name",), "name"),
]


def error_field(exc: errors.BackendAIError, message: str, fields, table=FIELD_OF, words=ERROR_FIELDS) -> str | None:
    """The form field a refusal of a service is about (None: the whole form)."""
    found = _error_field(exc, message, fields, table, words)
    if found == "cpu" and "mem" in fields and re.search(r"\bmem(ory)?\b", message.lower()):
        return "mem"
    return found


def _error_field(exc, message: str, fields, table, words) -> str | None:
    field = getattr(exc, "field", None) or ((exc.data or {}).get("field") if isinstance(exc.data, dict) else None)
    if field:
        for candidate in (str(field), re.split(r"[.\[]", str(field).removeprefix("config."), maxsplit=1)[0]):
            if candidate in table and (table[candidate] is None or table[candidate] in fields):
                return table[candidate]
    prefix = re.match(r"\s*([A-Za-z_][\w.]*):", message)  # the services say "<field>: <problem>"
    if prefix:
        named = prefix.group(1)
        for candidate in (named, named.removeprefix("config."), named.rsplit(".", 1)[-1]):
            if candidate in table and (table[candidate] is None or table[candidate] in fields):
                return table[candidate]
    lowered = message.lower()
    for keys, name in words:
        if name in fields and any(word in lowered for word in keys):
            return name
    return None


class ServiceErrorsMixin:
    field_table = FIELD_OF
    error_words = ERROR_FIELDS

    def attach_service_error(self, exc: errors.BackendAIError) -> None:
        """Show a refusal of a service beside the field it is about."""
        message = exc.msg or exc.error_title
        self.add_error(error_field(exc, message, self.fields, self.field_table, self.error_words), message)


def model_folder_choices(user) -> list[tuple[str, str]]:
    """The model folders (usage mode "model") ``user`` can use, as (id, label)."""
    choices = []
    for access in vfolder_services.list_folders(user):
        folder = access.folder
        if folder.usage_mode == UsageMode.MODEL:
            choices.append((str(folder.pk), folder.name))
    return choices


def image_choices(user) -> list[tuple[str, str]]:
    rows = (agent_services.allowed_images(Image.objects.filter(type=ImageType.COMPUTE), user.domain)
            .order_by("name", "architecture").values_list("name", "architecture"))
    by_name: dict[str, list[str]] = {}
    for name, arch in rows:
        by_name.setdefault(name, []).append(arch)
    return [(name, f"{name} ({', '.join(archs)})") for name, archs in sorted(by_name.items())]


def runtime_choices(runtimes) -> list[tuple[str, str]]:
    """``runtimes``: the runtimes table (``[{"name", "human_readable_name"}]`` as the API lists it)."""
    return [(r["name"], r.get("human_readable_name") or r["name"]) for r in runtimes]


class EndpointCreateForm(ServiceErrorsMixin, forms.Form):
    name = forms.CharField(max_length=64, help_text=f"4-{NAME_MAX} letters, digits, '_', '-', '.'; unique among "
                                                    "yours.")
    model = forms.ChoiceField(label="Model folder", error_messages={
        "invalid_choice": "Pick one of your model folders (a folder created with usage mode 'model')."})
    image = forms.ChoiceField(error_messages={"invalid_choice": "Unknown image %(value)s: pick one of the list."})
    runtime_variant = forms.ChoiceField(label="Runtime", initial="custom",
                                        help_text="custom: the folder's model-definition.yaml says what to run.")
    replicas = forms.IntegerField(min_value=0, max_value=MAX_REPLICAS, initial=1)
    cpu = forms.CharField(label="CPU cores (each replica)", required=False, max_length=16, initial="1",
                          widget=forms.TextInput(attrs={"inputmode": "decimal", "size": 8}), help_text="e.g. 1 or 0.5")
    mem = forms.CharField(label="Memory (each replica)", required=False, max_length=16, initial="1g",
                          widget=forms.TextInput(attrs={"size": 8}), help_text="e.g. 1g or 512m")
    open_to_public = forms.BooleanField(required=False, label="Open to public (no token needed)")
    model_definition_path = forms.CharField(required=False, max_length=255, label="Model definition path",
                                            help_text="In the model folder; empty: model-definition.yaml.")
    model_mount_destination = forms.CharField(required=False, max_length=255, label="Mount destination",
                                              initial=DEFAULT_MODEL_MOUNT)

    def __init__(self, *args, user, runtimes, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["model"].choices = [("", "— choose a model folder —")] + model_folder_choices(user)
        self.fields["image"].choices = [("", "— choose an image —")] + image_choices(user)
        self.fields["runtime_variant"].choices = runtime_choices(runtimes)

    def _amount(self, name, parse):
        raw = (self.cleaned_data.get(name) or "").strip()
        if not raw:
            return ""
        try:
            amount = parse(raw, name)
        except SlotError as exc:
            raise forms.ValidationError(str(exc)) from None
        if amount.is_infinite() or amount <= 0:
            raise forms.ValidationError("Ask for a positive, finite amount.")
        return raw

    def clean_cpu(self):
        return self._amount("cpu", parse_count)

    def clean_mem(self):
        return self._amount("mem", parse_binary_size)

    def spec(self) -> dict:
        """The create request, in the shape of Backend.AI's ``POST /services`` body."""
        data = self.cleaned_data
        resources = {slot: data[slot] for slot in ("cpu", "mem") if data.get(slot)}
        config = {"model": data["model"], "resources": resources}
        if data.get("model_definition_path"):
            config["model_definition_path"] = data["model_definition_path"].strip()
        if data.get("model_mount_destination"):
            config["model_mount_destination"] = data["model_mount_destination"].strip()
        return {
            "name": data["name"].strip(), "replicas": data["replicas"], "image": data["image"],
            "runtime_variant": data["runtime_variant"], "open_to_public": bool(data.get("open_to_public")),
            "config": config,
        }


class ScaleForm(ServiceErrorsMixin, forms.Form):
    replicas = forms.IntegerField(min_value=0, max_value=MAX_REPLICAS)
    field_table = {"replicas": "replicas", "to": "replicas"}
    error_words = [(("replica",), "replicas")]


class TrafficRatioForm(ServiceErrorsMixin, forms.Form):
    traffic_ratio = forms.FloatField(min_value=0.0, max_value=100.0, label="Traffic ratio")
    field_table = {"traffic_ratio": "traffic_ratio"}
    error_words = [(("ratio",), "traffic_ratio")]


TOKEN_DURATIONS = [("3600", "1 hour"), ("86400", "1 day"), ("604800", "7 days"), ("2592000", "30 days")]


class TokenForm(forms.Form):
    duration = forms.TypedChoiceField(choices=TOKEN_DURATIONS, coerce=int, initial="86400", label="Valid for")


PROXY_METRICS = [("request_rate", "request rate (req/s)"), ("request_rate_per_replica", "request rate per replica"),
                 ("inflight", "in-flight requests"), ("latency_mean", "mean latency (s)"),
                 ("latency_p99", "p99 latency (s)"), ("error_rate", "error rate (errors/s)")]
KERNEL_METRICS = [("cpu_util", "CPU utilisation (%)"), ("mem_util", "memory utilisation (%)"),
                  ("cuda_util", "GPU utilisation (%)")]


class AutoScalingRuleForm(ServiceErrorsMixin, forms.Form):
    metric_source = forms.ChoiceField(choices=MetricSource.choices, initial=MetricSource.PROXY, label="Source")
    metric_name = forms.ChoiceField(choices=[("Proxy", PROXY_METRICS), ("Kernel", KERNEL_METRICS)], label="Metric")
    comparator = forms.ChoiceField(choices=Comparator.choices, initial=Comparator.GREATER_THAN)
    threshold = forms.FloatField(min_value=-1e12, max_value=1e12)
    step_size = forms.IntegerField(min_value=-MAX_REPLICAS, max_value=MAX_REPLICAS, label="Step (replicas)",
                                   help_text="positive: add replicas; negative: remove")
    cooldown_seconds = forms.IntegerField(min_value=0, max_value=86400, initial=300, label="Cooldown (s)")
    window_seconds = forms.IntegerField(min_value=1, max_value=3600, initial=30, label="Window (s)")
    min_replicas = forms.IntegerField(required=False, min_value=0, max_value=MAX_REPLICAS, label="Min replicas")
    max_replicas = forms.IntegerField(required=False, min_value=0, max_value=MAX_REPLICAS, label="Max replicas")
    field_table = {name: name for name in ("metric_source", "metric_name", "comparator", "threshold", "step_size",
                                           "cooldown_seconds", "window_seconds", "min_replicas", "max_replicas")}
    error_words = [(("step",), "step_size"), (("cooldown",), "cooldown_seconds"), (("window",), "window_seconds"),
                   (("min_replicas", "minimum"), "min_replicas"), (("max_replicas", "maximum"), "max_replicas"),
                   (("threshold",), "threshold"), (("comparator",), "comparator"), (("source",), "metric_source"),
                   (("metric",), "metric_name")]

    def clean(self):
        data = super().clean()
        if data.get("step_size") == 0:
            self.add_error("step_size", "A step of 0 replicas changes nothing.")
        low, high = data.get("min_replicas"), data.get("max_replicas")
        if low is not None and high is not None and low > high:
            self.add_error("max_replicas", "The maximum is below the minimum.")
        names = {n for n, _ in (PROXY_METRICS if data.get("metric_source") == MetricSource.PROXY else KERNEL_METRICS)}
        if data.get("metric_name") and data.get("metric_source") and data["metric_name"] not in names:
            self.add_error("metric_name", f"{data['metric_name']} is not a metric of the "
                                          f"{MetricSource(data['metric_source']).label.lower()}.")
        return data

    def spec(self) -> dict:
        return {key: self.cleaned_data.get(key) for key in self.field_table}
