"""App proxy coordinator: workers and circuits."""
from django.db import models  # noqa: F401
