"""Django settings.  Every value that a deployment may change comes from
``backendai.config`` (environment variables with embedded defaults)."""
from __future__ import annotations

import os
import sys

import dj_database_url

from backendai import config as _config

try:
    CONFIG = _config.load()
except _config.ConfigError as exc:  # stop start-up naming the variable
    sys.stderr.write(f"{exc}\n")
    raise SystemExit(2) from None

BASE_DIR = _config.BASE_DIR
DATA_DIR = CONFIG.data_dir
SECRET_KEY = CONFIG.secret_key
DEBUG = CONFIG.debug
ALLOWED_HOSTS = CONFIG.allowed_hosts
CSRF_TRUSTED_ORIGINS = CONFIG.csrf_trusted_origins
TRUSTED_PROXIES = CONFIG.trusted_proxies
BACKEND_DEFAULT_RATE_LIMIT = CONFIG.default_rate_limit
# A process writes a keypair's last use (last_used, num_queries) at most once per this many seconds,
# adding up the calls in between: one UPDATE of the same row per signed call serialised every client
# of a keypair on that row's lock and a WAL flush (accounts.services.keypairs.record_keypair_use)
KEYPAIR_USE_INTERVAL = CONFIG.keypair_use_interval
WEB_REQUEST_THREADS = CONFIG.web_request_threads  # requests running their Python at once per web process
REDIS_URL = CONFIG.redis_url
AGENT_HEARTBEAT_TIMEOUT = CONFIG.agent_heartbeat_timeout
AGENT_LOST_GRACE = CONFIG.agent_lost_grace
AGENT_SYNC_INTERVAL = CONFIG.agent_sync_interval
AGENT_SYNC_MAX_WAIT = CONFIG.agent_sync_max_wait
# Where a process without the agent links (the Celery worker) relays hints in the embedded mode (backendai.hints)
INTERNAL_WEB_URL = CONFIG.internal_web_url
SESSION_CREATE_MAX_WAIT = CONFIG.session_create_max_wait
IDLE_NETWORK_TIMEOUT = CONFIG.idle_network_timeout
IDLE_UTILIZATION_WINDOW = CONFIG.idle_utilization_window
IDLE_UTILIZATION_THRESHOLDS = CONFIG.idle_utilization_thresholds
METRICS_LISTEN = CONFIG.metrics_listen  # (host, port) of manage.py serve_metrics
METRICS_ADVERTISE = CONFIG.metrics_advertise  # (host, port) the service discovery lists for it (None: METRICS_LISTEN)
METRICS_PUBLIC = CONFIG.metrics_public  # the public port serves /metrics too

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "channels",
    "django_celery_beat",
    "django_prometheus",
    "axes",
    "csp",
    "backendai",
    "accounts",
    "agents",
    "sessions.apps.SessionsConfig",
    "vfolders",
    "appproxy",
    "serving",
]

MIDDLEWARE = [
    "backendai.requestlog.RequestLogMiddleware",  # first: the request id and context, one access-log line
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "backendai.api.metrics_middleware.APIMetricsMiddleware",  # backendai_api_request_* (route patterns)
    "django.middleware.security.SecurityMiddleware",
    "backendai.middleware_security.BrowserHardeningMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "backendai.api.middleware.BackendAIAPIMiddleware",
    "backendai.api.unavailable.DatabaseUnavailableMiddleware",  # a view with no database connection: 503
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "backendai.auditlog.AuditRefusalMiddleware",  # 4xx answers to state-changing requests into the audit log
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.UserPreferencesMiddleware",  # web UI: "must change password", language, time zone
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout flagged by axes into our 429 page / problem
]

ROOT_URLCONF = "backendai.urls"
WSGI_APPLICATION = "backendai.wsgi.application"
ASGI_APPLICATION = "backendai.asgi.application"
APPEND_SLASH = False  # Backend.AI paths have no trailing slash

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "backendai.context_processors.product",
            ],
        },
    },
    {
        # the hot fragments rendered once per row of a long, polled list (backendai/jinja.py)
        "NAME": "jinja2",
        "BACKEND": "backendai.jinja.Jinja2",
        "DIRS": [BASE_DIR / "templates" / "jinja2"],
        "APP_DIRS": False,
        "OPTIONS": {"environment": "backendai.jinja.environment", "autoescape": True},
    },
]

