"""Forms of the sessions web UI.

The create form only shapes input: the rules of a create request live in
``sessions.enqueue``; what it refuses comes back as a ``BackendAIError`` and
``SessionCreateForm.attach_service_error`` puts the message beside the field
it is about.  The form itself checks what only a form can (a parseable
amount, KEY=VALUE lines) and the request against the owner's remaining quota
(``services.check_presets``), so the user sees the numbers it is checked
against before submitting.

The launcher's extras (``sessions.launch_check``): each amount field shows its
bounds (image minimum, largest agent, policy, remaining quota) as the input's
``min``/``max`` and a line of text; folders the user may mount are offered with
a mode (read-write only where the user may write) and a mount path checked by
the API's own rule (``vfolders.services.container_path``); cluster size and
mode are the API's ``cluster_size``/``cluster_mode``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal

from django import forms

from accounts.services import preferences
from agents import services as agent_services
from agents.models import Image, ImageAlias, ImageType
from backendai import services as manager_services
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError, humanize_binary_size, parse_binary_size, parse_count, slot_type_of
from sessions import launch_check, services, validation
from sessions.enqueue import EnqueueRequest, choose_scaling_group
from sessions.lifecycle import CONCURRENCY_SESSION
from sessions.models import ClusterMode, Session, SessionType
from vfolders import services as vfolder_services
from vfolders.models import HostPermission

USER_SESSION_TYPES = [SessionType.INTERACTIVE, SessionType.BATCH, SessionType.INFERENCE]
SLOT_LABELS = {"cpu": "CPU cores", "mem": "Memory", "cuda.device": "CUDA GPUs", "cuda.shares": "CUDA GPU shares"}
SLOT_HELP = {"cpu": "e.g. 2 or 0.5", "mem": "e.g. 4g or 512m"}
#: Where a refused field of the create request (``sessions.validation``) is shown on the form.
FIELD_OF = {"name": "name", "image": "image", "architecture": "architecture", "session_type": "session_type",
            "startup_command": "startup_command", "starts_at": "startup_command", "batch_timeout": "batch_timeout",
            "environ": "environ", "scaling_group": "scaling_group", "resources": "preset", "resource_opts": "preset",
            "group": "project", "domain": "project", "mounts": "mounts", "mount_map": "mounts",
            "mount_options": "mounts", "cluster_size": "cluster_size", "cluster_mode": "cluster_mode"}
#: Where other errors of the create service belong, by words in their message (first match wins).
ERROR_FIELDS = [
    (("mount", "folder"), "mounts"),
    (("needs at least", "allows at most", "shared memory", "shmem", "resource", "slot", "quota", "exceeds",
      "pending session", "limit"), "preset"),
    (("startup command", "startupcommand", "starts_at", "batch_timeout"), "startup_command"),
    (("scaling group", "accepts", "does not accept"), "scaling_group"),
    (("environ",), "environ"),
    (("session name", "named", "reserved name", "name must"), "name"),
    (("image",), "image"),
    (("project", "domain"), "project"),
    (("session type",), "session_type"),
]


def slot_field_name(slot: str) -> str:
    return "slot_" + re.sub(r"[^A-Za-z0-9_]", "_", slot)


def format_amount(slot: str, amount, slot_types: dict | None = None) -> str:
    """One slot amount for people: ``4 GiB``, ``2``, ``unlimited``."""
    value = Decimal(str(amount))
    if value.is_infinite():
        return "unlimited"
    if slot_type_of(slot, slot_types) == "bytes":
        return humanize_binary_size(max(value, Decimal(0)))
    return format(value.normalize(), "f") if value != value.to_integral() else str(int(value))


def input_amount(slot: str, amount, slot_types: dict | None = None) -> str:
    """One slot amount as the form's amount field takes it back (``4g``, ``512m``, ``2``, ``0.5``)."""
    value = Decimal(str(amount))
    if slot_type_of(slot, slot_types) == "bytes" and value == value.to_integral() and value > 0:
        for suffix, unit in (("t", 2**40), ("g", 2**30), ("m", 2**20), ("k", 2**10)):
            if value % unit == 0:
                return f"{int(value // unit)}{suffix}"
        return str(int(value))
    return format(value.normalize(), "f")


