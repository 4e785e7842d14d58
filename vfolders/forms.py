"""Forms of the folder web UI.  They only shape input; ``vfolders.services`` decides."""
from django import forms

from storageproxy import names
from vfolders.models import UsageMode, VFolderPermission
from vfolders.services import MAX_EMAILS

#: Permissions spelled out in the choices (the code in brackets, as the API and the CLI name it).
PERMISSION_CHOICES = [
    (VFolderPermission.READ_ONLY.value, "read only (ro)"),
    (VFolderPermission.READ_WRITE.value, "read-write (rw)"),
    (VFolderPermission.RW_DELETE.value, "read-write-delete (wd)"),
]


def folder_name_validator(value):
    """``storageproxy.names.check_folder_name`` as a form validator (message beside the field)."""
    try:
        names.check_folder_name(value)
    except names.InvalidName as exc:
        raise forms.ValidationError(str(exc).partition(": ")[2] or str(exc)) from None


class CreateFolderForm(forms.Form):
    name = forms.CharField(max_length=names.FOLDER_NAME_MAX_CHARS, strip=False, validators=[folder_name_validator],
                           widget=forms.TextInput(attrs={"autocomplete": "off"}))
    host = forms.ChoiceField(label="Storage host")
    project = forms.ChoiceField(label="Owner", required=False)
    usage_mode = forms.ChoiceField(choices=UsageMode.choices, initial=UsageMode.GENERAL)
    permission = forms.ChoiceField(choices=PERMISSION_CHOICES, initial=VFolderPermission.READ_WRITE,
                                   help_text="What project members may do (project folders)")
    cloneable = forms.BooleanField(required=False)

    def __init__(self, *args, hosts=(), default_host=None, projects=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["host"].choices = [(h, h) for h in hosts]
        if default_host:
            self.fields["host"].initial = default_host
        self.fields["project"].choices = [("", "Me (a personal folder)")] + [
            (str(p.pk), f"Project {p.name}") for p in projects]


class InviteForm(forms.Form):
    emails = forms.CharField(max_length=4000, help_text="Emails, separated by commas or spaces",
                             widget=forms.TextInput(attrs={"autocomplete": "off", "list": "project-members"}))
    permission = forms.ChoiceField(choices=PERMISSION_CHOICES, initial=VFolderPermission.READ_WRITE)

    def clean_emails(self):
        emails = [e for e in self.cleaned_data["emails"].replace(",", " ").split() if e]
        if not emails:
            raise forms.ValidationError("Enter at least one email.")
        if len(emails) > MAX_EMAILS:
            raise forms.ValidationError(f"At most {MAX_EMAILS} emails at once.")
        too_long = [e for e in emails if len(e) > 254]
        if too_long:
            raise forms.ValidationError("An email has at most 254 characters.")
        return list(dict.fromkeys(emails))
