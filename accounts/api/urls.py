from django.urls import path

from accounts.api import views

urlpatterns = [
    path("auth", views.AuthTestView.as_view(), name="auth"),
    path("auth/test", views.AuthTestView.as_view(), name="auth-test"),
    path("auth/authorize", views.AuthorizeView.as_view(), name="auth-authorize"),
    path("auth/role", views.RoleView.as_view(), name="auth-role"),
    path("auth/update-password", views.UpdatePasswordView.as_view(), name="auth-update-password"),
    path("auth/ssh-keypair", views.SSHKeypairView.as_view(), name="auth-ssh-keypair"),
    path("keypairs", views.KeypairListView.as_view(), name="keypair-list"),
    path("keypairs/<str:access_key>", views.KeypairDetailView.as_view(), name="keypair-detail"),
]
