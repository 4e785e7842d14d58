"""The problems the coordinator answers with (problem+json through ``backendai.api.errors``)."""
from __future__ import annotations

from backendai.api import errors


class WorkerNotAvailable(errors.BackendAIError):
    status_code = 503
    error_type = "worker-not-available"
    error_title = "No app proxy worker is available."


class SessionNotRunning(errors.BackendAIError):
    status_code = 409
    error_type = "invalid-session-state"
    error_title = "The session is not running."


class AppNotReady(errors.BackendAIError):
    status_code = 503
    error_type = "app-not-ready"
    error_title = "The app is not reachable yet."


class SetupTokenInvalid(errors.BackendAIError):
    status_code = 403
    error_type = "setup-token-invalid"
    error_title = "The app link is not valid."


class SetupTokenUsed(errors.BackendAIError):
    status_code = 410
    error_type = "setup-token-used"
    error_title = "The app link was already used."
