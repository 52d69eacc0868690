"""Forms of the accounts pages: a new API token, and allauth's sign-up form without email enumeration."""

from datetime import UTC, datetime, time, timedelta

from allauth.account import forms as allauth_forms
from allauth.account.adapter import get_adapter
from allauth.account.app_settings import EmailVerificationMethod
from allauth.account.internal.flows.login import perform_login
from allauth.account.internal.flows.signup import complete_signup
from allauth.account.models import Login
from allauth.account.utils import filter_users_by_email
from django import forms
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.utils import timezone

MANDATORY = EmailVerificationMethod.MANDATORY

NEVER, CUSTOM = "never", "custom"
EXPIRY_CHOICES = [(NEVER, "Never"), ("30", "In 30 days"), ("90", "In 90 days"), (CUSTOM, "On a date I choose")]
MAX_EXPIRY_DAYS = 5 * 366


def expiry_for(choice: str, on=None, *, now=None) -> datetime | None:
    """When a token chosen with ``choice`` (never, a number of days, or custom with date ``on``) expires.

    A custom date means "usable through that day": the token expires at the end of it (midnight UTC).
    """
    now = now or timezone.now()
    if choice == NEVER:
        return None
    if choice == CUSTOM:
        return datetime.combine(on + timedelta(days=1), time.min, tzinfo=UTC)
    return now + timedelta(days=int(choice))


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        help_text='What the token is for, e.g. "laptop CLI" or "nightly benchmark".',
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "laptop CLI"}),
    )
    # Not required: a form posted without it (as before expiries existed) makes a token that never expires.
    expires = forms.ChoiceField(
        choices=EXPIRY_CHOICES,
        required=False,
        initial="90",
        label="Expires",
        help_text="After that the token is refused; create a new one then.",
    )
    expires_on = forms.DateField(
        required=False,
        label="Expiry date (UTC)",
        help_text="Only for “On a date I choose”: the token works through the end of that day.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_name(self):
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give the token a name.")
        return name

    def clean_expires(self):
        return self.cleaned_data["expires"] or NEVER

    def clean(self):
        cleaned = super().clean()
        choice, on = cleaned.get("expires"), cleaned.get("expires_on")
        if choice != CUSTOM:
            return cleaned
        today = timezone.now().astimezone(UTC).date()
        if on is None:
            self.add_error("expires_on", "Choose the date the token expires.")
        elif on < today:
            self.add_error("expires_on", "Choose today or a later date.")
        elif on > today + timedelta(days=MAX_EXPIRY_DAYS):
            self.add_error("expires_on", "Choose a date within five years, or “Never”.")
        return cleaned

    def expires_at(self) -> datetime | None:
        return expiry_for(self.cleaned_data["expires"], self.cleaned_data.get("expires_on"))


class SignupForm(allauth_forms.SignupForm):
    """allauth's sign-up form that never tells whether an email address is registered.

    Whatever the address, sign-up ends on the same "confirm your email" page: a new account gets the
    confirmation link (it is signed in once it follows it), and the owner of an address already
    registered gets an "account already exists" email instead of a second account. allauth does this
    itself only when verification is mandatory for every sign-in; here it holds for sign-up whenever
    mail is in use (``ACCOUNT_EMAIL_VERIFICATION`` optional or mandatory). With ``none`` (no mail),
    taken addresses are refused as before: there is no one to tell.
    """

    def _hides_taken_emails(self) -> bool:
        return settings.ACCOUNT_EMAIL_VERIFICATION != "none"

    def validate_unique_email(self, value):
        if not self._hides_taken_emails():
            return super().validate_unique_email(value)
        self.account_already_exists = bool(filter_users_by_email(value))
        return get_adapter().validate_unique_email(value)

    def try_save(self, request):
        if not self._hides_taken_emails():
            return super().try_save(request)
        if self.account_already_exists:
            # Hash the password anyway, so both answers take as long as each other.
            make_password(self.cleaned_data.get("password1"))
            email = self.cleaned_data["email"]
            return None, perform_login(
                request, Login(user=None, email=email, signup=True, email_verification=MANDATORY)
            )
        user = self.save(request)
        return user, complete_signup(request, user=user, email_verification=MANDATORY)
