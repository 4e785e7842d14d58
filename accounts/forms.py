from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.validators import MaxLengthValidator

from accounts.services import preferences, profile


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


# --- the settings page (accounts.views.user_settings) ---------------------------------------------

class MainKeypairForm(forms.Form):
    section = forms.CharField(widget=forms.HiddenInput, initial="keypair")
    main_keypair = forms.ChoiceField(label="Main keypair", help_text=(
        "The keypair the web UI acts with. Its resource policy limits your sessions."))

    def __init__(self, *args, keypairs=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["main_keypair"].choices = [
            (k.access_key, f"{k.access_key} · policy {k.resource_policy_id}") for k in keypairs]


class OwnPasswordChangeForm(PasswordChangeForm):
    """Django's form (current password, new twice, the validators); the view stores the
    password through ``accounts.services.profile.set_password``, never ``save()``."""

    MAX_LENGTH = 256

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["old_password"].widget.attrs.pop("autofocus", None)
        for name in ("old_password", "new_password1", "new_password2"):
            self.fields[name].validators.append(MaxLengthValidator(self.MAX_LENGTH))
            self.fields[name].widget.attrs["maxlength"] = self.MAX_LENGTH


class SshKeyForm(forms.Form):
    section = forms.CharField(widget=forms.HiddenInput, initial="ssh")
    ssh_public_key = forms.CharField(
        label="SSH public key", required=False, max_length=profile.MAX_SSH_PUBLIC_KEY,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
        help_text="One OpenSSH public key (ssh-ed25519, ssh-rsa, ecdsa-sha2-…) that your sessions accept "
                  "for SSH. Empty: no key.")

    def clean_ssh_public_key(self):
        return profile.check_ssh_public_key(self.cleaned_data["ssh_public_key"])


class BootstrapScriptForm(forms.Form):
    section = forms.CharField(widget=forms.HiddenInput, initial="bootstrap")
    bootstrap_script = forms.CharField(
        label="Bootstrap script", required=False, max_length=profile.MAX_BOOTSTRAP_SCRIPT, strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="A shell script each of your new sessions runs once when it starts.")


class PreferencesForm(forms.Form):
    section = forms.CharField(widget=forms.HiddenInput, initial="preferences")
    default_preset = forms.ChoiceField(label="Default preset", required=False,
                                       help_text="The launcher starts with this preset.")
    default_resource_group = forms.ChoiceField(label="Default resource group", required=False,
                                               help_text="The launcher starts with this resource group.")
    language = forms.ChoiceField(label="Language")
    time_zone = forms.ChoiceField(label="Time zone", help_text="Times on these pages are shown in this zone.")

    def __init__(self, *args, presets=(), resource_groups=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["default_preset"].choices = [("", "No default")] + [(n, n) for n in presets]
        self.fields["default_resource_group"].choices = [("", "No default")] + [(n, n) for n in resource_groups]
        self.fields["language"].choices = preferences.language_choices()
        self.fields["time_zone"].choices = [(z, z) for z in preferences.time_zone_names()]
