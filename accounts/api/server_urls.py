"""``/server/*``: the webserver's login endpoints of session mode (``accounts.api.webserver``)."""
from django.urls import path

from accounts.api import webserver

urlpatterns = [
    path("login", webserver.ServerLoginView.as_view(), name="server-login"),
    path("logout", webserver.ServerLogoutView.as_view(), name="server-logout"),
    path("login-check", webserver.ServerLoginCheckView.as_view(), name="server-login-check"),
]
