"""``manage.py healthcheck``: the production health check (a container HEALTHCHECK, a systemd
timer, a monitoring probe).  Exit 0 when the database, Redis (when configured) and the beat
(a tick younger than BEAT_MAX_AGE) are healthy; exit 1 with one line per failing check."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from backendai import health


class Command(BaseCommand):
    help = "Check the database, Redis and the beat's last tick; exit 1 naming what is unhealthy."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the checks as /readyz's JSON")

    def handle(self, *args, **options):
        checks = health.run_checks()
        failing = health.failing(checks)
        if options["json"]:
            self.stdout.write(json.dumps({"status": "unhealthy" if failing else "ok", "failing": failing,
                                          "checks": checks}))
        else:
            for name, check in checks.items():
                details = ", ".join(f"{k}={v}" for k, v in check.items() if k not in ("ok", "error") and v is not None)
                state = "ok" if check["ok"] else f"UNHEALTHY: {check.get('error', 'failed')}"
                self.stdout.write(f"{name}: {state}" + (f" ({details})" if details else ""))
        if failing:
            raise CommandError(f"unhealthy: {', '.join(failing)}", returncode=1)
