from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Model serving"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # imported here: an AppConfig module is imported before the models are ready
        from serving import tasks
        from sessions import signals

        # an ended replica session: the reconciler replaces it at once rather than at its next tick
        signals.session_ended.connect(tasks.replica_ended, dispatch_uid="serving.replica_ended")
