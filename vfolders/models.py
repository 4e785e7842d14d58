"""Storage hosts, virtual folders, permissions and invitations."""
from django.db import models  # noqa: F401
