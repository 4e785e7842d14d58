"""Web UI routes (mounted under /ui/ with the ``ui-vfolders`` namespace)."""
from django.urls import path

from vfolders import views

urlpatterns = [
    path("folders/", views.folder_list, name="folders"),
    path("folders/sizes/", views.folder_sizes, name="sizes"),
    path("folders/invitations/", views.invitations, name="invitations"),
    path("folders/<uuid:folder_id>/", views.browse, name="browse"),
    path("folders/<uuid:folder_id>/mkdir/", views.mkdir, name="mkdir"),
    path("folders/<uuid:folder_id>/upload/", views.upload, name="upload"),
    path("folders/<uuid:folder_id>/request-upload/", views.request_upload, name="request-upload"),
    path("folders/<uuid:folder_id>/download/", views.download, name="download"),
    path("folders/<uuid:folder_id>/rename-file/", views.rename_file, name="rename-file"),
    path("folders/<uuid:folder_id>/move-file/", views.move_file, name="move-file"),
    path("folders/<uuid:folder_id>/delete-files/", views.delete_files, name="delete-files"),
    path("folders/<uuid:folder_id>/rename/", views.rename_folder, name="rename"),
    path("folders/<uuid:folder_id>/trash/", views.trash, name="trash"),
    path("folders/<uuid:folder_id>/restore/", views.restore, name="restore"),
    path("folders/<uuid:folder_id>/purge/", views.purge, name="purge"),
    path("folders/<uuid:folder_id>/invite/", views.invite, name="invite"),
    path("folders/<uuid:folder_id>/revoke/", views.revoke, name="revoke"),
    path("folders/<uuid:folder_id>/leave/", views.leave, name="leave"),
]
