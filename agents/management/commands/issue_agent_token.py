"""Issue an agent token (printed once) bound to an agent id or a scaling group."""
from django.core.management.base import BaseCommand, CommandError

from agents import services
from agents.models import ScalingGroup
from backendai.api.errors import BackendAIError


class Command(BaseCommand):
    help = "Issue a token for agent daemons; prints it once."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="agent token")
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--agent-id")
        scope.add_argument("--scaling-group")

    def handle(self, *args, name, agent_id, scaling_group, **options):
        group = None
        if scaling_group:
            group = ScalingGroup.objects.filter(pk=scaling_group).first()
            if group is None:
                raise CommandError(f"no scaling group {scaling_group!r}")
        try:
            _, raw = services.issue_token(name, agent_id=agent_id or "", scaling_group=group)
        except BackendAIError as exc:
            raise CommandError(exc.msg) from None
        self.stdout.write(raw)
