"""Web UI for accounts: login, dashboard and the user's API keys.  Thin views
over ``accounts.services``."""
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services
from accounts.forms import KeypairActionForm, LoginForm
from backendai import services as manager_services
from backendai.api.errors import BackendAIError

NEW_SECRET_SESSION_KEY = "new_keypair_secret"


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


@login_required
def dashboard(request):
    context = services.dashboard_context(request.user)
    context["announcement"] = manager_services.get_announcement()
    return render(request, "accounts/dashboard.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def keypairs(request):
    if request.method == "POST":
        keypair, secret = services.create_keypair(request.user)
        request.session[NEW_SECRET_SESSION_KEY] = {"access_key": keypair.access_key, "secret_key": secret}
        messages.success(request, f"Created keypair {keypair.access_key}.")
        return redirect("ui:keypairs")
    new_secret = request.session.pop(NEW_SECRET_SESSION_KEY, None)  # shown exactly once
    rows = services.visible_keypairs(request.user).filter(user=request.user).order_by("-created_at")
    return render(request, "accounts/keypairs.html", {"keypairs": rows, "new_secret": new_secret})


@login_required
@require_POST
def keypair_action(request):
    form = KeypairActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown keypair action.")
        return redirect("ui:keypairs")
    access_key = form.cleaned_data["access_key"]
    action = form.cleaned_data["action"]
    try:
        keypair = services.managed_keypair(request.user, access_key)
        if keypair.user_id != request.user.pk:
            raise BackendAIError("Not your keypair")
        if action == "regenerate":  # only the owner, who then sees the new secret once
            secret = services.regenerate_secret(keypair)
            request.session[NEW_SECRET_SESSION_KEY] = {"access_key": keypair.access_key, "secret_key": secret}
        else:
            services.set_keypair_active([keypair], action == "activate", request.user)
    except BackendAIError:
        messages.error(request, f"No keypair {access_key} of yours.")
    else:
        done = {"activate": "activated", "deactivate": "deactivated", "regenerate": "has a new secret key"}[action]
        messages.success(request, f"Keypair {access_key} {done}.")
    return redirect("ui:keypairs")
