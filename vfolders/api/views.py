"""``/folders`` endpoints, Backend.AI-compatible (client-wire §5–7).  Thin: parse
(query string and JSON body alike, since the client sends JSON on GET and
DELETE), call ``vfolders.services``, render."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai.api import errors
from backendai.api.parsers import validated_params
from vfolders import services
from vfolders.api import serializers as s

OBJECT = OpenApiTypes.OBJECT


def params(request, serializer_class) -> dict:
    """Query parameters (less a transfer ``token``) and the JSON body, validated."""
    return validated_params(request, serializer_class, ignore=("token",))


class FolderCollectionView(APIView):
    """``GET /folders`` lists, ``POST /folders`` creates, ``DELETE /folders`` moves to the trash."""

    @extend_schema(request=s.FolderListSerializer, responses=OBJECT, operation_id="folders_list")
    def get(self, request):
        p = params(request, s.FolderListSerializer)
        accesses = services.list_folders(request.user, list_all=p["all"], group_id=p.get("group_id") or None,
                                         owner_email=p.get("owner_user_email") or None)
        return Response([services.folder_json(a) for a in accesses])

    @extend_schema(request=s.FolderCreateSerializer, responses=OBJECT, operation_id="folders_create")
    def post(self, request):
        p = params(request, s.FolderCreateSerializer)
        folder = services.create_folder(
            request.user, name=p["name"], host=p.get("host") or p.get("folder_host") or None,
            group=p.get("group") or p.get("group_id") or None, usage_mode=p["usage_mode"],
            permission=p["permission"], cloneable=p["cloneable"], keypair=request.auth,
            unmanaged_path=p.get("unmanaged_path") or None)
        access = services.access_for(request.user, folder)
        return Response(services.folder_json(access), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.FolderRefSerializer, responses=OBJECT, operation_id="folders_trash_by_id")
    def delete(self, request):
        p = params(request, s.FolderRefSerializer)
        services.move_to_trash(request.user, p["vfolder_id"], keypair=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class HostsView(APIView):
    @extend_schema(responses=OBJECT)
    def get(self, request):
        group = request.query_params.get("group_id")
        if not group and isinstance(request.data, dict):
            group = request.data.get("group_id")
        return Response(services.hosts_info(request.user, request.auth, group or None))


class AllHostsView(APIView):
    @extend_schema(responses=OBJECT)
    def get(self, request):
        if not request.user.is_superadmin:
            raise errors.InsufficientPrivilege("Only superadmins list every storage host")
        return Response(services.all_hosts_info())


class AllowedTypesView(APIView):
    @extend_schema(responses=OBJECT)
    def get(self, request):
        return Response(list(services.FOLDER_TYPES))


class FolderTypesView(APIView):
    """``GET /config/vfolder-types``: the kinds of folder this server makes (any signed user)."""

    @extend_schema(responses=OBJECT, operation_id="config_vfolder_types")
    def get(self, request):
        return Response(list(services.FOLDER_TYPES))


class PerfMetricView(APIView):
    """``GET /folders/_/perf-metric?folder_host=``: ``{"metric": {...}}`` of a storage host (superadmins)."""

    @extend_schema(request=s.PerfMetricSerializer, responses=OBJECT)
    def get(self, request):
        if not request.user.is_superadmin:
            raise errors.InsufficientPrivilege("Only superadmins see the performance of storage volumes")
        p = params(request, s.PerfMetricSerializer)
        return Response(services.performance_metric(request.user, p["folder_host"]))


class ChangeOwnershipView(APIView):
    """``POST /folders/_/change-ownership``: a user folder goes to another user (superadmins)."""

    @extend_schema(request=s.ChangeOwnershipSerializer, responses=OBJECT)
    def post(self, request):
        if not request.user.is_superadmin:
            raise errors.InsufficientPrivilege("Only superadmins change the owner of a folder")
        p = params(request, s.ChangeOwnershipSerializer)
        services.change_owner(request.user, p["vfolder"], p["user_email"])
        return Response({})


class FolderIdView(APIView):
    """``GET /folders/_/id`` (24.09 clients resolve names first): ``{"id": "<hex>"}``."""

    @extend_schema(request=s.FolderNameSerializer, responses=OBJECT)
    def get(self, request):
        p = params(request, s.FolderNameSerializer)
        return Response({"id": services.folder_id_by_name(request.user, p["name"])})


class SharedView(APIView):
    """``GET /folders/_/shared``: the permissions of their own users have on the folders the
    caller manages; ``POST``: an admin changes one (``perm`` null takes it back)."""

    @extend_schema(request=s.SharedListSerializer, responses=OBJECT)
    def get(self, request):
        p = params(request, s.SharedListSerializer)
        return Response({"shared": services.shared_permissions(request.user, p.get("vfolder_id") or None)})

    @extend_schema(request=s.SharedPermissionSerializer, responses=OBJECT, operation_id="folders_shared_update")
    def post(self, request):
        if not (request.user.is_superadmin or request.user.is_domain_admin):
            raise errors.InsufficientPrivilege("Only admins change the permissions users have on shared folders")
        p = params(request, s.SharedPermissionSerializer)
        services.set_shared_permission(request.user, p["vfolder"], p["user"], p["perm"])
        return Response({"msg": "shared vfolder permission updated"})


class FolderDetailView(APIView):
    @extend_schema(responses=OBJECT, operation_id="folders_info")
    def get(self, request, name):
        return Response(services.folder_info(request.user, name))

    @extend_schema(responses=OBJECT, operation_id="folders_trash")
    def delete(self, request, name):
        services.move_to_trash(request.user, name, keypair=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RenameView(APIView):
    @extend_schema(request=s.RenameSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.RenameSerializer)
        services.rename_folder(request.user, name, p["new_name"], keypair=request.auth)
        return Response(status=status.HTTP_201_CREATED)


class UpdateOptionsView(APIView):
    @extend_schema(request=s.UpdateOptionsSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.UpdateOptionsSerializer)
        services.update_options(request.user, name, permission=p.get("permission"), cloneable=p.get("cloneable"),
                                keypair=request.auth)
        return Response(status=status.HTTP_201_CREATED)


class CloneView(APIView):
    """``POST /folders/{x}/clone``: the target folder at once (201), its files copied by a
    background task the client follows over ``/events/background-task`` (``bgtask_id``)."""

    @extend_schema(request=s.CloneSerializer, responses=OBJECT, operation_id="folders_clone")
    def post(self, request, name):
        p = params(request, s.CloneSerializer)
        target, _source, task_id = services.start_clone(
            request.user, name, target_name=p["target_name"],
            target_host=p.get("target_host") or p.get("folder_host") or None,
            usage_mode=p.get("usage_mode") or "general",
            permission=p.get("permission") or p.get("perm") or "rw",
            cloneable=p["cloneable"], keypair=request.auth)
        return Response(services.clone_json(target, task_id), status=status.HTTP_201_CREATED)


class MkdirView(APIView):
    @extend_schema(request=s.MkdirSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.MkdirSerializer)
        result = services.make_dirs(request.user, name, p["path"], parents=p["parents"], exist_ok=p["exist_ok"])
        return Response(result, status=status.HTTP_201_CREATED)


class FilesView(APIView):
    """``GET /folders/{x}/files``: both ``files`` (a JSON string, 23.09) and ``items`` (26.x)."""

    @extend_schema(request=s.FilesSerializer, responses=OBJECT)
    def get(self, request, name):
        p = params(request, s.FilesSerializer)
        return Response(services.list_files(request.user, name, p["path"]))


class RequestUploadView(APIView):
    @extend_schema(request=s.RequestUploadSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.RequestUploadSerializer)
        return Response(services.request_upload(request.user, name, p["path"], p["size"], keypair=request.auth))


class RequestDownloadView(APIView):
    @extend_schema(request=s.RequestDownloadSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.RequestDownloadSerializer)
        return Response(services.request_download(request.user, name, p["path"], archive=p["archive"],
                                                  keypair=request.auth, archive_format=p.get("format")))


class RenameFileView(APIView):
    @extend_schema(request=s.RenameFileSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.RenameFileSerializer)
        services.rename_file(request.user, name, p["target_path"], p["new_name"])
        return Response({})


class MoveFileView(APIView):
    @extend_schema(request=s.MoveFileSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.MoveFileSerializer)
        return Response({"path": services.move_file(request.user, name, p["src"], p["dst"])})


class DeleteFilesView(APIView):
    @extend_schema(request=s.DeleteFilesSerializer, responses=OBJECT)
    def delete(self, request, name):
        p = params(request, s.DeleteFilesSerializer)
        services.delete_files(request.user, name, p["files"], recursive=p["recursive"])
        return Response({})

    post = delete


class InviteView(APIView):
    @extend_schema(request=s.InviteSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.InviteSerializer)
        invited = services.invite(request.user, name, p["perm"], p["emails"], keypair=request.auth)
        return Response({"invited_ids": invited}, status=status.HTTP_201_CREATED)


class ShareView(APIView):
    @extend_schema(request=s.ShareSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.ShareSerializer)
        return Response({"shared_emails": services.share(request.user, name, p["permission"], p["emails"])},
                        status=status.HTTP_201_CREATED)


class UnshareView(APIView):
    @extend_schema(request=s.UnshareSerializer, responses=OBJECT)
    def delete(self, request, name):
        p = params(request, s.UnshareSerializer)
        return Response({"unshared_emails": services.unshare(request.user, name, p["emails"])})

    post = delete


class LeaveView(APIView):
    @extend_schema(request=s.LeaveSerializer, responses=OBJECT)
    def post(self, request, name):
        p = params(request, s.LeaveSerializer)
        services.leave(request.user, name, p.get("shared_user_uuid") or None)
        return Response({"msg": "left the shared folder"})


class InvitationListView(APIView):
    @extend_schema(responses=OBJECT)
    def get(self, request):
        return Response({"invitations": [services.invitation_json(i)
                                         for i in services.invitations_received(request.user)]})


class InvitationSentView(APIView):
    @extend_schema(responses=OBJECT)
    def get(self, request):
        return Response({"invitations": [services.invitation_json(i) for i in services.invitations_sent(request.user)]})


class InvitationAcceptView(APIView):
    @extend_schema(request=s.InvitationSerializer, responses=OBJECT)
    def post(self, request):
        p = params(request, s.InvitationSerializer)
        services.accept_invitation(request.user, p["inv_id"])
        return Response({})


class InvitationDeleteView(APIView):
    """The invitee rejects; the inviter cancels."""

    @extend_schema(request=s.InvitationSerializer, responses=OBJECT)
    def delete(self, request):
        p = params(request, s.InvitationSerializer)
        state = services.delete_invitation(request.user, p["inv_id"])
        return Response({"state": state})

    post = delete


class InvitationUpdateView(APIView):
    @extend_schema(request=s.UpdateInvitationSerializer, responses=OBJECT)
    def post(self, request, inv_id):
        p = params(request, s.UpdateInvitationSerializer)
        services.update_invitation(request.user, inv_id, p["perm"])
        return Response({"msg": f"invitation {inv_id} updated"})


class RestoreView(APIView):
    @extend_schema(request=s.FolderRefSerializer, responses=OBJECT)
    def post(self, request):
        p = params(request, s.FolderRefSerializer)
        services.restore_from_trash(request.user, p["vfolder_id"], keypair=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PurgeView(APIView):
    """``POST /folders/purge`` and ``DELETE /folders/delete-from-trash-bin``: gone for good."""

    @extend_schema(request=s.FolderRefSerializer, responses=OBJECT)
    def post(self, request):
        p = params(request, s.FolderRefSerializer)
        services.purge(request.user, p["vfolder_id"], keypair=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)

    delete = post
