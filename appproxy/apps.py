from django.apps import AppConfig


class AppProxyConfig(AppConfig):
    name = "appproxy"
    verbose_name = "App proxy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # imported here: an AppConfig module is imported before the models are ready
        from accounts import hooks as account_hooks
        from appproxy import purging, receivers, services
        from sessions import hooks, signals

        signals.session_ended.connect(receivers.drop_circuits_of_ended_session,
                                      dispatch_uid="appproxy.drop_circuits_of_ended_session")
        hooks.register_form_targets(services.form_targets)
        # purging a user removes the circuits they own (apps they opened in others' sessions)
        account_hooks.register_purge_handler(purging.purge_handler)
