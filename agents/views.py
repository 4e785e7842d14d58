"""Web UI: the resource groups a user may use, with their free capacity."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from agents import services


@login_required
def resource_groups(request):
    groups = services.allowed_scaling_groups(request.user)
    rows = services.group_capacity(list(groups))
    return render(request, "agents/resource_groups.html", {"rows": rows})