DATABASES = {"default": dj_database_url.parse(CONFIG.database_url, conn_max_age=0)}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # One connection pool per process (daphne, each Celery worker process, beat), at most
    # DB_POOL_MAX_SIZE connections each; a request that waits DB_POOL_TIMEOUT seconds for one is
    # answered 503 (backendai/api/unavailable.py).  No persistent per-thread connections: under
    # ASGI every request runs in a fresh thread, and an idle connection left with a dead thread is
    # never reused.  DB_POOL_MAX_SIZE=0: no pool, one connection per thread kept DB_CONN_MAX_AGE
    # seconds (0: closed after each request).  Sizing: docs/production.md.
    _db = DATABASES["default"]
    _db["CONN_HEALTH_CHECKS"] = True  # a connection killed by a database restart is replaced, not served
    _db["DISABLE_SERVER_SIDE_CURSORS"] = CONFIG.db_disable_server_side_cursors  # pgbouncer, transaction mode
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
    if CONFIG.db_pool_max_size:
        _db["CONN_MAX_AGE"] = 0  # Django's pool requires it: "closing" returns the connection to the pool
        _db["OPTIONS"]["pool"] = {"min_size": CONFIG.db_pool_min_size, "max_size": CONFIG.db_pool_max_size,
                                  "timeout": CONFIG.db_pool_timeout, "name": "backendai"}
    else:
        _db["CONN_MAX_AGE"] = CONFIG.db_conn_max_age
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Several processes share the file in the embedded mode (web, worker): WAL lets
    # readers run beside a writer, IMMEDIATE transactions take the write lock up
    # front so two writers wait for each other instead of failing at upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=30, transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
    # a file, not memory, so that test runs can share it with real server processes
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every Redis connection (channel layer, cache, rate limiter) reads with REDIS_SOCKET_TIMEOUT: redis-py's
# own default (5 s) equals the channel layer's blocking receive, so an idle websocket's receive timed out and
# its consumer died (docs/agent-protocol.md, "Keeping links alive").  TCP keepalive and a PING before a
# command on a connection idle for half that time find dead connections before a request does.
REDIS_SOCKET_TIMEOUT = CONFIG.redis_socket_timeout
REDIS_CONNECTION_OPTIONS = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": max(1, REDIS_SOCKET_TIMEOUT // 2),
}
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": dict(REDIS_CONNECTION_OPTIONS)}}
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                    "CONFIG": {"hosts": [{"address": REDIS_URL, **REDIS_CONNECTION_OPTIONS}]}}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_USER_MODEL = "accounts.User"
# axes first: it refuses a locked-out account or address before any password is checked
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "accounts.backends.EmailBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "ui:login"
LOGIN_REDIRECT_URL = "ui:dashboard"
LOGOUT_REDIRECT_URL = "ui:login"

LANGUAGE_CODE = "en-us"
# what users may pick as their web UI language (accounts.services.preferences); Django's own texts follow
LANGUAGES = [("en", "English"), ("de", "Deutsch"), ("es", "Español"), ("fr", "Français"), ("ja", "日本語"),
             ("ko", "한국어"), ("zh-hans", "简体中文")]
TIME_ZONE = CONFIG.time_zone
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve straight from the apps in the embedded mode, no collectstatic needed

REST_FRAMEWORK = {
    # a signature; under /func/ (session mode) also the login cookie (accounts.api.websession)
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.api.authentication.HMACAuthentication",
                                       "accounts.api.websession.WebSessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["backendai.api.parsers.HardenedJSONParser", "backendai.api.parsers.TextAsJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "backendai.api.parsers.JSONOnlyNegotiation",
    "EXCEPTION_HANDLER": "backendai.api.exception_handler.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Backend.AI-compatible manager API",
    "DESCRIPTION": "REST API of the control panel. Requests are signed with HMAC-SHA256 as the Backend.AI manager API v8.",
    "VERSION": "v8.20240915",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["backendai.api.schema.drop_session_mode_copies",
                            "backendai.api.schema.drop_internal_endpoints"],  # internal: /spec/internal/
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "BackendAISignature": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "BackendAI signMethod=HMAC-SHA256, credential=<ACCESS_KEY>:<SIGNATURE>",
            }
        }
    },
    "SECURITY": [{"BackendAISignature": []}],
}

# Celery: Redis in production; in the embedded mode kombu's SQLAlchemy transport on a
# SQLite file under the data directory (backendai/broker.py: transactional, so a reader
# never sees half a message; an undecodable row is logged and dropped), so a local worker
# needs no service.  That transport has no fanout: no remote control (nor gossip and
# mingle, which Celery turns off by itself for it) in the embedded mode.
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # kombu blocks 1 s per BRPOP; a read timeout lets a publish on a half-open connection fail, not hang
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": REDIS_SOCKET_TIMEOUT, "socket_connect_timeout": 5,
                                       "socket_keepalive": True}
else:
    CELERY_BROKER_URL = f"sqlite:///{DATA_DIR / 'broker.sqlite3'}"
    CELERY_BROKER_TRANSPORT = "backendai.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
