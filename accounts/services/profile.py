"""What users change of their own account on the web UI's settings page: the main keypair
(the one the web UI acts with, whose policy limits their sessions), the password, and the
main keypair's SSH public key and bootstrap script.

Each function checks its input first and raises a ``ValidationError`` naming the field;
a refused change writes nothing."""
from __future__ import annotations

import base64
import binascii
import logging
import struct

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Keypair, User
from backendai.actions import audited

log = logging.getLogger("accounts.services")

MAX_SSH_PUBLIC_KEY = 8192  # characters: a 16384-bit RSA key is about 2 800
MAX_BOOTSTRAP_SCRIPT = 16384  # characters
SSH_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)


def own_active_keypairs(user: User) -> QuerySet[Keypair]:
    """The keypairs the user may make their main one: their own active ones."""
    return Keypair.objects.filter(user=user, is_active=True).select_related("resource_policy").order_by("created_at")


@audited("user", "set-main-keypair", "access_key")
@transaction.atomic
def set_main_keypair(user: User, access_key: str) -> Keypair:
    keypair = own_active_keypairs(user).filter(pk=str(access_key)[:20]).first()
    if keypair is None:
        raise ValidationError({"main_keypair": "Pick one of your active keypairs."})
    User.objects.filter(pk=user.pk).update(main_keypair=keypair, modified_at=timezone.now())
    user.main_keypair = keypair
    log.info("user %s made keypair %s their main keypair", user.pk, keypair.pk)
    return keypair


@audited("user", "set-password", "user")
def set_password(user: User, new_password: str) -> None:
    """Store a new password (already checked by the form against the current one and Django's
    validators): ``password_changed_at`` moves, the "must change password" flag clears."""
    password_validation.validate_password(new_password, user)
    user.set_password(new_password)
    user.password_changed_at = timezone.now()
    user.need_password_change = False
    user.save(update_fields=["password", "password_changed_at", "need_password_change", "modified_at"])
    log.info("password changed for user %s (web UI)", user.pk)


def check_ssh_public_key(text: str) -> str:
    """One OpenSSH public key line (``type base64 [comment]``) of a known type whose blob
    names the same type; returns it stripped ("" clears the key)."""
    text = (text or "").strip()
    if not text:
        return ""
    if len(text) > MAX_SSH_PUBLIC_KEY:
        raise ValidationError(f"An SSH public key has at most {MAX_SSH_PUBLIC_KEY} characters.")
    if "\n" in text or "\r" in text:
        raise ValidationError("Give one key, on one line.")
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValidationError("Not an OpenSSH public key: it starts with its type (ssh-ed25519, ssh-rsa, "
                              "ecdsa-sha2-nistp256...), then the key in base64, then an optional comment.")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        raise ValidationError("The key part is not valid base64 of an OpenSSH key.") from None
    if named != parts[0]:
        raise ValidationError(f"The key says it is {named[:40]!r}, not {parts[0]!r}.")
    if not parts[0].startswith("sk-"):  # security-key types: the structure check above is all we can do
        try:
            serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
        except (ValueError, UnsupportedAlgorithm):
            raise ValidationError("The key does not parse as an OpenSSH public key.") from None
    return " ".join(parts)


@audited("keypair", "set-ssh-public-key", "keypair")
def set_ssh_public_key(keypair: Keypair, text: str) -> None:
    """The key sessions of this keypair accept for SSH; a key of the user's own replaces the
    generated pair (its private half no longer matches, so it goes)."""
    key = check_ssh_public_key(text)
    stored = key + "\n" if key else ""
    Keypair.objects.filter(pk=keypair.pk).update(ssh_public_key=stored, ssh_private_key="",
                                                  modified_at=timezone.now())
    keypair.ssh_public_key, keypair.ssh_private_key = stored, ""
    log.info("keypair %s has a new SSH public key (%s)", keypair.pk, key.split(" ", 1)[0] if key else "none")


@audited("keypair", "set-bootstrap-script", "keypair")
def set_bootstrap_script(keypair: Keypair, script: str) -> None:
    script = (script or "").replace("\r\n", "\n")
    if len(script) > MAX_BOOTSTRAP_SCRIPT:
        raise ValidationError({"bootstrap_script": f"A bootstrap script has at most {MAX_BOOTSTRAP_SCRIPT} characters."})
    Keypair.objects.filter(pk=keypair.pk).update(bootstrap_script=script, modified_at=timezone.now())
    keypair.bootstrap_script = script
    log.info("keypair %s has a new bootstrap script (%d characters)", keypair.pk, len(script))
