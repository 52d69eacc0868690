from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apps.accounts.models import ApiToken


class Command(BaseCommand):
    help = "Create USERNAME if missing and print a new API token for it as the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line")
        parser.add_argument("--staff", action="store_true", help="make the user an operator (staff)")

    def handle(self, *args, username, name, staff=False, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save()
            self.stderr.write(f"created user {username}")
        if staff and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        _token, key = ApiToken.issue(user, name)
        self.stdout.write(key)
