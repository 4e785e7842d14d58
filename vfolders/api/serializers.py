"""Request shapes of the folder API.  Paths and names are taken verbatim (no
trimming, no NUL stripping): ``storageproxy.names`` decides and explains.  Every
field has a type: a wrong one is 400 ``invalid-api-params`` naming the field."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backendai import slots
from storageproxy import names
from vfolders.models import UsageMode, VFolderPermission

PERMISSIONS = [p.value for p in VFolderPermission]


class TextField(serializers.CharField):
    """A string, never a number or a list coerced into one, without control
    characters (``storageproxy.names.bad_character``), kept verbatim."""

    default_error_messages = {"invalid": "Must be a string."}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("max_length", 1024)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        bad = names.bad_character(data)
        if bad:
            raise serializers.ValidationError(f"Must not contain {bad}.")
        return data


@extend_schema_field(OpenApiTypes.STR)
class PathField(serializers.Field):
    """A path string exactly as sent."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
class PathOrListField(serializers.Field):
    """One path (23.09 clients) or a list of paths (24.09)."""

    default_error_messages = {"invalid": "Must be a path or a list of paths."}

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(isinstance(item, str) for item in data):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class StringListField(serializers.Field):
    """A list of strings; a single string counts as a list of one."""

    default_error_messages = {"invalid": "Must be a list of strings."}

    def to_internal_value(self, data):
        if isinstance(data, str):
            return [data]
        if isinstance(data, list) and all(isinstance(item, str) for item in data):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


class FolderListSerializer(serializers.Serializer):
    all = serializers.BooleanField(default=False)
    group_id = TextField(required=False, allow_null=True, allow_blank=True, max_length=64)
    owner_user_email = TextField(required=False, allow_null=True, allow_blank=True, max_length=254)


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}], "nullable": True})
class BinarySizeField(serializers.Field):
    """A byte amount as the client sends it (``"0"``, ``"10g"``, ``1073741824``)."""

    default_error_messages = {"invalid": "Must be a byte amount such as 1073741824 or \"10g\"."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, str)) or (isinstance(data, str) and len(data) > 64):
            self.fail("invalid")
        try:
            value = slots.parse_binary_size(data)
        except slots.SlotError:
            self.fail("invalid")
        if value.is_infinite() or value > 2**63 - 1:
            self.fail("invalid")
        return int(value)

    def to_representation(self, value):
        return value


class FolderCreateSerializer(serializers.Serializer):
    name = TextField(max_length=names.FOLDER_NAME_MAX_CHARS)
    host = TextField(required=False, allow_null=True, allow_blank=True, max_length=128)
    folder_host = TextField(required=False, allow_null=True, allow_blank=True, max_length=128)
    usage_mode = serializers.ChoiceField(choices=[m.value for m in UsageMode], default=UsageMode.GENERAL)
    permission = serializers.ChoiceField(choices=PERMISSIONS, default=VFolderPermission.READ_WRITE)
    unmanaged_path = TextField(required=False, allow_null=True, allow_blank=True)
    group = TextField(required=False, allow_null=True, allow_blank=True, max_length=64)
    group_id = TextField(required=False, allow_null=True, allow_blank=True, max_length=64)
    quota = BinarySizeField(required=False, allow_null=True,
                            help_text="Checked, then ignored (per-folder quotas are legacy; quota scopes rule)")
    cloneable = serializers.BooleanField(default=False)


class CloneSerializer(serializers.Serializer):
    """``POST /folders/{x}/clone`` as clients 23.09 to 26.09 send it (24.09+ also take the
    ``folder_host`` and ``perm`` spellings)."""

    target_name = TextField(max_length=names.FOLDER_NAME_MAX_CHARS)
    target_host = TextField(required=False, allow_null=True, allow_blank=True, max_length=128)
    folder_host = TextField(required=False, allow_null=True, allow_blank=True, max_length=128)
    usage_mode = serializers.ChoiceField(choices=[m.value for m in UsageMode], required=False, allow_null=True)
    permission = serializers.ChoiceField(choices=PERMISSIONS, required=False, allow_null=True)
    perm = serializers.ChoiceField(choices=PERMISSIONS, required=False, allow_null=True)
    cloneable = serializers.BooleanField(default=False)


