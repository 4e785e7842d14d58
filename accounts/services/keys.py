"""Key material: access and secret keys, SSH keypairs, and the mask shown instead of a secret."""
from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

#: What every place that lists a secret (GraphQL ``secret_key``, the admin) shows instead of it.
#: A secret key is shown in clear only to its owner, once: in the answer that created or
#: regenerated it (and to the owner who logs in with their password, ``/auth/authorize``).
MASKED_SECRET = "********"


def generate_access_key() -> str:
    """``AKIA`` + base32 of 10 random bytes: always 20 chars of A-Z and 2-7."""
    return "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode("ascii")


def generate_secret_key() -> str:
    """40 url-safe base64 characters."""
    return secrets.token_urlsafe(30)


def generate_ssh_keypair() -> tuple[str, str]:
    """An Ed25519 pair: (OpenSSH public key, OpenSSH private key).  Ed25519 rather
    than Backend.AI's RSA-2048: as widely accepted today, and generated in microseconds."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return public.decode() + " work@backend.ai\n", private.decode()