@dataclass
class PresetChoice:
    name: str
    resource_slots: dict
    shared_memory: str | None
    allocatable: bool
    shown: str = ""
    #: amount field name -> value: what choosing this preset puts in the amount fields (static/sessions/presets.js)
    inputs: dict = field(default_factory=dict)

    @property
    def inputs_json(self) -> str:
        return json.dumps(self.inputs, sort_keys=True)


@dataclass
class CreateContext:
    """What the create form offers and checks against, for one user and project."""

    projects: list
    project: object | None
    images: list
    aliases: list
    architectures: list
    scaling_groups: list
    slot_types: dict
    presets: list[PresetChoice] = field(default_factory=list)
    remaining: dict | None = None  # keypair_remaining of check_presets; None: unknown (no keypair)
    limits: dict | None = None
    using: dict | None = None
    #: the folders the user may mount (``vfolders`` Access), dot-folders left out (they mount themselves)
    folders: list = field(default_factory=list)
    #: slot -> launch_check.SlotBound for the chosen image, resource group and cluster
    bounds: dict = field(default_factory=dict)
    bound_group: str = ""  # the resource group the bounds are about
    image_range: str = ""  # what the chosen image asks for and allows (launch_check.image_range)
    #: (reference, architecture, domain name, Image) resolved for the bounds (launch_check.Known.image)
    resolved_image: tuple | None = None
    user: object = None
    sessions_running: int | None = None  # the keypair's live sessions (as max_concurrent_sessions counts them)
    max_sessions: int | None = None

    @property
    def sessions_left(self) -> int | None:
        if self.max_sessions is None or self.sessions_running is None:
            return None
        return max(self.max_sessions - self.sessions_running, 0)

    @property
    def quota_rows(self) -> list[dict]:
        """Per slot: limit, in use and remaining, formatted."""
        if self.remaining is None:
            return []
        rows = []
        for slot in ordered_slots(self.slot_types):
            rows.append({
                "slot": slot,
                "label": SLOT_LABELS.get(slot, slot),
                "limit": format_amount(slot, (self.limits or {}).get(slot, "Infinity"), self.slot_types),
                "using": format_amount(slot, (self.using or {}).get(slot, "0"), self.slot_types),
                "remaining": format_amount(slot, self.remaining.get(slot, "Infinity"), self.slot_types),
            })
        return rows


def ordered_slots(slot_types: dict) -> list[str]:
    return sorted(slot_types, key=lambda s: (s not in ("cpu", "mem"), s != "cpu", s))


def mountable_folders(user, project) -> list:
    """The usable folders ``user`` may mount in a session of ``project``, as ``enqueue`` decides:
    folders the user can access on hosts with the mount permission (dot-folders mount by themselves)."""
    perms = None if user.is_superadmin else vfolder_services.host_permissions(user, None, project)
    return [access for access in vfolder_services.list_folders(user, statuses=vfolder_services.USABLE_STATUSES)
            if not access.folder.name.startswith(".")
            and (perms is None or HostPermission.MOUNT in perms.get(access.folder.host_id, set()))]


