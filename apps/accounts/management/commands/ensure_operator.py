"""Make sure an operator (staff superuser) exists; its password is generated once and kept in DATA_DIR.

The password is never printed: standard output of ``make run`` ends up in logs and terminals' scroll-back.
The command prints the username and the path of the file (mode 600, readable by root only) that holds it.
"""

import json
import os
import secrets
import stat
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

CREDENTIALS_FILE = "operator.json"


def read_or_create_credentials(path: Path) -> dict:
    """The operator's username and password from ``path``, written once (mode 600) when missing."""
    if path.exists():
        # An older or hand-made file may be readable by others: tighten it, it holds a password.
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        return json.loads(path.read_text())
    credentials = {"username": "operator", "password": secrets.token_urlsafe(18)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials, handle)
    return credentials


class Command(BaseCommand):
    help = "Create the operator account if missing and say where its password is kept (never the password)."

    def handle(self, *args, **options):
        path = settings.DATA_DIR / CREDENTIALS_FILE
        credentials = read_or_create_credentials(path)
        User = get_user_model()
        user = User.objects.filter(username=credentials["username"]).first()
        if user is None:
            User.objects.create_superuser(credentials["username"], "operator@localhost", credentials["password"])
        elif not user.check_password(credentials["password"]):
            # The file is the source of truth for the local operator account.
            user.set_password(credentials["password"])
            user.is_staff = user.is_superuser = True
            user.save()
        self.stdout.write(
            f"operator account: username={credentials['username']}; "
            f"its password is in {path} (readable by its owner only)"
        )
