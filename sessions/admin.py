"""Admin for sessions and kernels (read-mostly; changes go through services),
resource presets (changed through ``sessions.presets``), and the cluster overview (capacity, occupancy, sessions by status, per
scaling group and per agent) at ``admin:compute_sessions_cluster_overview``."""
from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Min
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from accounts import slot_form
from accounts.slot_form import with_slot_fields
from agents.admin import AgentAdmin
from agents.models import Agent, AgentStatus, ScalingGroup
from backendai import health
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError
from sessions import operators, presets, services
from sessions.forms import format_amount, input_amount, ordered_slots
from sessions.lifecycle import AGENT_OCCUPYING_KERNEL, DEAD_SESSION, SessionStatus
from sessions.models import Kernel, ResourcePreset, Session

STATUS_ORDER = [s.value for s in SessionStatus]
LIVE_STATUSES = [s for s in STATUS_ORDER if s not in DEAD_SESSION]


class AgentWithKernelsAdmin(AgentAdmin):
    """The agents app's agent page plus what only the sessions app knows: how many
    kernels placed on the agent hold resources there."""

    readonly_fields = [*AgentAdmin.readonly_fields, "live_kernels"]
    fields = [name for field in AgentAdmin.fields
              for name in ((field, "live_kernels") if field == "occupied_slots" else (field,))]

    @admin.display(description="live kernels")
    def live_kernels(self, obj):
        return obj.kernels.filter(status__in=AGENT_OCCUPYING_KERNEL).count()

    actions = [*AgentAdmin.actions, "drain_agents", "terminate_agent_sessions"]

    @admin.action(description="Drain (unschedulable; running sessions finish)")
    def drain_agents(self, request, queryset):
        result = operators.drain(request.user, list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Draining {result['agents']} agent(s); {result['sessions']} session(s) there "
                                   "finish in their own time.")

    @admin.action(description="Terminate the sessions on the selected agents")
    def terminate_agent_sessions(self, request, queryset):
        count = operators.terminate_sessions_on(request.user, list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Asked {count} session(s) to terminate.")


admin.site.unregister(Agent)
admin.site.register(Agent, AgentWithKernelsAdmin)


class KernelInline(admin.TabularInline):
    model = Kernel
    fields = ["id", "cluster_role", "cluster_idx", "agent", "status", "status_info", "container_id", "exit_code"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "user", "status", "status_info", "session_type", "scaling_group", "image", "created_at"]
    list_filter = ["status", "session_type", "scaling_group", "result"]
    search_fields = ["name", "id", "user__email", "image"]
    list_select_related = ["user", "scaling_group"]
    readonly_fields = [f.name for f in Session._meta.fields]
    inlines = [KernelInline]
    actions = ["terminate", "force_terminate"]

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        overview = path("overview/", self.admin_site.admin_view(self.cluster_overview_view),
                        name="compute_sessions_cluster_overview")
        return [overview, *super().get_urls()]

    def cluster_overview_view(self, request):
        if not request.user.is_superadmin:
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Cluster overview",
            "opts": self.model._meta,
            **cluster_overview(),
        }
        return TemplateResponse(request, "admin/compute_sessions/cluster_overview.html", context)

    @admin.action(description="Terminate selected sessions")
    def terminate(self, request, queryset):
        for session in queryset:
            services.request_termination(session, "user-requested")
        self.message_user(request, f"Asked {queryset.count()} session(s) to terminate.")

    @admin.action(description="Force-terminate selected sessions")
    def force_terminate(self, request, queryset):
        for session in queryset:
            services.request_termination(session, "force-terminated", forced=True)
        self.message_user(request, f"Asked {queryset.count()} session(s) to terminate (forced).")


@admin.register(Kernel)
class KernelAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "agent", "status", "status_info", "image", "exit_code", "created_at"]
    list_filter = ["status", "agent"]
    search_fields = ["id", "session__name", "container_id"]
    list_select_related = ["session", "agent"]
    readonly_fields = [f.name for f in Kernel._meta.fields]

    def has_add_permission(self, request):
        return False


# --- resource presets ---------------------------------------------------------------------------

#: Where a refusal of ``sessions.presets`` belongs on the form (its message starts with the field).
PRESET_ERROR_FIELDS = {"name": "name", "resource_slots": "resource_slots", "shared_memory": "shared_memory",
                       "scaling_group_name": "scaling_group"}


