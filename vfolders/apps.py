from django.apps import AppConfig


class VFoldersConfig(AppConfig):
    name = "vfolders"
    verbose_name = "Virtual folders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # imported here: an AppConfig module is imported before the models are ready
        from accounts import hooks as account_hooks
        from vfolders.services import purging

        # purging a user or a project takes their folders (files first) or hands shared ones over
        account_hooks.register_purge_handler(purging.purge_handler)

        # a resource policy's max_quota_scope_size changed: the storage proxies enforce the new limit
        from django.db import transaction
        from django.db.models.signals import post_save

        from accounts.models import ProjectResourcePolicy, UserResourcePolicy
        from vfolders.services.quota import push_policy_limits

        def pushed_after_commit(kind):
            def receiver(sender, instance, created, **kwargs):
                if not created:
                    transaction.on_commit(lambda: push_policy_limits(kind, instance.pk))
            return receiver

        post_save.connect(pushed_after_commit("user"), sender=UserResourcePolicy, weak=False,
                          dispatch_uid="vfolders.push_user_policy_limits")
        post_save.connect(pushed_after_commit("project"), sender=ProjectResourcePolicy, weak=False,
                          dispatch_uid="vfolders.push_project_policy_limits")