def build_context(user, project_name: str | None = None) -> CreateContext:
    """Images, groups, presets and the remaining quota the form shows (a fixed number of queries)."""
    projects = list(user.projects.filter(is_active=True).select_related("domain").order_by("name"))
    project = next((p for p in projects if p.name == project_name), None)
    if project is None:
        project = next((p for p in projects if p.name == "default"), projects[0] if projects else None)
    # only what the user's domain allows (its allowed registries): enqueue refuses the rest
    images = list(agent_services.allowed_images(Image.objects.filter(type=ImageType.COMPUTE), user.domain)
                  .order_by("name", "architecture").values_list("name", "architecture"))
    by_name: dict[str, list[str]] = {}
    for name, arch in images:
        by_name.setdefault(name, []).append(arch)
    aliases = list(agent_services.allowed_images(ImageAlias.objects.filter(image__type=ImageType.COMPUTE),
                                                 user.domain, prefix="image__")
                   .order_by("alias").values_list("alias", "image__name"))
    groups = list(agent_services.allowed_scaling_groups(user, project).order_by("name")) if project else []
    slot_types = manager_services.known_slot_types()
    context = CreateContext(
        projects=projects, project=project, images=sorted(by_name.items()), aliases=aliases,
        architectures=sorted({arch for _, arch in images}), scaling_groups=groups, slot_types=slot_types, user=user,
    )
    if project is not None:
        context.folders = mountable_folders(user, project)
    keypair = user.main_keypair
    if keypair is not None and project is not None:
        try:
            checked = services.check_presets(user, keypair, project)
        except errors.BackendAIError:
            checked = None
        if checked is not None:
            context.remaining = checked["keypair_remaining"]
            context.limits = checked["keypair_limits"]
            context.using = checked["keypair_using"]
            context.presets = [PresetChoice(p["name"], p["resource_slots"], p["shared_memory"], p["allocatable"])
                               for p in checked["presets"]]
            context.max_sessions = keypair.resource_policy.max_concurrent_sessions
            context.sessions_running = Session.objects.filter(
                access_key=keypair, status__in=[str(s) for s in CONCURRENCY_SESSION]).count()
    for preset in context.presets:
        preset.shown = " · ".join(f"{slot} {format_amount(slot, amount, slot_types)}"
                                  for slot, amount in sorted(preset.resource_slots.items()) if Decimal(amount) != 0)
        preset.inputs = {slot_field_name(slot): (input_amount(slot, preset.resource_slots[slot], slot_types)
                                                 if Decimal(preset.resource_slots.get(slot, 0)) != 0 else "")
                         for slot in ordered_slots(slot_types)}
    return context


def initial_choices(user, context: CreateContext) -> dict:
    """The user's default preset and resource group (``accounts.services.preferences``), where still offered."""
    prefs = preferences.preferences_for(user)
    initial = {}
    if prefs.default_preset and any(p.name == prefs.default_preset for p in context.presets):
        initial["preset"] = prefs.default_preset
    if prefs.default_resource_group and any(g.name == prefs.default_resource_group for g in context.scaling_groups):
        initial["scaling_group"] = prefs.default_resource_group
    return initial


def _cluster_size(raw) -> int:
    try:
        return min(max(int(str(raw or "1").strip()), 1), validation.CLUSTER_SIZE_MAX)
    except ValueError:
        return 1


def attach_bounds(context: CreateContext, data) -> None:
    """The bounds of each amount for what ``data`` (POST data or initial values) chose:
    its image, resource group (or the one "Automatic" picks) and cluster."""
    project, user = context.project, context.user
    image = None
    image_ref = (data.get("image") or "").strip()
    offered = {name for name, _ in context.images} | {alias for alias, _ in context.aliases}
    architecture = data.get("architecture") or None
    if image_ref in offered and project is not None and (architecture is None or architecture in context.architectures):
        try:
            image = agent_services.resolve_image(image_ref, architecture, domain=project.domain)
        except errors.BackendAIError:
            image = None
        else:
            context.resolved_image = (image_ref, architecture, project.domain_id, image)
    group_name = data.get("scaling_group") or ""
    if group_name not in {g.name for g in context.scaling_groups}:
        group_name = ""
    if not group_name and project is not None:
        try:
            group_name = choose_scaling_group(user, project, None, data.get("session_type") or SessionType.INTERACTIVE).pk
        except errors.BackendAIError:
            group_name = ""
    context.bound_group = group_name
    context.image_range = launch_check.image_range(image, context.slot_types) if image is not None else ""
    context.bounds = launch_check.bounds(
        ordered_slots(context.slot_types), context.slot_types, image=image, group_name=group_name or None,
        policy_limits=context.limits, remaining=context.remaining, cluster_size=_cluster_size(data.get("cluster_size")),
        cluster_mode=data.get("cluster_mode") or ClusterMode.SINGLE_NODE)


MOUNT_MODES = {"rw": "read-write", "ro": "read only"}
PERMISSION_TEXT = {"ro": "read only", "rw": "read-write", "wd": "read-write-delete"}


