from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "sessions"
    label = "compute_sessions"  # django.contrib.sessions owns the label "sessions"
    verbose_name = "Compute sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # imported here: an AppConfig module is imported before the models are ready
        from accounts import hooks as account_hooks
        from backendai.exports import registry as export_registry
        from sessions import exports, folder_mounts, purging, services, signals, tasks
        from vfolders import hooks as vfolder_hooks

        signals.session_queued.connect(tasks.hint_scheduler, dispatch_uid="sessions.hint_scheduler.queued")
        signals.capacity_became_free.connect(tasks.hint_scheduler, dispatch_uid="sessions.hint_scheduler.freed")
        # a folder mounted by a live session stays out of the trash (vfolders asks through its hook)
        vfolder_hooks.register_mount_lookup(folder_mounts.live_sessions_mounting)
        # GraphQL's KeyPair.concurrency_used (accounts asks through its hook)
        account_hooks.register_concurrency_counter(services.concurrency_by_keypair)
        # purging a user or a project: refused while they have a live session, else their ended ones go
        account_hooks.register_purge_handler(purging.purge_handler)
        # the web UI's dashboard (running sessions, quota, capacity, events) and settings' choices
        from sessions import dashboard
        account_hooks.register_dashboard_provider(dashboard.dashboard_parts)
        account_hooks.register_choices_provider(dashboard.user_choices)
        # the sessions CSV report (served by backendai.exports), then the audit log's: the order
        # of the client's `admin export list-reports` (users, keypairs, projects, sessions, audit-logs)
        from backendai import audit_client
        export_registry.register(*exports.REPORTS, *audit_client.REPORTS)
        # the usage-buckets CSV report (daily slot-hours per user, project and resource group)
        from sessions import usage_export
        export_registry.register(*usage_export.REPORTS)