class ResourcePresetForm(forms.ModelForm):
    shared_memory = forms.CharField(required=False, max_length=32,
                                    help_text='Bytes, or a size such as "64m"; empty: none.')

    class Meta:
        model = ResourcePreset
        fields = ["name", "resource_slots", "shared_memory", "scaling_group"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "resource_slots" in self.fields:  # the human form (below) has fields per slot instead
            self.fields["resource_slots"].help_text = (
                'Known slots (see /config/resource-slots) with finite amounts, e.g. {"cpu": "2", "mem": "4g"}.')
        if self.instance.pk and self.instance.shared_memory:
            self.initial["shared_memory"] = input_amount("mem", self.instance.shared_memory)
        self.original_name = self.instance.name if self.instance.pk else None

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        group = data.get("scaling_group")
        try:
            cleaned = presets.clean_fields(data.get("name"), data.get("resource_slots"), data.get("shared_memory"),
                                           group.pk if group is not None else None, current=self.original_name)
        except errors.BackendAIError as exc:
            message = exc.msg or exc.error_title
            field = PRESET_ERROR_FIELDS.get(message.split(":", 1)[0])
            if field == "resource_slots" and field not in self.fields:  # the human form: beside the slot's field
                field = slot_form.field_for_message(field, message)
            self.add_error(field, message)
            return data
        data.update(name=cleaned.name, resource_slots=cleaned.resource_slots, shared_memory=cleaned.shared_memory)
        return data


ResourcePresetHumanForm = with_slot_fields(ResourcePresetForm, {"resource_slots": "Resources"})


@admin.register(ResourcePreset)
class ResourcePresetAdmin(admin.ModelAdmin):
    """Presets change through ``sessions.presets`` (the same checks as GraphQL); slots are
    entered with units (``accounts.slot_form``)."""

    form = ResourcePresetHumanForm
    list_display = ["name", "slots", "shared_memory_size", "scaling_group"]
    list_filter = ["scaling_group"]
    search_fields = ["name"]

    def get_fieldsets(self, request, obj=None):
        return [(None, {"fields": ["name", "scaling_group"]}),
                ("Resources", {"fields": slot_form.field_names("resource_slots")}),
                (None, {"fields": ["shared_memory"]})]

    @admin.display(description="resources")
    def slots(self, obj):
        return ", ".join(f"{slot} {format_amount(slot, amount)}" for slot, amount in
                         sorted(_slots(obj.resource_slots).items(), key=lambda kv: ordered_slots(
                             dict.fromkeys(obj.resource_slots or {})).index(kv[0]))) or "—"

    @admin.display(description="shared memory", ordering="shared_memory")
    def shared_memory_size(self, obj):
        return format_amount("mem", obj.shared_memory) if obj.shared_memory is not None else "—"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        group = data["scaling_group"].pk if data.get("scaling_group") is not None else None
        if change:
            saved = presets.modify_preset(request.user, form.original_name, new_name=data["name"],
                                          resource_slots=data["resource_slots"],
                                          shared_memory=data["shared_memory"], scaling_group=group)
        else:
            saved = presets.create_preset(request.user, data["name"], data["resource_slots"],
                                          data["shared_memory"], group)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        presets.delete_preset(request.user, obj.name)

    def delete_queryset(self, request, queryset):
        for name in list(queryset.values_list("name", flat=True)):
            presets.delete_preset(request.user, name)


# --- cluster overview ---------------------------------------------------------------------------

def _slots(value) -> ResourceSlot:
    try:
        return ResourceSlot.from_json(value or {})
    except SlotError:
        return ResourceSlot()


def usage_rows(capacity: ResourceSlot, occupied: ResourceSlot) -> list[dict]:
    """Per slot: used / total with a percentage, cpu and mem first."""
    rows = []
    for slot in ordered_slots({k: None for k in [*capacity, *(k for k in occupied if k not in capacity)]}):
        total, used = capacity.get(slot, Decimal(0)), occupied.get(slot, Decimal(0))
        if total == 0 and used == 0:
            continue
        percent = float(used / total * 100) if total > 0 and not total.is_infinite() else None
        rows.append({"slot": slot, "used": format_amount(slot, used), "total": format_amount(slot, total),
                     "percent": round(percent, 1) if percent is not None else None,
                     "bar": min(round(percent or 0), 100), "over": percent is not None and percent > 100})
    return rows


def cluster_overview() -> dict:
    """Capacity, occupancy and sessions by status, per scaling group and per agent, and the
    beat's health (a fixed number of queries, whatever the cluster's size)."""
    now = timezone.now()
    groups = {g.pk: g for g in ScalingGroup.objects.all()}
    agents = list(Agent.objects.order_by("scaling_group_id", "id").only(
        "id", "status", "scaling_group_id", "schedulable", "available_slots", "occupied_slots", "architecture",
        "backend", "last_heartbeat", "addr"))
    kernels = dict(Kernel.objects.filter(status__in=AGENT_OCCUPYING_KERNEL, agent__isnull=False)
                   .values_list("agent_id").annotate(n=Count("id")).values_list("agent_id", "n"))
    by_status: dict[str | None, dict[str, int]] = {}
    for group_id, status, count in (Session.objects.values_list("scaling_group_id", "status")
                                    .annotate(n=Count("id")).values_list("scaling_group_id", "status", "n")):
        by_status.setdefault(group_id, {})
        by_status[group_id][status] = by_status[group_id].get(status, 0) + count
    oldest_pending = dict(Session.objects.filter(status=SessionStatus.PENDING).values_list("scaling_group_id")
                          .annotate(oldest=Min("created_at")).values_list("scaling_group_id", "oldest"))

    group_rows: dict[str | None, dict] = {}
    for group_id, group in groups.items():
        group_rows[group_id] = {"name": group_id, "group": group, "agents": 0, "alive": 0, "schedulable": 0,
                                "capacity": ResourceSlot(), "occupied": ResourceSlot()}
    agent_rows = []
    total_capacity, total_occupied = ResourceSlot(), ResourceSlot()
    for agent in agents:
        row = group_rows.setdefault(agent.scaling_group_id, {
            "name": agent.scaling_group_id, "group": None, "agents": 0, "alive": 0, "schedulable": 0,
            "capacity": ResourceSlot(), "occupied": ResourceSlot()})
        available, occupied = _slots(agent.available_slots), _slots(agent.occupied_slots)
        alive = agent.status == AgentStatus.ALIVE
        row["agents"] += 1
        if alive:
            row["alive"] += 1
            row["occupied"] = row["occupied"] + occupied
            total_occupied = total_occupied + occupied
            if agent.schedulable:
                row["schedulable"] += 1
                row["capacity"] = row["capacity"] + available
                total_capacity = total_capacity + available
        agent_rows.append({
            "agent": agent, "alive": alive, "usage": usage_rows(available, occupied),
            "kernels": kernels.get(agent.pk, 0),
            "heartbeat_age": (now - agent.last_heartbeat).total_seconds() if agent.last_heartbeat else None,
        })

    status_totals: dict[str, int] = {}
    rows = []
    for group_id in sorted(set(group_rows) | set(by_status), key=lambda g: (g is None, g or "")):
        row = group_rows.get(group_id) or {"name": group_id, "group": None, "agents": 0, "alive": 0,
                                           "schedulable": 0, "capacity": ResourceSlot(), "occupied": ResourceSlot()}
        counts = by_status.get(group_id, {})
        for status, count in counts.items():
            status_totals[status] = status_totals.get(status, 0) + count
        oldest = oldest_pending.get(group_id)
        rows.append({
            **row, "usage": usage_rows(row["capacity"], row["occupied"]),
            "statuses": [(s, counts[s]) for s in STATUS_ORDER if counts.get(s)],
            "live": sum(counts.get(s, 0) for s in LIVE_STATUSES),
            "pending": counts.get(SessionStatus.PENDING, 0),
            "oldest_pending": (now - oldest).total_seconds() if oldest else None,
        })
    return {
        "group_rows": rows, "agent_rows": agent_rows,
        "total_usage": usage_rows(total_capacity, total_occupied),
        "status_totals": [(s, status_totals[s]) for s in STATUS_ORDER if status_totals.get(s)],
        "live_total": sum(status_totals.get(s, 0) for s in LIVE_STATUSES),
        "agents_total": len(agents),
        "agents_alive": sum(1 for a in agents if a.status == AgentStatus.ALIVE),
        "beat": health.check_beat(now),
        "now": now,
    }