# django-celery-beat's scheduler, retrying its database and recording each tick (backendai/beat.py)
CELERY_BEAT_SCHEDULER = "backendai.beat:ResilientDatabaseScheduler"
# beat older than this is unhealthy (/readyz, manage.py healthcheck, the admin's cluster overview)
BEAT_MAX_AGE = CONFIG.beat_max_age
# audit log entries older than this many days are pruned hourly (0: keep them forever)
AUDIT_RETENTION_DAYS = CONFIG.audit_retention_days
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "agents.mark_lost": {"task": "agents.tasks.mark_lost_agents", "schedule": 5.0},
    "sessions.schedule_pending": {"task": "sessions.tasks.schedule_pending", "schedule": 2.0},
    "sessions.schedule_all": {"task": "sessions.tasks.schedule_all", "schedule": 30.0},
    "sessions.reconcile": {"task": "sessions.tasks.reconcile", "schedule": 10.0},
    "sessions.idle_check": {"task": "sessions.tasks.idle_check", "schedule": 15.0},
    "sessions.deliver_callbacks": {"task": "sessions.tasks.deliver_callbacks", "schedule": 3.0},
    "appproxy.mark_lost": {"task": "appproxy.tasks.mark_lost_workers", "schedule": 15.0},
    "appproxy.sweep": {"task": "appproxy.tasks.sweep_circuits", "schedule": 15.0},
    "serving.autoscale": {"task": "serving.tasks.autoscale_endpoints", "schedule": 5.0},
    "vfolders.reconcile": {"task": "vfolders.tasks.reconcile", "schedule": 300.0},
    "vfolders.measure_quota_scopes": {"task": "vfolders.tasks.measure_quota_scopes", "schedule": 3600.0},
    "vfolders.check_storage_proxies": {"task": "vfolders.tasks.check_storage_proxies", "schedule": 10.0},
    "serving.reconcile": {"task": "serving.tasks.reconcile_endpoints", "schedule": 2.0},
    "serving.prune_events": {"task": "serving.tasks.prune_events", "schedule": 3600.0},
    "backendai.reconcile_background_tasks": {"task": "backendai.tasks.reconcile_background_tasks", "schedule": 60.0},
    "backendai.prune_audit_log": {"task": "backendai.tasks.prune_audit_log", "schedule": 3600.0},
}
VFOLDER_ROOT = CONFIG.vfolder_root or DATA_DIR / "vfroot"
VFOLDER_TOKEN_LIFETIME = CONFIG.vfolder_token_lifetime
VFOLDER_MAX_UPLOAD_SIZE = CONFIG.vfolder_max_upload_size
VFOLDER_CLONE_TIMEOUT = CONFIG.vfolder_clone_timeout
# The embedded storage proxy "local" (vfolders.services.proxies.ensure_default_proxy; docs/vfolders.md)
STORAGE_PROXY_MANAGER_URL = CONFIG.storage_proxy_manager_url
STORAGE_PROXY_CLIENT_URL = CONFIG.storage_proxy_client_url
STORAGE_PROXY_SECRET = CONFIG.storage_proxy_secret
STORAGE_PROXY_TIMEOUT = CONFIG.storage_proxy_timeout
STORAGE_PROXY_LOST_TIMEOUT = CONFIG.storage_proxy_lost_timeout
APPPROXY_WORKER_HEARTBEAT_TIMEOUT = CONFIG.appproxy_worker_heartbeat_timeout
APPPROXY_CIRCUIT_IDLE_TIMEOUT = CONFIG.appproxy_circuit_idle_timeout
APPPROXY_SETUP_TOKEN_TTL = CONFIG.appproxy_setup_token_ttl
APPPROXY_PERMIT_TTL = CONFIG.appproxy_permit_ttl
# The coordinator as its own process (docs/appproxy.md, "The coordinator on its own"): empty URL: in-process
APPPROXY_COORDINATOR_URL = CONFIG.appproxy_coordinator_url
APPPROXY_COORDINATOR_SECRET = CONFIG.appproxy_coordinator_secret
APPPROXY_COORDINATOR_TIMEOUT = CONFIG.appproxy_coordinator_timeout
SESSION_SCHEDULED_TIMEOUT = CONFIG.session_scheduled_timeout
SESSION_PREPARING_TIMEOUT = CONFIG.session_preparing_timeout
SESSION_TERMINATING_TIMEOUT = CONFIG.session_terminating_timeout

