from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # imported here: an AppConfig module is imported before the models are ready
        from accounts import exports, services
        from accounts.models import UserManager
        from backendai.exports import registry

        UserManager.creator = staticmethod(services.create_user)
        # the users, keypairs and projects CSV reports (served by backendai.exports)
        registry.register(*exports.REPORTS)
