"""Business rules of the app proxy coordinator, one module per concern:

* ``worker_tokens`` — worker tokens (issue, revoke, look up; shared with agents via ``backendai.daemons``);
* ``workers`` — a worker's own calls (register, heartbeat, its circuit table, shutdown), its liveness
  (``mark_lost_workers``) and operator actions on workers;
* ``access`` — last-access reports that feed the idle checks;
* ``serialise`` — the JSON workers sync from, and the URL users reach a circuit at;
* ``worker_hints`` — "sync now" pushes to workers after a commit;
* ``revisions`` — a worker's table revisions and its occupancy count;
* ``placement`` — choosing a worker, and a port or subdomain on it;
* ``circuits`` — a circuit's target in its session, creating, changing and removing circuits;
* ``setup_links`` — one-time setup links (issued here, redeemed once by a worker);
* ``launch`` — opening an app for a user (``start_service``) and the web UI's form targets;
* ``inference`` — model-serving endpoints' circuits (routes, health, traffic samples);
* ``sweeps`` — the periodic convergence pass;
* ``routes`` — the coordinator's own REST API (workers by id, routes for the manager);
* ``timeouts`` and ``exceptions`` — the clocks and the problems answered.

Every state change of workers and circuits goes through this package; REST and
web views, the admin and Celery tasks call it through the names re-exported
here.  Pushes to workers are hints only: a worker also re-reads its table on a
timer, so a lost hint costs a few seconds, never a route.
"""
from __future__ import annotations

from appproxy.models import CircuitTombstone
from appproxy.services.access import MAX_ACCESS_REPORTS, record_access
from appproxy.services.circuits import (
                                        EDITABLE,
                                        LIVE_SESSION,
                                        PROTOCOL_MAP,
                                        create_circuit,
                                        kernel_host,
                                        main_kernel,
                                        normalize_ips,
                                        remove_circuits,
                                        remove_session_circuits,
                                        service_target,
                                        update_circuit,
)
from appproxy.services.exceptions import (
                                        AppNotReady,
                                        SessionNotRunning,
                                        SetupTokenInvalid,
                                        SetupTokenUsed,
                                        WorkerNotAvailable,
)
from appproxy.services.inference import (
                                        endpoint_health,
                                        endpoint_series,
                                        endpoint_traffic,
                                        prune_samples,
                                        record_heartbeat,
                                        record_route_health,
                                        record_samples,
                                        remove_endpoint,
                                        retarget_endpoints,
                                        sync_endpoint,
)
from appproxy.services.launch import SERVICE_READY, form_targets, start_service
from appproxy.services.placement import allocate_port, pick_worker
from appproxy.services.revisions import recompute_occupancy
from appproxy.services.routes import (
                                        delete_route,
                                        delete_session_routes,
                                        get_route,
                                        get_worker_by_id,
                                        heartbeat_worker,
                                        list_routes,
                                        list_workers,
                                        open_route,
                                        register_worker,
                                        route_json,
                                        show_worker,
                                        stale_workers,
                                        worker_health,
)
from appproxy.services.serialise import circuit_json, frontend_url, worker_json
from appproxy.services.setup_links import issue_setup, redeem_setup_token
from appproxy.services.sweeps import (
                                        collect_idle_circuits,
                                        prune_setup_tokens,
                                        prune_tombstones,
                                        retarget_circuits,
                                        sweep_circuits,
)
from appproxy.services.timeouts import heartbeat_timeout, idle_timeout, permit_ttl, setup_token_ttl, tombstone_retention
from appproxy.services.worker_hints import hint_worker, send_hint
from appproxy.services.worker_tokens import (
                                        TOKEN_PREFIX,
                                        check_token_allows,
                                        hash_token,
                                        issue_token,
                                        revoke_tokens,
                                        token_for,
)
from appproxy.services.workers import (
                                        AUTHORITY_RE,
                                        circuit_table,
                                        heartbeat,
                                        mark_lost_workers,
                                        register,
                                        report_route_health,
                                        rotate_secret,
                                        set_schedulable,
                                        shutdown,
                                        validate_registration,
)

__all__ = [
    "AUTHORITY_RE", "EDITABLE", "LIVE_SESSION", "MAX_ACCESS_REPORTS", "PROTOCOL_MAP", "SERVICE_READY", "TOKEN_PREFIX",
    "AppNotReady", "CircuitTombstone", "SessionNotRunning", "SetupTokenInvalid", "SetupTokenUsed",
    "WorkerNotAvailable", "allocate_port", "delete_route", "delete_session_routes", "get_route", "get_worker_by_id",
    "heartbeat_worker", "list_routes", "list_workers", "open_route", "register_worker", "route_json", "show_worker",
    "stale_workers", "worker_health", "check_token_allows", "circuit_json", "circuit_table",
    "collect_idle_circuits", "create_circuit", "form_targets", "frontend_url", "hash_token", "heartbeat",
    "heartbeat_timeout", "hint_worker", "idle_timeout", "issue_setup", "issue_token", "kernel_host", "main_kernel",
    "mark_lost_workers", "normalize_ips", "permit_ttl", "pick_worker", "prune_setup_tokens", "prune_tombstones",
    "recompute_occupancy", "record_access", "redeem_setup_token", "register", "remove_circuits",
    "remove_session_circuits", "retarget_circuits", "revoke_tokens", "rotate_secret", "send_hint", "service_target",
    "set_schedulable", "setup_token_ttl", "shutdown", "start_service", "sweep_circuits", "token_for",
    "tombstone_retention", "update_circuit", "validate_registration", "worker_json",
    "endpoint_health", "endpoint_series", "endpoint_traffic", "prune_samples", "record_heartbeat",
    "record_route_health", "record_samples", "remove_endpoint", "report_route_health", "retarget_endpoints",
    "sync_endpoint",
]
