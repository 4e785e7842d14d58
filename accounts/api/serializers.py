from rest_framework import serializers

from accounts.models import Keypair


class AuthorizeSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["keypair"], default="keypair")
    domain = serializers.CharField(default="default")
    username = serializers.CharField(help_text="The user's email")
    password = serializers.CharField(trim_whitespace=False)


class UpdatePasswordSerializer(serializers.Serializer):
    old_password = serializers.CharField(trim_whitespace=False)
    new_password = serializers.CharField(trim_whitespace=False)
    new_password2 = serializers.CharField(trim_whitespace=False)


class SSHKeypairUploadSerializer(serializers.Serializer):
    pubkey = serializers.CharField()
    privkey = serializers.CharField()


class KeypairSerializer(serializers.ModelSerializer):
    """A keypair as lists show it: never the secret."""

    user_id = serializers.EmailField(source="user.email", read_only=True)
    user = serializers.UUIDField(source="user.pk", read_only=True)
    resource_policy = serializers.CharField(source="resource_policy_id", read_only=True)
    is_main = serializers.BooleanField(read_only=True)

    class Meta:
        model = Keypair
        fields = [
            "access_key", "user_id", "user", "is_active", "is_admin", "is_main", "created_at", "last_used",
            "rate_limit", "num_queries", "resource_policy",
        ]
        read_only_fields = fields


class KeypairUpdateSerializer(serializers.Serializer):
    is_active = serializers.BooleanField()
