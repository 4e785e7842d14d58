"""What the sessions app asks of apps above it, answered by callables they register.

The sessions app never imports the app proxy; the app proxy registers its
answers in its ``AppConfig.ready()``:

* ``form_targets()``: the origins a session page may submit forms to (the app
  proxy's setup links), for the page's CSP ``form-action``.
"""
from __future__ import annotations

from collections.abc import Callable

_form_targets: list[Callable[[], list[str]]] = []


def register_form_targets(provider: Callable[[], list[str]]) -> None:
    if provider not in _form_targets:
        _form_targets.append(provider)


def form_targets() -> list[str]:
    """Every registered provider's origins (none when no provider is registered)."""
    return [target for provider in _form_targets for target in provider()]
