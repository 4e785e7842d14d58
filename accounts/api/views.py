"""``/auth`` endpoints and keypair management.  Thin: parse, call services, render."""
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import lockout, services
from accounts.api.serializers import (
    AuthorizeSerializer,
    KeypairSerializer,
    KeypairUpdateSerializer,
    SSHKeypairUploadSerializer,
    UpdatePasswordSerializer,
)
from accounts.filters import KeypairListFilter
from backendai.api import errors

_echo = inline_serializer("AuthEcho", {"authorized": serializers.CharField(), "echo": serializers.CharField()})


class AuthTestView(APIView):
    """Echo back that the signature checked out (``GET|POST /auth``, ``/auth/test``)."""

    @extend_schema(responses=_echo)
    def get(self, request):
        return Response({"authorized": "yes", "echo": request.query_params.get("echo", "")})

    @extend_schema(request=inline_serializer("AuthEchoRequest", {"echo": serializers.CharField()}), responses=_echo)
    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        return Response({"authorized": "yes", "echo": data.get("echo", "")})


class AuthorizeView(APIView):
    """Exchange an email and password for the user's API keypair."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(request=AuthorizeSerializer)
    def post(self, request):
        params = AuthorizeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        user, keypair = lockout.guarded_authorize(  # 429 after repeated failures (django-axes)
            request, params.validated_data["domain"], params.validated_data["username"],
            params.validated_data["password"],
        )
        return Response({"data": {
            "access_key": keypair.access_key,
            "secret_key": keypair.secret_key,
            "role": user.role,
            "status": user.status,
        }})


class RoleView(APIView):
    def get(self, request):
        project = None
        group = request.query_params.get("group")
        if group:
            project = services.project_for_user(request.user, group)
        return Response(services.roles_of(request.user, project))


class UpdatePasswordView(APIView):
    @extend_schema(request=UpdatePasswordSerializer)
    def post(self, request):
        params = UpdatePasswordSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        services.change_password(request.user, **params.validated_data)
        return Response(status=status.HTTP_201_CREATED)


class SSHKeypairView(APIView):
    """The SSH keypair of the calling keypair: get the public key, regenerate, or upload one."""

    def get(self, request):
        return Response({"ssh_public_key": request.auth.ssh_public_key})

    def patch(self, request):
        public = services.regenerate_ssh_keypair(request.auth)
        return Response({"ssh_public_key": public, "ssh_private_key": request.auth.ssh_private_key})

    @extend_schema(request=SSHKeypairUploadSerializer)
    def post(self, request):
        params = SSHKeypairUploadSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        services.upload_ssh_keypair(request.auth, params.validated_data["pubkey"], params.validated_data["privkey"])
        return Response({"ssh_public_key": params.validated_data["pubkey"]})


class KeypairListView(APIView):
    """Keypairs the caller may see; POST creates one for the caller (secret shown once)."""

    @extend_schema(responses=KeypairSerializer(many=True))
    def get(self, request):
        listed = KeypairListFilter(request.query_params, queryset=services.visible_keypairs(request.user))
        if not listed.is_valid():
            raise errors.InvalidAPIParameters("; ".join(f"{name}: {' '.join(messages)}" for name, messages in listed.errors.items()))
        query = listed.qs
        return Response({"keypairs": KeypairSerializer(query.order_by("-created_at"), many=True).data})

    def post(self, request):
        keypair, secret = services.create_keypair(request.user)
        body = KeypairSerializer(keypair).data
        body["secret_key"] = secret
        return Response(body, status=status.HTTP_201_CREATED)


class KeypairDetailView(APIView):
    @extend_schema(responses=KeypairSerializer)
    def get(self, request, access_key):
        return Response(KeypairSerializer(services.managed_keypair(request.user, access_key)).data)

    @extend_schema(request=KeypairUpdateSerializer, responses=KeypairSerializer)
    def patch(self, request, access_key):
        params = KeypairUpdateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        keypair = services.deactivate_own_keypair(request.user, access_key, params.validated_data["is_active"])
        return Response(KeypairSerializer(keypair).data)
