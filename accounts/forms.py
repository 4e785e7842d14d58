from django import forms
from django.contrib.auth.forms import AuthenticationForm


class LoginForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}))
    error_messages = {
        "invalid_login": "Email or password is wrong, or the account is not active.",
        "inactive": "This account is not active.",
    }


class KeypairActionForm(forms.Form):
    access_key = forms.CharField(max_length=20)
    action = forms.ChoiceField(choices=[("activate", "activate"), ("deactivate", "deactivate"),
                                        ("regenerate", "regenerate")])
