"""Django admin for superadmins.  Entry is decided by the user's role (see
``User.is_staff``); every change goes through ``accounts.services``."""
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import unquote
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse

from accounts import services, slot_form
from accounts.models import (
    Domain,
    Keypair,
    KeypairResourcePolicy,
    Project,
    ProjectMembership,
    ProjectResourcePolicy,
    User,
    UserResourcePolicy,
    UserStatus,
)
from accounts.slot_form import with_slot_fields
from backendai.api import errors
from backendai.slots import humanize_binary_size, parse_binary_size, parse_count, slot_type_of

admin.site.site_header = "Backend.AI Control Panel administration"
admin.site.site_title = "Control Panel admin"
admin.site.index_title = "Cluster administration"


class UserPolicyActionForm(ActionForm):
    policy = forms.ModelChoiceField(UserResourcePolicy.objects.all(), required=False, label="User policy")


class KeypairPolicyActionForm(ActionForm):
    policy = forms.ModelChoiceField(KeypairResourcePolicy.objects.all(), required=False, label="Keypair policy")


def _assign_policy(modeladmin, request, queryset, assign, kind):
    policy = modeladmin.action_form(request.POST).fields["policy"].clean(request.POST.get("policy")) if request.POST.get("policy") else None
    if policy is None:
        modeladmin.message_user(request, f"Choose a {kind} policy first.", messages.WARNING)
        return
    count = assign(list(queryset), policy)
    modeladmin.message_user(request, f"Assigned policy {policy} to {count} {kind}(s).", messages.SUCCESS)


