"""allauth hooks: sign-up can be closed by configuration (ACCOUNT_ALLOW_SIGNUP=false); look-alike usernames
are refused (``apps.accounts.usernames``)."""

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings

from apps.accounts import usernames


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return settings.ACCOUNT_ALLOW_SIGNUP

    def clean_username(self, username: str, shallow: bool = False) -> str:
        """allauth's checks, then one script per name and no name that reads as an existing one."""
        username = super().clean_username(username, shallow=shallow)
        usernames.check_one_script(username)
        if not shallow:
            usernames.check_not_like_existing(username)
        return username
