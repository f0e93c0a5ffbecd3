"""Switchboard settings, read from the environment (see README "Configuration").

Two stacks from one code base:
- embedded default (no services): SQLite, a filesystem Celery broker, a file cache and an
  in-process channel layer, all under SWITCHBOARD_DATA_DIR;
- production: DATABASE_URL (PostgreSQL) and REDIS_URL (broker, cache, channel layer).
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONE, SELF, UNSAFE_INLINE

from config.env import Env, EnvError
from config.secret_files import read_or_create
from tenancy.network import OutboundPolicy

env = Env()
BASE_DIR = Path(__file__).resolve().parent.parent

# Debug pages (tracebacks, settings, the URL map) only when asked for.
DEBUG = env.bool("SWITCHBOARD_DEBUG", False)
DATA_DIR = Path(env.str("SWITCHBOARD_DATA_DIR") or BASE_DIR / ".var")
DATA_DIR.mkdir(parents=True, exist_ok=True)
# Model servers started from here keep converted weights in the data directory.
MODEL_CACHE_DIR = DATA_DIR / "model-cache"

# Secrets: from the environment, or generated on first run into the data directory (0600)
# and reused (config/secret_files.py). None ships with the code.
_SECRETS_DIR = DATA_DIR / "secrets"
SECRET_KEY = env.str("SWITCHBOARD_SECRET_KEY") or read_or_create(_SECRETS_DIR / "django-secret-key")
# API key hashes are HMACs under this secret, kept apart from SECRET_KEY so rotating the
# session secret never invalidates every customer's API keys.
API_KEY_HMAC_SECRET = env.str("SWITCHBOARD_API_KEY_SECRET") or read_or_create(_SECRETS_DIR / "api-key-secret")
# External providers' API keys are encrypted at rest under keys derived from this secret.
# Several values, comma-separated, allow rotation: the first encrypts, all decrypt.
PROVIDER_KEY_SECRETS = env.list("SWITCHBOARD_PROVIDER_KEY_SECRETS", []) or [read_or_create(_SECRETS_DIR / "provider-key-secret")]
# The cluster agents' and the replicas' bearer tokens derive from this (deployments/internal_tokens.py).
INTERNAL_SECRET = env.str("SWITCHBOARD_INTERNAL_SECRET") or read_or_create(_SECRETS_DIR / "internal-secret")
API_KEY_ROTATION_GRACE_HOURS = env.int("SWITCHBOARD_KEY_ROTATION_GRACE_HOURS", 24, minimum=0, maximum=24 * 30)

ALLOWED_HOSTS = env.list("SWITCHBOARD_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("SWITCHBOARD_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "csp",
    "axes",
    "tenancy",
    "console",
    "deployments",
    "routing",
    "metering",
    "billing",
    "staff",
    "benchmarks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
AUTH_USER_MODEL = "console.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

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
                "console.context_processors.console_nav",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------------------

DATABASE_URL = env.url("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
REDIS_URL = env.url("REDIS_URL", ("redis", "rediss"))

# WAL lets the console, workers and agents read while one of them writes. Every SQLite
# transaction takes the write lock when it begins (IMMEDIATE) and waits up to 20 s for it:
# a deferred transaction that reads, then writes, cannot wait for the lock under WAL and
# fails at once with "database is locked". The same for a sqlite:/// DATABASE_URL.
_SQLITE_OPTIONS = {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "timeout": 20, "transaction_mode": "IMMEDIATE"}
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # Fail fast when the server is unreachable: the gateway then serves from its cache.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 3)
    elif DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        DATABASES["default"]["OPTIONS"] = {**_SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "switchboard.sqlite3"),
            "OPTIONS": dict(_SQLITE_OPTIONS),
            # A file, not :memory:, so the server processes that tests start share it.
            "TEST": {"NAME": DATA_DIR / "test-switchboard.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    # The ingester, the control plane and tenancy publish changes; live pages wait for them.
    LIVE_UPDATES_PUSHED = True
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
else:
    # A file cache is shared by every process on this machine, unlike local memory.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(DATA_DIR / "cache")}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # An in-memory layer reaches no other process: live pages poll once a second instead.
    LIVE_UPDATES_PUSHED = False
    _BROKER_DIR = DATA_DIR / "celery-broker"
    for _sub in ("queue", "processed", "control"):
        (_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    # kombu's filesystem transport with atomic writes (config/broker.py says why).
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # Broadcast (pidbox) exchanges; kombu's default is ./control in the working directory.
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }

CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_TASK_ALWAYS_EAGER = env.bool("SWITCHBOARD_CELERY_EAGER", False)
RECONCILE_INTERVAL_SECONDS = env.int("SWITCHBOARD_RECONCILE_INTERVAL", 5, minimum=1, maximum=600)
# A reconcile pass probes /health and scrapes /metrics of at most this many replicas of one
# cluster at a time (deployments.probes), all clusters side by side.
PROBE_CONCURRENCY_PER_CLUSTER = env.int("SWITCHBOARD_PROBE_CONCURRENCY_PER_CLUSTER", 16, minimum=1, maximum=1024)

# Gateway (routing/). A revoked key stops working on every process within the cache time;
# keys already seen keep working from the cache for the stale time if the database is down.
GATEWAY_KEY_CACHE_SECONDS = env.int("SWITCHBOARD_GATEWAY_KEY_CACHE_SECONDS", 2, minimum=0, maximum=60)
GATEWAY_KEY_STALE_SECONDS = env.int("SWITCHBOARD_GATEWAY_KEY_STALE_SECONDS", 300, minimum=0, maximum=86400)
# How long a request's spend reservation holds before it frees itself (a gateway that died
# with requests in flight): longer than any request should take.
SPEND_LEASE_SECONDS = env.int("SWITCHBOARD_SPEND_LEASE_SECONDS", 900, minimum=1, maximum=86400)
# At an organization's hard spend limit its deployments start no new replicas at once, and
# scale to zero after this grace (deployments.holds).
SPEND_LIMIT_GRACE_SECONDS = env.int("SWITCHBOARD_SPEND_LIMIT_GRACE_SECONDS", 900, minimum=0, maximum=7 * 86400)
GATEWAY_ROUTES_CACHE_SECONDS = env.int("SWITCHBOARD_GATEWAY_ROUTES_CACHE_SECONDS", 2, minimum=0, maximum=60)
# A rollout drains an old replica only once the new ones have been READY this long, so
# every gateway's cached snapshot has them before the old one stops taking requests.
ROLLOUT_HANDOVER_SECONDS = env.int("SWITCHBOARD_ROLLOUT_HANDOVER_SECONDS", GATEWAY_ROUTES_CACHE_SECONDS + 1, minimum=0, maximum=600)
GATEWAY_COLD_START_TIMEOUT_SECONDS = env.int("SWITCHBOARD_GATEWAY_COLD_START_TIMEOUT", 120, minimum=1, maximum=1800)
# /metrics answers only this bearer token (never a peer address: behind a proxy on the same
# host every caller is loopback); unset, it is generated into <data dir>/secrets/metrics-token.
GATEWAY_METRICS_TOKEN = env.str("SWITCHBOARD_METRICS_TOKEN") or read_or_create(_SECRETS_DIR / "metrics-token")
# Tenants' URLs (providers, alert webhooks) never reach internal addresses, in any mode
# (tenancy.network); the operator may list hosts, addresses or networks that they may reach
# (a provider on the operator's own network; the tests' and benchmarks' local backends).
OUTBOUND_ALLOWED_HOSTS = env.list("SWITCHBOARD_OUTBOUND_ALLOWED_HOSTS", [])
try:
    OUTBOUND_POLICY = OutboundPolicy.parse(OUTBOUND_ALLOWED_HOSTS)
except ValueError as error:
    raise EnvError(f"SWITCHBOARD_OUTBOUND_ALLOWED_HOSTS: {error}") from None
# One JSON line per /v1 request on stderr (ids, figures, never prompt or completion text).
GATEWAY_ACCESS_LOG = env.bool("SWITCHBOARD_GATEWAY_ACCESS_LOG", True)
CELERY_BEAT_SCHEDULE = {
    "reconcile-all": {"task": "deployments.tasks.reconcile_all", "schedule": float(RECONCILE_INTERVAL_SECONDS)},
    "analyse-canaries": {"task": "deployments.tasks.analyse_canaries", "schedule": float(RECONCILE_INTERVAL_SECONDS)},
    "billing-enforce-spend-limits": {"task": "billing.tasks.enforce_spend_limits", "schedule": 60.0},
    "billing-check-budgets": {"task": "billing.tasks.check_budgets", "schedule": 300.0},
    "billing-close-invoices": {"task": "billing.tasks.close_invoices", "schedule": 3600.0},
    "stripe-push-meter-events": {"task": "billing.tasks.push_meter_events", "schedule": 300.0},
    "stripe-reconcile": {"task": "billing.tasks.reconcile_stripe", "schedule": 3600.0},
    "stripe-suspend-overdue": {"task": "billing.tasks.suspend_overdue_organizations", "schedule": 900.0},
}

# --- Billing -------------------------------------------------------------------------------

# How many organizations on free credit one person may own (billing.accounts).
MAX_FREE_ORGANIZATIONS = env.int("SWITCHBOARD_MAX_FREE_ORGANIZATIONS", 2, minimum=0, maximum=1000)
# The free plan's usage included each month, in USD; past it the gateway answers 402.
try:
    FREE_PLAN_MONTHLY_CREDIT = Decimal(env.str("SWITCHBOARD_FREE_PLAN_MONTHLY_CREDIT", "5.00") or "0").quantize(Decimal("0.01"))
except InvalidOperation:
    raise EnvError("SWITCHBOARD_FREE_PLAN_MONTHLY_CREDIT must be an amount of dollars, such as 5.00.") from None
# Stripe: off (invoices internal only) while SWITCHBOARD_STRIPE_SECRET_KEY is empty.
STRIPE_SECRET_KEY = env.str("SWITCHBOARD_STRIPE_SECRET_KEY", "") or ""
if STRIPE_SECRET_KEY and not STRIPE_SECRET_KEY.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_")):
    raise EnvError("SWITCHBOARD_STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_test_, sk_live_, rk_test_, rk_live_...).")
STRIPE_WEBHOOK_SECRET = env.str("SWITCHBOARD_STRIPE_WEBHOOK_SECRET", "") or ""
if STRIPE_WEBHOOK_SECRET and not STRIPE_WEBHOOK_SECRET.startswith("whsec_"):
    raise EnvError("SWITCHBOARD_STRIPE_WEBHOOK_SECRET must be the endpoint's signing secret (whsec_...).")
STRIPE_API_BASE = env.url("SWITCHBOARD_STRIPE_API_BASE", ("http", "https"))
STRIPE_MAX_NETWORK_RETRIES = env.int("SWITCHBOARD_STRIPE_MAX_NETWORK_RETRIES", 2, minimum=0, maximum=10)
STRIPE_PAST_DUE_GRACE_DAYS = env.int("SWITCHBOARD_STRIPE_PAST_DUE_GRACE_DAYS", 7, minimum=0, maximum=90)

# --- Auth ----------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_COOKIE_HTTPONLY = True
# Throttled logins (django-axes): the fifth wrong password for one account from one address
# locks that pair out for 15 minutes (429, templates/registration/locked_out.html); a
# success clears the count. Attempts are kept in axes' tables: its cache handler refuses
# the embedded default's file cache, whose counters are not atomic across processes.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_CALLABLE = "tenancy.login_attempts.attempted_account"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_ENABLE_ADMIN = False
AXES_VERBOSE = False
# Password-reset emails: at most this many per address, and per client address, an hour.
PASSWORD_RESETS_PER_EMAIL_PER_HOUR = 3
PASSWORD_RESETS_PER_CLIENT_PER_HOUR = 10
# Scripts only from our own static files (no inline script, no eval), nothing embeds the
# console. Styles allow inline attributes: the charts and htmx set them.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
    }
}
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Served to the world behind a TLS-terminating proxy (set SWITCHBOARD_HTTPS=1): the proxy's
# X-Forwarded-Proto says the request was HTTPS, plain HTTP is redirected, cookies travel over
# HTTPS only and browsers are told to use nothing else for a year (HSTS). `up` on
# http://127.0.0.1 leaves it off; `manage.py check --deploy` passes with it on.
HTTPS = env.bool("SWITCHBOARD_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 365 * 24 * 3600
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- Email ---------------------------------------------------------------------------------

# Invitation and reset links are credentials: they never go to the server's log unless a
# developer asks (SWITCHBOARD_DEBUG=1). With SWITCHBOARD_EMAIL_HOST, mail goes out by SMTP;
# without it, each message is written to <data dir>/outbox/ (0700) for the operator.
EMAIL_HOST = env.str("SWITCHBOARD_EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env.int("SWITCHBOARD_EMAIL_PORT", 587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env.str("SWITCHBOARD_EMAIL_USER", "")
    EMAIL_HOST_PASSWORD = env.str("SWITCHBOARD_EMAIL_PASSWORD", "")
    EMAIL_USE_TLS = env.bool("SWITCHBOARD_EMAIL_USE_TLS", True)
    EMAIL_TIMEOUT = 10
elif DEBUG:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = DATA_DIR / "outbox"
    EMAIL_FILE_PATH.mkdir(mode=0o700, exist_ok=True)
DEFAULT_FROM_EMAIL = env.str("SWITCHBOARD_FROM_EMAIL", "Switchboard <no-reply@switchboard.local>")
PUBLIC_BASE_URL = env.str("SWITCHBOARD_PUBLIC_URL", "http://127.0.0.1:8000")

# --- Model registry ------------------------------------------------------------------------

# Tenants' uploaded model files (deployments/model_storage.py): a directory in the data dir on
# the embedded default; an S3-compatible bucket through django-storages when
# SWITCHBOARD_MODEL_STORAGE_URL=s3://bucket/prefix is set (credentials from the standard
# AWS_* variables; SWITCHBOARD_MODEL_STORAGE_ENDPOINT for MinIO, R2 and the like).
MODEL_STORAGE_URL = env.url("SWITCHBOARD_MODEL_STORAGE_URL", ("s3",))
if MODEL_STORAGE_URL:
    _model_bucket = urlsplit(MODEL_STORAGE_URL)
    _model_storage: dict[str, object] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _model_bucket.netloc,
            "location": _model_bucket.path.strip("/"),
            "endpoint_url": env.str("SWITCHBOARD_MODEL_STORAGE_ENDPOINT"),
            "file_overwrite": True,
            "default_acl": None,
        },
    }
else:
    _model_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(DATA_DIR / "models")}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "models": _model_storage,
}
# Limits on one upload: how many files, and their total size.
MODEL_UPLOAD_MAX_FILES = env.int("SWITCHBOARD_MODEL_UPLOAD_MAX_FILES", 64, minimum=1, maximum=10_000)
MODEL_UPLOAD_MAX_BYTES = env.int("SWITCHBOARD_MODEL_UPLOAD_MAX_BYTES", 20 * 1024**3, minimum=1024)
# Uploads an organization may have open at once: each may hold MODEL_UPLOAD_MAX_BYTES.
MODEL_UPLOADS_OPEN_PER_ORGANIZATION = env.int("SWITCHBOARD_MODEL_UPLOADS_OPEN_PER_ORGANIZATION", 3, minimum=1, maximum=100)
# An upload not completed within this many hours expires.
MODEL_UPLOAD_TTL_HOURS = env.int("SWITCHBOARD_MODEL_UPLOAD_TTL_HOURS", 24, minimum=1, maximum=24 * 30)

# --- Requests ------------------------------------------------------------------------------

# Bodies above this are refused with 413 by the ASGI layer before Django reads them.
MAX_REQUEST_BODY_BYTES = env.int("SWITCHBOARD_MAX_BODY_BYTES", 1_048_576, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenancy.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # JSON only: the interactive reference is the Swagger UI at /api/v1/docs/.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "tenancy.api.pagination.CreatedCursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "tenancy.api.errors.api_exception_handler",
    # OPTIONS answers with its Allow header only: DRF's describing metadata calls
    # get_object() on detail views, which ours do not provide (a 500 the fuzzer found);
    # the schema at /api/v1/schema/ describes every operation instead.
    "DEFAULT_METADATA_CLASS": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchboard management API",
    "DESCRIPTION": "Everything the console does, over HTTP. Authenticate with `Authorization: Bearer <API key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- i18n, static --------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise serves from the finders; it warns when this is missing
# Front-end libraries come from npm packages (package.json), never copied into the repo.
STATICFILES_DIRS = [
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/uplot", BASE_DIR / "node_modules" / "uplot" / "dist"),
    ("vendor/noble-hashes", BASE_DIR / "node_modules" / "@noble" / "hashes"),
]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
# WhiteNoise serves files through a sync iterator; under ASGI Django warns on each one.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.choice("SWITCHBOARD_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))},
    "loggers": {"django.request": {"level": "ERROR"}},
}
