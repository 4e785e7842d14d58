from django.urls import path

from backendai.exports import views

urlpatterns = [
    path("export/reports", views.ReportListView.as_view(), name="export-reports"),
    path("export/reports/<str:report_key>", views.ReportDetailView.as_view(), name="export-report"),
    path("export/<str:report_key>/csv", views.ReportCSVView.as_view(), name="export-csv"),
]
