"""Folder API routes.  The fixed ``/folders/_/...``, ``/folders/invitations/...``
and trash routes come before ``/folders/<name>`` so they are never taken for a
folder name (those words are refused as folder names too).  Legacy underscore
aliases stay out of the OpenAPI schema."""
from django.urls import path

from vfolders.api import views

F = "folders/<str:name>"

urlpatterns = [
    path("folders", views.FolderCollectionView.as_view(), name="vfolder-list"),
    path("folders/_/hosts", views.HostsView.as_view(), name="vfolder-hosts"),
    path("folders/_/all-hosts", views.AllHostsView.as_view(), name="vfolder-all-hosts"),
    path("folders/_/all_hosts", views.AllHostsView.as_view(schema=None)),
    path("folders/_/allowed-types", views.AllowedTypesView.as_view(), name="vfolder-allowed-types"),
    path("folders/_/allowed_types", views.AllowedTypesView.as_view(schema=None)),
    path("folders/_/id", views.FolderIdView.as_view(), name="vfolder-id"),
    path("folders/_/shared", views.SharedView.as_view(), name="vfolder-shared"),
    path("folders/_/perf-metric", views.PerfMetricView.as_view(), name="vfolder-perf-metric"),
    path("folders/_/change-ownership", views.ChangeOwnershipView.as_view(), name="vfolder-change-ownership"),
    path("folders/invitations/list", views.InvitationListView.as_view(), name="vfolder-invitations"),
    path("folders/invitations/list-sent", views.InvitationSentView.as_view(), name="vfolder-invitations-sent"),
    path("folders/invitations/list_sent", views.InvitationSentView.as_view(schema=None)),
    path("folders/invitations/accept", views.InvitationAcceptView.as_view(), name="vfolder-invitation-accept"),
    path("folders/invitations/delete", views.InvitationDeleteView.as_view(), name="vfolder-invitation-delete"),
    path("folders/invitations/reject", views.InvitationDeleteView.as_view(), name="vfolder-invitation-reject"),
    path("folders/invitations/update/<str:inv_id>", views.InvitationUpdateView.as_view(),
         name="vfolder-invitation-update"),
    path("folders/purge", views.PurgeView.as_view(), name="vfolder-purge"),
    path("folders/restore-from-trash-bin", views.RestoreView.as_view(), name="vfolder-restore"),
    path("folders/delete-from-trash-bin", views.PurgeView.as_view(), name="vfolder-delete-from-trash"),
    path(F, views.FolderDetailView.as_view(), name="vfolder-detail"),
    path(F + "/rename", views.RenameView.as_view(), name="vfolder-rename"),
    path(F + "/update-options", views.UpdateOptionsView.as_view(), name="vfolder-update-options"),
    path(F + "/clone", views.CloneView.as_view(), name="vfolder-clone"),
    path(F + "/mkdir", views.MkdirView.as_view(), name="vfolder-mkdir"),
    path(F + "/files", views.FilesView.as_view(), name="vfolder-files"),
    path(F + "/request-upload", views.RequestUploadView.as_view(), name="vfolder-request-upload"),
    path(F + "/request-download", views.RequestDownloadView.as_view(), name="vfolder-request-download"),
    path(F + "/rename-file", views.RenameFileView.as_view(), name="vfolder-rename-file"),
    path(F + "/rename_file", views.RenameFileView.as_view(schema=None)),
    path(F + "/move-file", views.MoveFileView.as_view(), name="vfolder-move-file"),
    path(F + "/move_file", views.MoveFileView.as_view(schema=None)),
    path(F + "/delete-files", views.DeleteFilesView.as_view(), name="vfolder-delete-files"),
    path(F + "/delete_files", views.DeleteFilesView.as_view(schema=None)),
    path(F + "/invite", views.InviteView.as_view(), name="vfolder-invite"),
    path(F + "/share", views.ShareView.as_view(), name="vfolder-share"),
    path(F + "/unshare", views.UnshareView.as_view(), name="vfolder-unshare"),
    path(F + "/leave", views.LeaveView.as_view(), name="vfolder-leave"),
]
