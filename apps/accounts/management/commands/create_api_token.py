from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.accounts.models import ApiToken


class Command(BaseCommand):
    help = "Create USERNAME if missing and print a new API token for it as the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line")
        parser.add_argument("--staff", action="store_true", help="make the user an operator (staff)")
        parser.add_argument(
            "--expires-in-days", type=int, default=None, help="refuse the token after this many days (default: never)"
        )

    def handle(self, *args, username, name, staff=False, expires_in_days=None, **options):
        if expires_in_days is not None and not 1 <= expires_in_days <= 5 * 366:
            raise CommandError("--expires-in-days must be between 1 and 1830.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save()
            self.stderr.write(f"created user {username}")
        if staff and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        _token, key = ApiToken.issue(user, name, expires_at=expires_at)
        self.stdout.write(key)
