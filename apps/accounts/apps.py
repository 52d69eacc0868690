from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Accounts and access"

    def ready(self):
        from apps.accounts import schema, signals  # noqa: F401 (connects the handlers, registers the scheme)
        from apps.accounts.roles import OPERATOR_PERMISSIONS, sync_operator_permissions

        labels = {target.split(".")[0] for target in OPERATOR_PERMISSIONS}

        def after_migrate(sender, **kwargs):
            # Each app's permissions are created in its own post_migrate; grant them right after.
            if sender.label in labels:
                sync_operator_permissions(sender, **kwargs)

        post_migrate.connect(after_migrate, dispatch_uid="accounts_sync_operator_permissions", weak=False)