def _session_name(value):
    """The API's session-name rule, its message worded for the form."""
    try:
        validation.validate_session_name(value)
    except forms.ValidationError as exc:
        raise forms.ValidationError([f"Session name {message}" for message in exc.messages]) from None


class SessionCreateForm(forms.Form):
    name = forms.CharField(required=False, max_length=validation.NAME_MAX, strip=False,
                           validators=[_session_name],
                           help_text="Optional; 4-64 letters, digits, '_', '-', '.'.")
    project = forms.ChoiceField(label="Project")
    image = forms.ChoiceField(error_messages={"invalid_choice": "Unknown image %(value)s: pick one of the list."})
    architecture = forms.ChoiceField(required=False)
    session_type = forms.ChoiceField(label="Type", initial=SessionType.INTERACTIVE,
                                     choices=[(t.value, t.label) for t in USER_SESSION_TYPES])
    scaling_group = forms.ChoiceField(label="Resource group", required=False)
    preset = forms.ChoiceField(label="Resources", required=False)
    startup_command = forms.CharField(required=False, max_length=validation.STARTUP_COMMAND_MAX, widget=forms.Textarea(attrs={"rows": 2}),
                                      help_text="Required for batch sessions; interactive ones may leave it empty.")
    batch_timeout = forms.IntegerField(required=False, min_value=1, max_value=validation.BATCH_TIMEOUT_MAX,
                                       label="Batch timeout (seconds)")
    environ = forms.CharField(label="Environment variables", required=False,
                              widget=forms.Textarea(attrs={"rows": 3, "placeholder": "KEY=VALUE, one per line"}))
    cluster_mode = forms.ChoiceField(label="Cluster mode", initial=ClusterMode.SINGLE_NODE, required=False, choices=[
        (ClusterMode.SINGLE_NODE, "Single node (all kernels on one agent)"),
        (ClusterMode.MULTI_NODE, "Multi-node (kernels spread over agents)")])
    cluster_size = forms.IntegerField(label="Cluster size (kernels)", initial=1, min_value=1, required=False,
                                      max_value=validation.CLUSTER_SIZE_MAX,
                                      help_text="1 for an ordinary session; the amounts below are per kernel.")
    mounts = forms.MultipleChoiceField(
        label="Folders", required=False, widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": "You cannot mount the folder %(value)s: it is not one of the folders "
                                          "you may mount (yours, your projects' or shared with you)."})

    def __init__(self, *args, context: CreateContext, **kwargs):
        super().__init__(*args, **kwargs)
        self.context = context
        self.fields["project"].choices = [(p.name, p.name) for p in context.projects]
        if context.project is not None:
            self.fields["project"].initial = context.project.name
        image_choices = [(name, f"{name} ({', '.join(archs)})") for name, archs in context.images]
        alias_choices = [(alias, f"{alias} → {target}") for alias, target in context.aliases]
        self.fields["image"].choices = [("", "— choose an image —"), ("Images", image_choices)] + (
            [("Aliases", alias_choices)] if alias_choices else [])
        self.fields["architecture"].choices = [("", "Any")] + [(a, a) for a in context.architectures]
        self.fields["scaling_group"].choices = [("", "Automatic")] + [(g.name, g.name) for g in context.scaling_groups]
        self.fields["preset"].choices = [("", "Custom")] + [(p.name, p.name) for p in context.presets]
        self.slot_fields = []
        for slot in ordered_slots(context.slot_types):
            name = slot_field_name(slot)
            attrs = {"data-slot": slot, "size": 8, "aria-describedby": f"bound-{name}"}
            bound = context.bounds.get(slot)
            if slot_type_of(slot, context.slot_types) == "bytes":
                widget = forms.TextInput(attrs={**attrs, "inputmode": "decimal"})
            else:
                attrs.update({"step": "any", "min": (bound.input_min if bound else "") or "0"})
                if bound and bound.input_max:
                    attrs["max"] = bound.input_max
                widget = forms.NumberInput(attrs=attrs)
            self.fields[name] = forms.CharField(
                required=False, max_length=32, label=SLOT_LABELS.get(slot, slot),
                help_text=SLOT_HELP.get(slot, "count"), widget=widget)
            self.slot_fields.append((slot, name))
        self.fields["mounts"].choices = [(a.folder.pk.hex, a.folder.name) for a in context.folders]
        self.mount_rows = []
        for access in context.folders:
            key = access.folder.pk.hex
            modes = [("rw", MOUNT_MODES["rw"]), ("ro", MOUNT_MODES["ro"])] if access.can_write else [
                ("ro", MOUNT_MODES["ro"])]
            self.fields[f"mount_mode_{key}"] = forms.ChoiceField(
                label=f"Mode of {access.folder.name}", required=False, choices=modes,
                initial=modes[0][0], error_messages={"invalid_choice": (
                    f"The folder {access.folder.name} is read only for you: it can be mounted read only.")})
            self.fields[f"mount_path_{key}"] = forms.CharField(
                label=f"Mount path of {access.folder.name}", required=False, max_length=255, strip=True,
                widget=forms.TextInput(attrs={"placeholder": f"/home/work/{access.folder.name}"}))
            self.mount_rows.append({"key": key, "access": access,
                                    "permission": PERMISSION_TEXT.get(access.permission, access.permission)})

    # --- rendering helpers -------------------------------------------------------------------
    @property
    def slot_bound_fields(self):
        return [self[name] for _, name in self.slot_fields]

    @property
    def slot_rows(self) -> list[dict]:
        """Each amount field with its bounds (``launch_check.SlotBound`` or None)."""
        return [{"field": self[name], "bound": self.context.bounds.get(slot)} for slot, name in self.slot_fields]

    @property
    def mount_fields(self) -> list[dict]:
        chosen = set(self["mounts"].value() or [])
        return [{**row, "checked": row["key"] in chosen, "mode": self[f"mount_mode_{row['key']}"],
                 "path": self[f"mount_path_{row['key']}"]} for row in self.mount_rows]

    # --- validation ---------------------------------------------------------------------------
    def clean_environ(self) -> dict:
        text = self.cleaned_data.get("environ") or ""
        result, bad = {}, []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not validation.ENV_NAME_RE.fullmatch(key):
                bad.append(f"line {number}: {line[:40]!r}")
                continue
            result[key] = value.strip()
        if bad:
            raise forms.ValidationError("Write KEY=VALUE, one per line, with names of letters, digits and '_' "
                                        f"({'; '.join(bad)}).")
        try:
            return validation.validate_environ(result)
        except forms.ValidationError as exc:
            raise forms.ValidationError(f"Environment: {exc.messages[0]}") from None

    def clean(self):
        data = super().clean()
        if data.get("session_type") == SessionType.BATCH and not (data.get("startup_command") or "").strip():
            self.add_error("startup_command", "Batch sessions need a startup command.")
        if data.get("batch_timeout") and data.get("session_type") != SessionType.BATCH:
            self.add_error("batch_timeout", "A timeout applies only to batch sessions.")
        resources, opts = self._resources(data)
        data["resources"], data["resource_opts"] = resources, opts
        if resources is not None:
            self._check_quota(resources, data.get("cluster_size") or 1)
        data["mount_plan"] = self._mounts(data)
        return data

    def _mounts(self, data) -> tuple[list, dict, dict]:
        """(mounts, mount_map, mount_options) for the API, each path checked by its rule."""
        mounts, mount_map, options = [], {}, {}
        by_key = {row["key"]: row["access"] for row in self.mount_rows}
        for key in data.get("mounts") or []:
            access = by_key.get(key)
            if access is None:
                continue
            mode = data.get(f"mount_mode_{key}") or ("rw" if access.can_write else "ro")
            path = (data.get(f"mount_path_{key}") or "").strip()
            if path:
                try:
                    vfolder_services.container_path(path, access.folder.name)
                except errors.BackendAIError as exc:
                    self.add_error(f"mount_path_{key}", exc.msg or exc.error_title)
                    continue
                mount_map[key] = path
            mounts.append(key)
            options[key] = {"permission": mode}
        return mounts, mount_map, options

    def _resources(self, data) -> tuple[dict | None, dict]:
        preset_name = data.get("preset")
        if preset_name:
            preset = next((p for p in self.context.presets if p.name == preset_name), None)
            if preset is None:
                self.add_error("preset", f"Unknown preset {preset_name!r}.")
                return None, {}
            opts = {"shmem": preset.shared_memory} if preset.shared_memory else {}
            return {k: v for k, v in preset.resource_slots.items() if Decimal(v) != 0}, opts
        resources, failed = {}, False
        for slot, name in self.slot_fields:
            raw = (data.get(name) or "").strip()
            if not raw:
                continue
            try:
                parse = parse_binary_size if slot_type_of(slot, self.context.slot_types) == "bytes" else parse_count
                amount = parse(raw, slot)
            except SlotError as exc:
                self.add_error(name, str(exc))
                failed = True
                continue
            if amount.is_infinite():
                self.add_error(name, "Ask for a finite amount.")
                failed = True
                continue
            if amount != 0:
                resources[slot] = raw
        return (None if failed else resources), {}

    def _check_quota(self, resources: dict, cluster_size: int = 1) -> None:
        if self.context.remaining is None:
            return
        try:
            asked = ResourceSlot.from_json(resources, self.context.slot_types).scale(cluster_size)
            remaining = ResourceSlot.from_json(self.context.remaining, self.context.slot_types)
        except SlotError as exc:
            self.add_error("preset", str(exc))
            return
        over = [slot for slot in asked if asked[slot] > remaining.get(slot, Decimal(0))]
        if over:
            details = ", ".join(
                f"{slot} {format_amount(slot, asked[slot], self.context.slot_types)} asked, "
                f"{format_amount(slot, remaining.get(slot, 0), self.context.slot_types)} left" for slot in over)
            self.add_error("preset", f"More than your remaining quota ({details}).")

    # --- to the service ---------------------------------------------------------------------
    def enqueue_request(self) -> EnqueueRequest:
        data = self.cleaned_data
        project = next((p for p in self.context.projects if p.name == data["project"]), self.context.project)
        return EnqueueRequest(
            image=data["image"],
            name=(data.get("name") or "").strip() or None,
            session_type=data["session_type"],
            architecture=data.get("architecture") or None,
            group=project.name if project is not None else "default",
            domain=project.domain_id if project is not None else "default",
            enqueue_only=True,
            reuse_if_exists=False,
            startup_command=(data.get("startup_command") or "").strip() or None,
            batch_timeout=data.get("batch_timeout") or None,
            environ=data.get("environ") or {},
            scaling_group=data.get("scaling_group") or None,
            resources=data.get("resources") or {},
            resource_opts=data.get("resource_opts") or {},
            cluster_size=data.get("cluster_size") or 1,
            cluster_mode=data.get("cluster_mode") or ClusterMode.SINGLE_NODE,
            mounts=list(data["mount_plan"][0]) if data.get("mount_plan") else [],
            mount_map=dict(data["mount_plan"][1]) if data.get("mount_plan") else {},
            mount_options=dict(data["mount_plan"][2]) if data.get("mount_plan") else {},
        )

    def attach_refusals(self, assessment) -> None:
        """A request ``launch_check`` refuses: each reason beside its field (or above the form)."""
        for field_name, message in assessment.refusals:
            self.add_error(field_name, message)

    def attach_service_error(self, exc: errors.BackendAIError) -> None:
        """Show a refusal of the create service beside the field it is about."""
        message = exc.msg or exc.error_title
        self.add_error(error_field(exc, message), message)


def error_field(exc: errors.BackendAIError, message: str) -> str | None:
    field = getattr(exc, "field", None)
    if field:
        base = re.split(r"[.\[]", field.removeprefix("config."), maxsplit=1)[0]
        if base in FIELD_OF:
            return FIELD_OF[base]
    if isinstance(exc, errors.QuotaExceeded):
        return "preset"
    if isinstance(exc, errors.SessionAlreadyExists):
        return "name"
    lowered = message.lower()
    for words, name in ERROR_FIELDS:
        if any(word in lowered for word in words):
            return name
    return None


class DestroyForm(forms.Form):
    forced = forms.BooleanField(required=False)
