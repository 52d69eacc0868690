from django import forms


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        help_text='What the token is for, e.g. "laptop CLI" or "nightly benchmark".',
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "laptop CLI"}),
    )

    def clean_name(self):
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give the token a name.")
        return name
