from datetime import UTC, datetime, time, timedelta

from django import forms
from django.utils import timezone

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
