"""Rescan a container registry's images over the Docker Registry HTTP API v2."""
from django.core.management.base import BaseCommand, CommandError

from agents import services
from agents.models import ContainerRegistry
from backendai.api.errors import BackendAIError


class Command(BaseCommand):
    help = "Record every image of a registry (or of all registries)."

    def add_arguments(self, parser):
        parser.add_argument("registry", nargs="?", help="registry name (host[:port]); default: all")

    def handle(self, *args, registry=None, **options):
        registries = ContainerRegistry.objects.all()
        if registry:
            registries = registries.filter(registry_name=registry)
            if not registries.exists():
                raise CommandError(f"no registry {registry!r}")
        failed = False
        for item in registries:
            try:
                result = services.rescan_registry(item)
            except BackendAIError as exc:
                self.stderr.write(f"{item}: {exc.msg}")
                failed = True
                continue
            self.stdout.write(f"{item}: {result['images']} image(s)")
            for error in result["errors"]:
                self.stderr.write(f"  {error}")
        if failed:
            raise CommandError("some registries could not be scanned")
