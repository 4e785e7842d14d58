"""What outside accounts still points at an account object, before it is purged.

Deleting a user, project or domain row would cascade into other apps' rows (sessions,
folders, app-proxy circuits...) that accounts knows nothing about: their files, their
kernels.  So a purge is refused while such rows exist, naming them; the allowance rows of
many-to-many fields (a scaling group allowed to a domain, project or keypair) go with the
object, as Backend.AI's do, and so do Django's own rows (the admin's log entries)."""
from __future__ import annotations

from django.db import models


def _through_models(model) -> set:
    return {rel.through for rel in model._meta.related_objects if rel.many_to_many}


def blocking_references(obj) -> list[str]:
    """``["2 sessions", "1 vfolder"]``: rows of other apps that deleting ``obj`` would cascade into."""
    model = type(obj)
    through = _through_models(model)
    found = []
    for rel in model._meta.related_objects:
        if rel.many_to_many or rel.related_model in through:
            continue
        related = rel.related_model
        if related._meta.app_label == model._meta.app_label or rel.on_delete is not models.CASCADE:
            continue
        if related._meta.app_config.name.startswith("django."):  # the admin's log of a user's actions
            continue
        count = related._base_manager.filter(**{rel.field.name: obj}).count()
        if count:
            name = related._meta.verbose_name if count == 1 else related._meta.verbose_name_plural
            found.append(f"{count} {name}")
    return found