class FolderRefSerializer(serializers.Serializer):
    """``DELETE /folders`` and the trash endpoints: the folder id."""

    vfolder_id = TextField(required=False, max_length=64)
    id = TextField(required=False, max_length=64)

    def validate(self, attrs):
        value = attrs.get("vfolder_id") or attrs.get("id")
        if not value:
            raise serializers.ValidationError({"vfolder_id": "This field is required."})
        return {"vfolder_id": value}


class FolderNameSerializer(serializers.Serializer):
    name = TextField(max_length=names.FOLDER_NAME_MAX_CHARS)


class RenameSerializer(serializers.Serializer):
    new_name = TextField(max_length=names.FOLDER_NAME_MAX_CHARS)


class UpdateOptionsSerializer(serializers.Serializer):
    permission = serializers.ChoiceField(choices=PERMISSIONS, required=False, allow_null=True)
    cloneable = serializers.BooleanField(required=False, allow_null=True)


class MkdirSerializer(serializers.Serializer):
    path = PathOrListField()
    parents = serializers.BooleanField(default=False)
    exist_ok = serializers.BooleanField(default=False)


class FilesSerializer(serializers.Serializer):
    path = PathField(default=".")


class RequestUploadSerializer(serializers.Serializer):
    path = PathField()
    size = serializers.IntegerField(min_value=0)


class RequestDownloadSerializer(serializers.Serializer):
    path = PathField()
    archive = serializers.BooleanField(default=False)
    format = serializers.ChoiceField(choices=["zip", "tar"], required=False, allow_null=True)


class RenameFileSerializer(serializers.Serializer):
    target_path = PathField()
    new_name = PathField()
    is_dir = serializers.BooleanField(required=False, help_text="Ignored: files and directories rename alike")


class MoveFileSerializer(serializers.Serializer):
    src = PathField()
    dst = PathField()


class DeleteFilesSerializer(serializers.Serializer):
    files = StringListField()
    recursive = serializers.BooleanField(default=False)


class InviteSerializer(serializers.Serializer):
    perm = serializers.ChoiceField(choices=PERMISSIONS, default=VFolderPermission.READ_WRITE)
    emails = StringListField(required=False)
    user_ids = StringListField(required=False, help_text="Emails (the 23.09 client's name for them)")

    def validate(self, attrs):
        emails = list(attrs.get("emails") or []) + list(attrs.get("user_ids") or [])
        if not emails:
            raise serializers.ValidationError({"emails": "At least one email is required."})
        return {"perm": attrs["perm"], "emails": emails}


class InvitationSerializer(serializers.Serializer):
    inv_id = TextField(max_length=64)


class UpdateInvitationSerializer(serializers.Serializer):
    perm = serializers.ChoiceField(choices=PERMISSIONS)


class ShareSerializer(serializers.Serializer):
    permission = serializers.ChoiceField(choices=PERMISSIONS, default=VFolderPermission.READ_WRITE)
    emails = StringListField()


class UnshareSerializer(serializers.Serializer):
    emails = StringListField()


class LeaveSerializer(serializers.Serializer):
    shared_user_uuid = TextField(required=False, allow_null=True, allow_blank=True, max_length=64)


class SharedListSerializer(serializers.Serializer):
    """``GET /folders/_/shared``: one folder's (the query string for 24.09+, the body for 23.09)."""

    vfolder_id = TextField(required=False, allow_null=True, allow_blank=True, max_length=64)


class SharedPermissionSerializer(serializers.Serializer):
    """``POST /folders/_/shared``: ``perm`` null takes the permission back."""

    vfolder = TextField(max_length=64)
    user = TextField(max_length=64)
    perm = serializers.ChoiceField(choices=PERMISSIONS, allow_null=True)


class ChangeOwnershipSerializer(serializers.Serializer):
    """``POST /folders/_/change-ownership`` (``vfid`` is taken for ``vfolder`` too)."""

    vfolder = TextField(required=False, max_length=64)
    vfid = TextField(required=False, max_length=64)
    user_email = TextField(max_length=254)

    def validate(self, attrs):
        value = attrs.get("vfolder") or attrs.get("vfid")
        if not value:
            raise serializers.ValidationError({"vfolder": "This field is required."})
        return {"vfolder": value, "user_email": attrs["user_email"]}


class PerfMetricSerializer(serializers.Serializer):
    folder_host = TextField(max_length=128)
