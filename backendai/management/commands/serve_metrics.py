"""``manage.py serve_metrics``: the internal metrics listener (``METRICS_LISTEN``, default
``127.0.0.1:18080``): ``GET /metrics`` (every process's metrics, aggregated over
``PROMETHEUS_MULTIPROC_DIR``, and the database's gauges) and ``GET /metrics/service_discovery``
(Prometheus HTTP SD: this listener, the live agents' and app-proxy workers' ``/metrics``)."""
from __future__ import annotations

import os
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from backendai.config import ConfigError, parse_host_port
from backendai.metrics import MetricsServer


class Command(BaseCommand):
    help = "Serve /metrics and /metrics/service_discovery on the internal metrics address (METRICS_LISTEN)."

    def add_arguments(self, parser):
        parser.add_argument("--listen", metavar="HOST:PORT", default=None,
                            help="listen here instead of METRICS_LISTEN (port 0: any free port)")

    def handle(self, *args, **options):
        listen = settings.METRICS_LISTEN
        if options["listen"]:  # port 0: any free port (tests)
            try:
                listen = parse_host_port(options["listen"], "--listen")
            except ConfigError as exc:
                raise CommandError(str(exc)) from None
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.stderr.write("warning: PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows only this process's "
                              "metrics and the database's gauges, not those of the web and Celery processes")
        try:
            server = MetricsServer(listen)
        except OSError as exc:
            raise CommandError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}") from None
        host, port = server.server_address[:2]
        self.stdout.write(f"metrics listener on http://{host}:{port}/metrics (service discovery: "
                          f"/metrics/service_discovery; listed as {server.advertised})", ending="\n")
        self.stdout.flush()
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def _interrupt(*_):
    raise KeyboardInterrupt