class KeypairInline(admin.TabularInline):
    model = Keypair
    fields = ["access_key", "is_active", "is_admin", "resource_policy", "rate_limit", "last_used", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


class MembershipInline(admin.TabularInline):
    model = ProjectMembership
    extra = 0
    autocomplete_fields = ["user", "project"]


class UserCreationAdminForm(forms.ModelForm):
    password = forms.CharField(widget=forms.PasswordInput, help_text="The initial password.")

    class Meta:
        model = User
        fields = ["email", "username", "full_name", "role", "status", "domain", "resource_policy", "need_password_change"]

    def clean_password(self):
        from django.contrib.auth import password_validation

        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class UserChangeAdminForm(forms.ModelForm):
    new_password = forms.CharField(
        widget=forms.PasswordInput, required=False, help_text="Leave empty to keep the current password."
    )

    class Meta:
        model = User
        exclude = ["password"]

    def clean_new_password(self):
        from django.contrib.auth import password_validation

        password = self.cleaned_data.get("new_password")
        if password:
            password_validation.validate_password(password, self.instance)
        return password

    def clean_allowed_client_ip(self):
        import ipaddress

        value = self.cleaned_data.get("allowed_client_ip") or []
        if not isinstance(value, list):
            raise ValidationError("Give a list of CIDR networks, e.g. [\"10.0.0.0/8\"].")
        for item in value:
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                raise ValidationError(f"{item!r} is not an IP address or network.") from None
        return value


class PurgeThroughServices:
    """Deleting here is the services' purge (what GraphQL's ``purge_user``/``purge_group`` do):
    the same refusals (a live session, a folder in use), and the other apps' rows of the
    object go through their purge handlers instead of a blind cascade.  A refusal is shown
    on the object's page and changes nothing.  Purges go one object at a time (no bulk delete).
    A model admin using it defines ``purge(request, obj)``, the service call."""

    def _purge_or_refuse(self, request, obj) -> bool:
        try:
            with transaction.atomic():
                self.purge(request, obj)
        except errors.BackendAIError as exc:
            self.message_user(request, f"{obj} was not deleted: {exc.msg or exc.error_title}", messages.ERROR)
            return False
        return True

    def delete_view(self, request, object_id, extra_context=None):
        if request.method == "POST" and request.POST.get("post"):
            obj = self.get_object(request, unquote(object_id))
            if obj is not None and self.has_delete_permission(request, obj):
                meta = self.model._meta
                if not self._purge_or_refuse(request, obj):
                    return redirect(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]))
                self.message_user(request, f"{meta.verbose_name} \u201c{obj}\u201d was purged.", messages.SUCCESS)
                return redirect(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        # the bulk "delete selected" would report success for refused ones: one at a time
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(User)
class UserAdmin(PurgeThroughServices, admin.ModelAdmin):
    list_display = ["email", "username", "full_name", "role", "status", "domain", "resource_policy", "created_at"]
    list_filter = ["role", "status", "domain", "resource_policy"]
    search_fields = ["email", "username", "full_name"]
    ordering = ["email"]
    readonly_fields = ["id", "main_keypair", "last_login", "password_changed_at", "created_at", "modified_at"]
    inlines = [KeypairInline, MembershipInline]
    actions = ["activate_users", "deactivate_users", "assign_user_policy"]
    action_form = UserPolicyActionForm

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    def purge(self, request, obj) -> None:
        services.admin_purge_user(request.user, obj.email)

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = UserChangeAdminForm if obj else UserCreationAdminForm
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": UserCreationAdminForm.Meta.fields[:2] + ["password"] + UserCreationAdminForm.Meta.fields[2:]})]
        return [
            (None, {"fields": ["id", "email", "username", "full_name", "description", "new_password"]}),
            ("Role and status", {"fields": ["role", "status", "status_info", "need_password_change", "sudo_session_enabled"]}),
            ("Membership and limits", {"fields": ["domain", "resource_policy", "main_keypair", "allowed_client_ip"]}),
            ("History", {"fields": ["integration_id", "last_login", "password_changed_at", "created_at", "modified_at"]}),
        ]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            if form.cleaned_data.get("new_password"):
                obj.set_password(form.cleaned_data["new_password"])
                obj.save(update_fields=["password"])
            return
        data = form.cleaned_data
        created = services.create_user(
            email=data["email"], password=data["password"], username=data["username"], full_name=data["full_name"],
            role=data["role"], status=data["status"], domain=data["domain"], resource_policy=data["resource_policy"],
            need_password_change=data["need_password_change"],
        )
        obj.pk = created.pk
        obj._state.adding = False
        obj._state.db = "default"

    @admin.action(description="Activate selected users")
    def activate_users(self, request, queryset):
        count = services.set_user_status(list(queryset), UserStatus.ACTIVE, request.user)
        self.message_user(request, f"Activated {count} user(s).", messages.SUCCESS)

    @admin.action(description="Deactivate selected users")
    def deactivate_users(self, request, queryset):
        users = [u for u in queryset if u.pk != request.user.pk]
        if len(users) < queryset.count():
            self.message_user(request, "You cannot deactivate yourself; skipped.", messages.WARNING)
        count = services.set_user_status(users, UserStatus.INACTIVE, request.user)
        self.message_user(request, f"Deactivated {count} user(s).", messages.SUCCESS)

    @admin.action(description="Assign the chosen user policy")
    def assign_user_policy(self, request, queryset):
        _assign_policy(self, request, queryset, services.assign_user_policy, "user")


_OWNER_ONLY = ("Its secret key is not shown here: only its owner sees it, by regenerating it on their "
               "API keys page (or, for a main keypair, by logging in with the client).")


class KeypairCreationForm(forms.ModelForm):
    class Meta:
        model = Keypair
        fields = ["user", "resource_policy", "rate_limit", "is_active"]


@admin.register(Keypair)
class KeypairAdmin(admin.ModelAdmin):
    list_display = ["access_key", "user", "is_active", "is_admin", "resource_policy", "rate_limit", "num_queries", "last_used", "created_at"]
    list_filter = ["is_active", "is_admin", "resource_policy"]
    search_fields = ["access_key", "user__email", "user__username"]
    list_select_related = ["user", "resource_policy"]
    autocomplete_fields = ["user"]
    exclude = ["secret_key", "ssh_private_key"]
    readonly_fields = ["access_key", "user", "is_admin", "num_queries", "last_used", "created_at", "modified_at", "ssh_public_key"]
    actions = ["regenerate_secret", "activate_keypairs", "deactivate_keypairs", "assign_keypair_policy"]
    action_form = KeypairPolicyActionForm

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = KeypairCreationForm
            kwargs["fields"] = KeypairCreationForm.Meta.fields
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return KeypairCreationForm.Meta.fields
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        keypair, secret = services.create_keypair(
            data["user"], resource_policy=data["resource_policy"], rate_limit=data["rate_limit"], is_active=data["is_active"]
        )
        obj.pk = keypair.pk
        obj._state.adding = False
        if keypair.user_id == request.user.pk:  # a secret is shown to its owner only
            self.message_user(
                request, f"Created {keypair.access_key}. Secret key (shown once): {secret}", messages.WARNING
            )
        else:
            self.message_user(request, f"Created {keypair.access_key} for {keypair.user}. {_OWNER_ONLY}",
                              messages.WARNING)

    @admin.action(description="Regenerate the secret key (shown to its owner only)")
    def regenerate_secret(self, request, queryset):
        for keypair in queryset.select_related("user"):
            secret = services.regenerate_secret(keypair)
            if keypair.user_id == request.user.pk:
                self.message_user(request, f"{keypair.access_key}: new secret key (shown once): {secret}",
                                  messages.WARNING)
            else:
                self.message_user(request, f"{keypair.access_key}: the old secret key no longer works. {_OWNER_ONLY}",
                                  messages.WARNING)

    @admin.action(description="Activate selected keypairs")
    def activate_keypairs(self, request, queryset):
        count = services.set_keypair_active(list(queryset), True, request.user)
        self.message_user(request, f"Activated {count} keypair(s).", messages.SUCCESS)

    @admin.action(description="Deactivate selected keypairs")
    def deactivate_keypairs(self, request, queryset):
        count = services.set_keypair_active(list(queryset), False, request.user)
        self.message_user(request, f"Deactivated {count} keypair(s).", messages.SUCCESS)

    @admin.action(description="Assign the chosen keypair policy")
    def assign_keypair_policy(self, request, queryset):
        _assign_policy(self, request, queryset, services.assign_keypair_policy, "keypair")


class ProjectInline(admin.TabularInline):
    model = Project
    fields = ["name", "is_active", "resource_policy", "type"]
    extra = 0
    show_change_link = True


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "description", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    inlines = [ProjectInline]


@admin.register(Project)
class ProjectAdmin(PurgeThroughServices, admin.ModelAdmin):
    list_display = ["name", "domain", "is_active", "type", "resource_policy", "created_at"]
    list_filter = ["is_active", "type", "domain", "resource_policy"]
    search_fields = ["name", "description", "domain__name"]
    inlines = [MembershipInline]

    def purge(self, request, obj) -> None:
        services.admin_purge_project(request.user, obj.pk)


def _size_text(value) -> str:
    """A byte amount for people ("16 GiB"); negative means unlimited."""
    if value is None or value < 0:
        return "unlimited"
    return humanize_binary_size(value)


def _slots_text(slots) -> str:
    """A slot map for people: "cpu 8, mem 32 GiB, cuda.device 1"; empty: "—"."""
    parts = []
    for key, value in (slots or {}).items():
        try:
            amount = parse_binary_size(value) if slot_type_of(key) == "bytes" else parse_count(value)
        except ValueError:
            parts.append(f"{key} {value}")
            continue
        if amount.is_infinite():
            parts.append(f"{key} unlimited")
        elif slot_type_of(key) == "bytes":
            parts.append(f"{key} {humanize_binary_size(amount)}")
        else:
            parts.append(f"{key} {format(amount.normalize(), 'f')}")
    return ", ".join(parts) or "—"


def _duration_text(seconds: int) -> str:
    """Seconds for people: "90 s", "15 min", "2 h 30 min", "3 d"."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
             f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or "0 s"


class SizeInGiBField(forms.DecimalField):
    """A byte amount entered in GiB (empty or negative: unlimited), stored in bytes."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(min_value=-1, max_value=Decimal(2**63 - 1) / 2**30, max_digits=24, decimal_places=3, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, int):  # the stored bytes
            return "" if value < 0 else format((Decimal(value) / 2**30).normalize(), "f")
        return value

    def clean(self, value):
        number = super().clean(value)
        if number is None or number < 0:
            return -1
        return int(number * 2**30)


class KeypairPolicyForm(forms.ModelForm):
    class Meta:
        model = KeypairResourcePolicy
        fields = "__all__"


class QuotaPolicyFormMixin:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["max_quota_scope_size"] = SizeInGiBField(
            label="Max quota scope size (GiB)", help_text="Per folder quota scope, in GiB; empty: unlimited.")
        if self.instance.pk is not None:
            self.initial["max_quota_scope_size"] = self.instance.max_quota_scope_size


class UserPolicyForm(QuotaPolicyFormMixin, forms.ModelForm):
    class Meta:
        model = UserResourcePolicy
        fields = "__all__"


class ProjectPolicyForm(QuotaPolicyFormMixin, forms.ModelForm):
    class Meta:
        model = ProjectResourcePolicy
        fields = "__all__"


KEYPAIR_SLOT_GROUPS = {"total_resource_slots": "Total resource slots",
                       "max_pending_session_resource_slots": "Pending sessions' slots"}
KeypairPolicyHumanForm = with_slot_fields(KeypairPolicyForm, KEYPAIR_SLOT_GROUPS)


@admin.register(KeypairResourcePolicy)
class KeypairResourcePolicyAdmin(admin.ModelAdmin):
    form = KeypairPolicyHumanForm
    list_display = ["name", "default_for_unspecified", "total_slots", "max_concurrent_sessions",
                    "max_pending_session_count", "lifetime", "idle"]
    list_filter = ["default_for_unspecified"]
    search_fields = ["name"]

    def get_fieldsets(self, request, obj=None):
        return [
            (None, {"fields": ["name", "default_for_unspecified"]}),
            ("Total resource slots", {
                "fields": slot_form.field_names("total_resource_slots"),
                "description": "What all sessions of a keypair may hold together. An empty field follows "
                               "\u201cdefault for unspecified\u201d (unlimited or none)."}),
            ("Sessions", {"fields": ["max_concurrent_sessions", "max_concurrent_sftp_sessions",
                                     "max_containers_per_session", "max_session_lifetime", "idle_timeout"]}),
            ("Pending sessions", {"fields": ["max_pending_session_count",
                                             *slot_form.field_names("max_pending_session_resource_slots")],
                                  "description": "Empty fields: no limit on the queue."}),
            ("Storage", {"fields": ["allowed_vfolder_hosts"]}),
        ]

    def save_model(self, request, obj, form, change):
        # an all-empty pending-slots group means "no limit" (null), as the API stores it
        if not obj.max_pending_session_resource_slots:
            obj.max_pending_session_resource_slots = None
        super().save_model(request, obj, form, change)

    @admin.display(description="total resource slots")
    def total_slots(self, obj):
        return _slots_text(obj.total_resource_slots)

    @admin.display(description="max session lifetime", ordering="max_session_lifetime")
    def lifetime(self, obj):
        return _duration_text(obj.max_session_lifetime) if obj.max_session_lifetime else "unlimited"

    @admin.display(description="idle timeout", ordering="idle_timeout")
    def idle(self, obj):
        if obj.idle_timeout < 0:
            return "global default"
        return _duration_text(obj.idle_timeout) if obj.idle_timeout else "never"


@admin.register(UserResourcePolicy)
class UserResourcePolicyAdmin(admin.ModelAdmin):
    form = UserPolicyForm
    list_display = ["name", "max_vfolder_count", "quota_size", "max_session_count_per_model_session",
                    "max_customized_image_count"]
    search_fields = ["name"]

    @admin.display(description="max quota scope size", ordering="max_quota_scope_size")
    def quota_size(self, obj):
        return _size_text(obj.max_quota_scope_size)


@admin.register(ProjectResourcePolicy)
class ProjectResourcePolicyAdmin(admin.ModelAdmin):
    form = ProjectPolicyForm
    list_display = ["name", "max_vfolder_count", "quota_size"]
    search_fields = ["name"]

    @admin.display(description="max quota scope size", ordering="max_quota_scope_size")
    def quota_size(self, obj):
        return _size_text(obj.max_quota_scope_size)


# Django's own permission groups are not used (roles decide): not shown in the admin.
if admin.site.is_registered(Group):
    admin.site.unregister(Group)
