"""Request shapes of the folder API.  Paths are taken verbatim (no trimming, no
NUL stripping): ``vfolders.storage.clean_relpath`` decides and explains."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from vfolders.models import UsageMode, VFolderPermission

PERMISSIONS = [p.value for p in VFolderPermission]


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
    group_id = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    owner_user_email = serializers.CharField(required=False, allow_null=True, allow_blank=True)


class FolderCreateSerializer(serializers.Serializer):
    name = serializers.CharField(trim_whitespace=False)
    host = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    folder_host = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    usage_mode = serializers.ChoiceField(choices=[m.value for m in UsageMode], default=UsageMode.GENERAL)
    permission = serializers.ChoiceField(choices=PERMISSIONS, default=VFolderPermission.READ_WRITE)
    unmanaged_path = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    group = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    group_id = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    quota = serializers.JSONField(required=False, allow_null=True, help_text="Ignored (per-folder quotas are legacy)")
    cloneable = serializers.BooleanField(default=False)


class FolderRefSerializer(serializers.Serializer):
    """``DELETE /folders`` and the trash endpoints: the folder id."""

    vfolder_id = serializers.CharField(required=False)
    id = serializers.CharField(required=False)

    def validate(self, attrs):
        value = attrs.get("vfolder_id") or attrs.get("id")
        if not value:
            raise serializers.ValidationError({"vfolder_id": "This field is required."})
        return {"vfolder_id": value}


class FolderNameSerializer(serializers.Serializer):
    name = serializers.CharField(trim_whitespace=False)


class RenameSerializer(serializers.Serializer):
    new_name = serializers.CharField(trim_whitespace=False)


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
    inv_id = serializers.CharField()


class UpdateInvitationSerializer(serializers.Serializer):
    perm = serializers.ChoiceField(choices=PERMISSIONS)


class ShareSerializer(serializers.Serializer):
    permission = serializers.ChoiceField(choices=PERMISSIONS, default=VFolderPermission.READ_WRITE)
    emails = StringListField()


class UnshareSerializer(serializers.Serializer):
    emails = StringListField()


class LeaveSerializer(serializers.Serializer):
    shared_user_uuid = serializers.CharField(required=False, allow_null=True, allow_blank=True)