# --- security hardening (docs/security.md) ---------------------------------------------------
# Largest API request body (JSON); file uploads take their own streamed path.
API_MAX_BODY = CONFIG.api_max_body
SESSION_UPLOAD_MAX_SIZE = CONFIG.session_upload_max_size
SESSION_UPLOAD_MAX_FILES = CONFIG.session_upload_max_files
DATA_UPLOAD_MAX_MEMORY_SIZE = CONFIG.api_max_body
API_MAX_JSON_DEPTH = 32
# Callback (webhook) targets: empty means any address but loopback and link-local.
CALLBACK_ALLOWED_NETWORKS = CONFIG.callback_allowed_networks
# A failed delivery is retried after BASE seconds, doubling up to CAP; given up after MAX_ATTEMPTS.
CALLBACK_MAX_ATTEMPTS = CONFIG.callback_max_attempts
CALLBACK_BACKOFF_BASE = CONFIG.callback_backoff_base
CALLBACK_BACKOFF_CAP = CONFIG.callback_backoff_cap
SECURE_COOKIES = CONFIG.secure_cookies
LOGIN_FAILURE_LIMIT = CONFIG.login_failure_limit
LOGIN_LOCKOUT_SECONDS = CONFIG.login_lockout_seconds
# GraphQL cost limits
GRAPHQL_MAX_DEPTH = 10
GRAPHQL_MAX_ALIASES = 20
GRAPHQL_MAX_LIST_SIZE = 1000

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# --- browser hardening (docs/security.md, "Browser hardening and login lockout") --------------
# Cookies are also marked Secure per request when it came over TLS (BrowserHardeningMiddleware).
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
CSRF_FAILURE_VIEW = "backendai.urls.csrf_failure"  # templates/403_csrf.html; problem+json on the API
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
from csp.constants import NONCE as _CSP_NONCE, NONE as _CSP_NONE, SELF as _CSP_SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [_CSP_SELF],
        "script-src": [_CSP_SELF],
        # the nonce appears only on pages that ask for it (the terminal: xterm.js adds <style> elements)
        "style-src": [_CSP_SELF, _CSP_NONCE],
        "img-src": [_CSP_SELF, "data:"],
        "font-src": [_CSP_SELF],
        "connect-src": [_CSP_SELF],  # 'self' covers ws:/wss: to the same host (CSP level 3)
        "frame-ancestors": [_CSP_NONE],
        "form-action": [_CSP_SELF],
        "base-uri": [_CSP_NONE],
        "object-src": [_CSP_NONE],
    },
}

# Login lockout (django-axes, database handler): LOGIN_FAILURE_LIMIT failures per account OR per
# client address lock that account / address for LOGIN_LOCKOUT_SECONDS.
AXES_ENABLED = True
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
from datetime import timedelta as _timedelta  # noqa: E402

AXES_COOLOFF_TIME = _timedelta(seconds=LOGIN_LOCKOUT_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.lockout.login_name"
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = False  # a success must not wipe the failures of other accounts from that address
AXES_SENSITIVE_PARAMETERS = []  # log the account and the address of each failure (never the password)

# every record carries the request context (request id, user, session/agent/kernel ids):
# backendai/logformat.py; LOG_FORMAT=json writes one JSON object per line
from backendai import logformat as _logformat  # noqa: E402

_logformat.install(CONFIG.log_format)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"()": "backendai.logformat.PlainFormatter"},
                   "json": {"()": "backendai.logformat.JsonFormatter"}},
    # beat's "Sending due task" and the worker's received/succeeded lines of the periodic tasks
    # are DEBUG (backendai/logfilters.py): the console keeps state changes, warnings and errors
    "filters": {"periodic_chatter": {"()": "backendai.logfilters.PeriodicChatter",
                                     "periodic_tasks": sorted({e["task"] for e in CELERY_BEAT_SCHEDULE.values()})}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": CONFIG.log_format,
                             "filters": ["periodic_chatter"]}},
    "root": {"handlers": ["console"], "level": CONFIG.log_level},
    "loggers": {"django.db.backends": {"level": "INFO"},
                # login failures and lockouts (with the client address) always reach the log
                "axes": {"level": "WARNING"},
                # one line per storage proxy call (the health check every 10 s) is noise; failures are
                # logged by vfolders.services.proxy
                "httpx": {"level": "WARNING"}},
}
if CONFIG.access_log_file is not None:  # the access log on its own (the embedded stack: <data-dir>/logs)
    # WatchedFileHandler: every process reopens the file once it was moved (logrotate without copytruncate,
    # the embedded stack's own rotation: backendai.stack.LogRotation)
    LOGGING["handlers"]["access_file"] = {"class": "logging.handlers.WatchedFileHandler",
                                          "filename": str(CONFIG.access_log_file),
                                          "formatter": CONFIG.log_format, "delay": True}
    LOGGING["loggers"]["backendai.access"] = {"handlers": ["access_file"], "level": "INFO", "propagate": False}
