"""allauth hooks: sign-up can be closed by configuration (ACCOUNT_ALLOW_SIGNUP=false)."""

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return settings.ACCOUNT_ALLOW_SIGNUP
