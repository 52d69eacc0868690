"""Make sure an operator (staff superuser) exists; its password is generated once and kept in DATA_DIR."""

import json
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the operator account if missing and print its credentials."

    def handle(self, *args, **options):
        path = settings.DATA_DIR / "operator.json"
        if path.exists():
            credentials = json.loads(path.read_text())
        else:
            credentials = {"username": "operator", "password": secrets.token_urlsafe(18)}
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(credentials, handle)
        User = get_user_model()
        user = User.objects.filter(username=credentials["username"]).first()
        if user is None:
            User.objects.create_superuser(credentials["username"], "operator@localhost", credentials["password"])
        elif not user.check_password(credentials["password"]):
            # The file is the source of truth for the local operator account.
            user.set_password(credentials["password"])
            user.is_staff = user.is_superuser = True
            user.save()
        self.stdout.write(f"operator account: username={credentials['username']} password={credentials['password']}")
