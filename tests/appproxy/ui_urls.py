"""The project's URLs plus the app proxy's web UI routes (until the lead includes them in backendai/urls.py)."""
from django.urls import include, path

from backendai import urls as project

handler404 = project.handler404
handler500 = project.handler500
_included = any(getattr(p, "namespace", None) == "ui-appproxy" for p in project.urlpatterns)
urlpatterns = list(project.urlpatterns) if _included else [
    path("ui/", include(("appproxy.urls", "ui-appproxy"), namespace="ui-appproxy")), *project.urlpatterns]
