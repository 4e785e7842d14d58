"""Populate a fresh database: default domain, project and resource policies,
the intrinsic slot types and a superadmin with a keypair.  Safe to run twice:
what exists is left as it is.

With ``--credentials FILE`` the demo login is kept in FILE (mode 600) as
``{"url", "admin": {"email", "password"}, "access_key", "secret_key"}``;
a password already recorded there is reused, so a second run changes nothing.
"""
import json
import os
import secrets
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import services
from accounts.models import User, UserRole
from agents import services as agent_services
from appproxy import services as proxy_services
from backendai import services as manager_services
from vfolders import services as vfolder_services


class Command(BaseCommand):
    help = "Create the default domain, project, policies and a superadmin (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--admin-email", default="admin@example.com")
        parser.add_argument("--admin-password", default=None, help="Default: generated, or the one already recorded.")
        parser.add_argument("--credentials", type=Path, default=None, help="Write the demo login to this JSON file (mode 600).")
        parser.add_argument("--url", default="http://127.0.0.1:8091", help="The URL recorded in the credentials file.")
        parser.add_argument("--agent-token", type=Path, default=None,
                            help="Keep a token for the embedded local agent in this file (mode 600).")
        parser.add_argument("--proxy-token", type=Path, default=None,
                            help="Keep a token for the embedded app proxy worker in this file (mode 600).")

    def handle(self, *args, admin_email, admin_password, credentials, url, agent_token=None, proxy_token=None,
               **options):
        recorded = {}
        if credentials and credentials.exists():
            try:
                recorded = json.loads(credentials.read_text())
            except ValueError:
                recorded = {}
        with transaction.atomic():
            defaults = services.ensure_defaults()
            manager_services.ensure_intrinsic_slot_types()

            group = agent_services.ensure_default_scaling_group()

            vfolder_services.ensure_default_storage_host()
            if agent_token is not None:
                _ensure_agent_token(agent_token, group)
            if proxy_token is not None:
                _ensure_proxy_token(proxy_token)
            admin = User.objects.filter(email__iexact=admin_email).first()
            password = admin_password or (recorded.get("admin") or {}).get("password")
            if admin is None:
                password = password or secrets.token_urlsafe(12)
                admin = services.create_user(
                    email=admin_email, password=password, username="admin", full_name="Administrator",
                    role=UserRole.SUPERADMIN, domain=defaults.domain, projects=[defaults.project],
                )
                self.stdout.write(f"created superadmin {admin_email}")
            elif admin_password or (credentials and not password):
                password = password or secrets.token_urlsafe(12)
                admin.set_password(password)
                admin.save(update_fields=["password"])
                self.stdout.write(f"reset the password of {admin_email}")
            keypair = admin.main_keypair
            if keypair is None:
                keypair, _ = services.create_keypair(admin)
                admin.main_keypair = keypair
                admin.save(update_fields=["main_keypair"])
        if credentials:
            credentials.parent.mkdir(parents=True, exist_ok=True)
            body = {
                "url": url,
                "admin": {"email": admin.email, "password": password},
                "access_key": keypair.access_key,
                "secret_key": keypair.secret_key,
            }
            fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(body, handle, indent=2)
            os.chmod(credentials, 0o600)
        self.stdout.write(self.style.SUCCESS("populated"))


def _ensure_agent_token(path: Path, group) -> None:
    """A scaling-group token for the embedded agent; kept while it stays valid."""
    if path.exists() and agent_services.token_for(path.read_text().strip()) is not None:
        return
    _, raw = agent_services.issue_token("embedded local agent", scaling_group=group)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(raw)


def _ensure_proxy_token(path: Path, authority: str = "local-proxy") -> None:
    """A token for the embedded app proxy worker, bound to its name; kept while it stays valid."""
    if path.exists() and proxy_services.token_for(path.read_text().strip()) is not None:
        return
    _, raw = proxy_services.issue_token("embedded app proxy worker", authority=authority)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(raw)
