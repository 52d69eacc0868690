"""Crucible settings, read from the environment (see README, "Configuration").

Read top to bottom: paths and mode, secrets, services, Django, apps, sandbox limits.
A local file ``$CRUCIBLE_DATA_DIR/local.env`` (written once by ``make run``/``make test``)
supplies values not set in the real environment, so ``manage.py`` works by hand too.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from crucible.env import envbool, envchoice, envfloat, envhosts, envint, envlist, envrate, envstr
from crucible.local_env import load_local_env
from crucible.social import social_providers

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("CRUCIBLE_DATA_DIR", str(BASE_DIR / "data")))
load_local_env(DATA_DIR / "local.env")

# --- Mode and secrets -------------------------------------------------------------------
CRUCIBLE_ENV = envchoice("CRUCIBLE_ENV", "production", ["production", "development", "test"])
DEBUG = envbool("DEBUG", False)
SECRET_KEY = envstr("SECRET_KEY", None)
if not SECRET_KEY:
    if CRUCIBLE_ENV == "production":
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when CRUCIBLE_ENV=production.")
    SECRET_KEY = "insecure-development-key-" + "x" * 40
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])
# Name of this installation on a shared Docker engine: containers carry it as a label,
# and the reconciler only removes containers with its own instance label.
CRUCIBLE_INSTANCE = envstr("CRUCIBLE_INSTANCE", "crucible")
if CRUCIBLE_ENV == "test":
    CRUCIBLE_INSTANCE += "-test-" + os.environ.get("PYTEST_XDIST_WORKER", "main") + f"-{os.getpid()}"

# --- Services ---------------------------------------------------------------------------
DATABASE_URL = envstr("DATABASE_URL", "postgres://crucible@127.0.0.1:5432/crucible")
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
if CRUCIBLE_ENV == "test":
    # Tests never share a Redis database with a running `make run`, and parallel test processes
    # (pytest-xdist gw0, gw1, …) each get their own, so one's burst worker never takes another's jobs.
    from crucible.test_isolation import offset_redis_db

    # TEST_REDIS_DB_BASE moves a whole suite to other databases, so two suites can run side by side.
    REDIS_URL = offset_redis_db(
        REDIS_URL,
        envint("TEST_REDIS_DB_BASE", 1, minimum=1, maximum=15)
        + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0),
    )
DOCKER_HOST = envstr("DOCKER_HOST", "unix:///var/run/docker.sock")


def _database(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(f"DATABASE_URL must start with postgres://, not {parsed.scheme or 'nothing'}://.")
    options: dict = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    pool_max = envint("DATABASE_POOL_MAX", 0, minimum=0, maximum=100)
    if pool_max:
        # The web server's processes (``crucible/asgi.py`` sets it): Daphne runs each request's view
        # on a thread of a pool, so a connection per request was opened (about 9 ms) and closed.
        # Pooled, a request borrows an open one (checked: ``CONN_HEALTH_CHECKS``) and gives it back.
        options["pool"] = {"min_size": min(2, pool_max), "max_size": pool_max, "max_idle": 60, "timeout": 10}
        options.setdefault("application_name", "crucible-web")  # what pg_stat_activity shows for them
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "crucible",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": options.pop("host", parsed.hostname or ""),
        "PORT": str(parsed.port or ""),
        "OPTIONS": options,
        # 0: close at the end of each request. Under Daphne (ASGI) requests run in a pool of
        # threads, and persistent per-thread connections pile up until PostgreSQL refuses more
        # (seen under the 20-client load test). Jobs and sockets keep theirs for their lifetime.
        # A pooled connection is given back instead (Django refuses both at once).
        "CONN_MAX_AGE": 0 if pool_max else envint("DATABASE_CONN_MAX_AGE", 0, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": envstr("DATABASE_TEST_NAME", None)},
    }


DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600} for name in ("high", "default", "low")}
RQ = {"COMMIT_MODE": "auto"}

# How live events reach the WebSocket consumers (crucible/publishing.py, the apps' publishers):
# - "pubsub" (channels_redis.pubsub): a group message is one Redis PUBLISH; each Daphne process
#   subscribed to the group gets it once and hands it to its consumers in memory, each waiting on a
#   queue of its own. Nothing is kept for a process that is not subscribed at that moment.
# - "core" (channels_redis.core): a group message is pushed to a Redis sorted set per Daphne process
#   (once per process, holding at most ``capacity`` messages for ``expiry`` s), and every consumer of
#   the process takes turns popping it under one lock: with a thousand viewers in one process that
#   turn-taking, not Redis, was most of the process's time (README, Benchmarks).
# Either way a stream that loses an event finds its chunks and its end in the database (the replay on
# connect, the stored marks, and every WEBSOCKET_HEARTBEAT_S): see apps/evaluations/consumers.py.
CHANNEL_LAYER = envchoice("CHANNEL_LAYER", "pubsub", ["pubsub", "core"])
# The core layer waits for messages with a blocking read of 5 s (BZPOPMIN). The socket timeout must
# stay well above it: redis-py's default (also 5 s) times that read out on every idle connection,
# which then closes with 1011.
CHANNEL_LAYER_SOCKET_TIMEOUT_S = 30
_CHANNEL_LAYER_HOST = {
    "address": REDIS_URL,
    "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT_S,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
}
# Pub/sub channels are not per Redis database as keys are: the prefix names the database, so a test
# process (or a second checkout) on another database never hears this one's groups.
_CHANNEL_LAYER_PREFIX = f"asgi.db{urlparse(REDIS_URL).path.lstrip('/') or 0}."
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "crucible.channel_layer.PromptPubSubChannelLayer",  # channels_redis's, heard at once
        "CONFIG": {"hosts": [_CHANNEL_LAYER_HOST], "prefix": _CHANNEL_LAYER_PREFIX},
    }
    if CHANNEL_LAYER == "pubsub"
    else {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_CHANNEL_LAYER_HOST], "capacity": 5000, "expiry": 60},
    }
}
# --- WebSockets -------------------------------------------------------------------------
# Open WebSocket connections per user, counted across every Daphne process (crucible/ws_limits.py);
# one more is closed with 4429.
WEBSOCKET_MAX_PER_USER = envint("WEBSOCKET_MAX_PER_USER", 20, minimum=1)
# Every connection renews its slot and re-reads its stream's state this often; a slot whose Daphne
# died is free again after three missed heartbeats. (Daphne itself pings idle clients every 20 s.)
WEBSOCKET_HEARTBEAT_S = envfloat("WEBSOCKET_HEARTBEAT_S", 10.0, minimum=0.5, maximum=300.0)
# Threads per Daphne process for the consumers' database calls, each keeping its PostgreSQL
# connection between calls (crucible/ws_db.py): also the most connections those calls hold.
WEBSOCKET_DB_THREADS = envint("WEBSOCKET_DB_THREADS", 4, minimum=1, maximum=64)
# A web server process freezes what survives its collector's full passes, so the long-lived viewers'
# connections are not walked again every few seconds, and thaws them all this often so the cycles
# that died frozen are collected (crucible/web_gc.py); 0 freezes only what is loaded at start-up.
WEB_GC_THAW_S = envfloat("WEB_GC_THAW_S", 600.0, minimum=0.0, maximum=86400.0)

# --- Django -----------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    # Lowest layer first (see README, "Layout"): an app imports only apps listed before it.
    "apps.sandboxing",
    "apps.audit",
    "apps.accounts",
    "apps.monitoring",
    "apps.evaluations",
    "apps.sessions",
    "apps.tasks",
    "apps.console",
]
# GitHub, Google, OpenID Connect sign-in: only the providers whose *_CLIENT_ID/_SECRET are set.
_SOCIAL_APPS, SOCIALACCOUNT_PROVIDERS = social_providers()
INSTALLED_APPS += _SOCIAL_APPS

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "crucible.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "crucible.middleware.RefuseNulMiddleware",  # last: its error page needs request.user
]

ROOT_URLCONF = "crucible.urls"
ASGI_APPLICATION = "crucible.asgi.application"
WSGI_APPLICATION = "crucible.wsgi.application"
SITE_ID = 1

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
                "apps.console.context_processors.alert_badge",
            ],
            # Formatting filters every page uses (durations, binary sizes, JSON), without {% load %}.
            "builtins": ["crucible.formatting"],
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/"
ACCOUNT_EMAIL_VERIFICATION = envchoice("ACCOUNT_EMAIL_VERIFICATION", "optional", ["none", "optional", "mandatory"])
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_ADAPTER = "apps.accounts.adapter.AccountAdapter"
# Sign-up answers the same whether or not the email address is registered (apps/accounts/forms.py).
ACCOUNT_FORMS = {"signup": "apps.accounts.forms.SignupForm"}
# So a new account is signed in when its confirmation link is followed in the browser that signed up.
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_ALLOW_SIGNUP = envbool("ACCOUNT_ALLOW_SIGNUP", True)
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Crucible] "
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # never link a provider's email to an existing account by itself
SOCIALACCOUNT_LOGIN_ON_GET = False  # a provider sign-in starts with a POST (CSRF-protected)
# allauth throttles all sign-in and sign-up attempts per address (counted in Redis through the cache).
# Failed sign-ins are counted by apps.accounts.throttle instead, on every path (pages, admin, API tokens),
# so allauth's own per-account lock-out, which also locked the owner out, is off.
ACCOUNT_RATE_LIMITS = {
    "login": envstr("LOGIN_RATE_LIMIT", "30/m/ip"),
    "login_failed": None,
    "signup": envstr("SIGNUP_RATE_LIMIT", "20/m/ip"),
}
# Failed sign-ins (count/period): from one address (strict: that address is refused everywhere), for
# one account from one address, and for one account from anywhere (then only known addresses get in).
if "LOGIN_FAILED_RATE_LIMIT" in os.environ:
    raise ImproperlyConfigured(
        "LOGIN_FAILED_RATE_LIMIT is no longer read: use SIGNIN_IP_LIMIT, SIGNIN_ACCOUNT_IP_LIMIT and "
        "SIGNIN_ACCOUNT_LIMIT (see README, Configuration)."
    )
SIGNIN_IP_LIMIT = envrate("SIGNIN_IP_LIMIT", "10/5m")
SIGNIN_ACCOUNT_IP_LIMIT = envrate("SIGNIN_ACCOUNT_IP_LIMIT", "5/15m")
SIGNIN_ACCOUNT_LIMIT = envrate("SIGNIN_ACCOUNT_LIMIT", "50/h")
EMAIL_BACKEND = envstr("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "crucible@localhost")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if CRUCIBLE_ENV == "test"
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = CRUCIBLE_ENV != "production"

# Request bodies: submissions carry code, so the cap is the code cap plus room for JSON.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024, minimum=1024)

# --- Web security -----------------------------------------------------------------------
SECURE_HTTPS = envbool("SECURE_HTTPS", CRUCIBLE_ENV == "production")
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", SECURE_HTTPS)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000 if SECURE_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HTTPS
SECURE_HSTS_PRELOAD = SECURE_HTTPS
BEHIND_TLS_PROXY = envbool("BEHIND_TLS_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
# Proxies in front of Crucible that append the client's address to X-Forwarded-For: the sign-in
# throttles count that address, not the proxy's (which would lock everyone out together).
ALLAUTH_TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 1 if BEHIND_TLS_PROXY else 0, minimum=0, maximum=5)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# --- API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "crucible.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "crucible.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Crucible API",
    "DESCRIPTION": "Run untrusted code in locked-down sandboxes, stream its output, stop it at once.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {
        "EvaluationStatusEnum": "apps.evaluations.models.Status",
        "PriorityEnum": "apps.evaluations.models.Priority",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Summaries for every operation and one shared 404 response (crucible/openapi.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "crucible.openapi.polish"],
}

# --- Quotas (defaults; operators override per user or group in the admin) ------------------
QUOTA_SUBMISSIONS_PER_MINUTE = envint("QUOTA_SUBMISSIONS_PER_MINUTE", 30, minimum=0)
QUOTA_MAX_ACTIVE = envint("QUOTA_MAX_ACTIVE", 10, minimum=0)

# --- Sandbox ----------------------------------------------------------------------------
SANDBOX_IMAGE = envstr("SANDBOX_IMAGE", "crucible-sandbox:latest")
# The repository prefix of the runtimes' own images (PREFIXNAME:latest, e.g. crucible-runtime-c:latest):
# a checkout that builds images of its own on a shared engine uses a prefix of its own.
SANDBOX_RUNTIME_IMAGE_PREFIX = envstr("SANDBOX_RUNTIME_IMAGE_PREFIX", "crucible-runtime-")
# auto: gVisor (runsc) when the engine has it, else runc; or force one (a forced runtime the
# engine lacks fails closed: the run ends in error).
SANDBOX_RUNTIME = envstr("SANDBOX_RUNTIME", "auto")
# Under gVisor the engine's pids cgroup bounds the host threads gVisor needs for one sandbox (its
# kernel, and threads per process of the program on the ptrace platform); the program's own
# process limit is SANDBOX_PIDS_LIMIT, enforced inside gVisor as RLIMIT_NPROC.
# Idle, locked-down sandboxes each worker keeps started for runs with the default limits (0: none).
# Tests start with none (their stacks check that no container is left) and turn it on where they test it.
SANDBOX_POOL_SIZE = envint("SANDBOX_POOL_SIZE", 0 if CRUCIBLE_ENV == "test" else 1, minimum=0, maximum=16)
# Runtimes (sandbox/runtimes.json names) with images of their own whose default-limits profile the
# warm pool keeps too, SANDBOX_POOL_SIZE of each (python and bash share SANDBOX_IMAGE's profile).
SANDBOX_POOL_RUNTIMES = envlist("SANDBOX_POOL_RUNTIMES", [])
# A sandbox reset for the next sample of the same batch (``reuse: "batch"``) waits this long to be
# claimed before it is removed (0: never keep one).
SANDBOX_REUSE_IDLE_S = envint("SANDBOX_REUSE_IDLE_S", 10, minimum=0, maximum=3600)
# Such a sandbox, reset, also starts the interpreter of its next program ahead when the last one was a
# Python program (its start-up then costs the next sample nothing): false, every program starts fresh.
SANDBOX_PRESTART = envbool("SANDBOX_PRESTART", True)
# Sandboxes of finished runs a worker (WORKER_FORK=false) may still be killing and removing in a
# thread while it runs its next job (0: each run removes its own before its job returns). A worker
# waits for them when it stops; a dead worker's are removed by the reconciler's orphan sweep.
SANDBOX_REMOVE_BEHIND = envint("SANDBOX_REMOVE_BEHIND", 2, minimum=0, maximum=16)
# The longest any call to the Docker engine may take (create, start, exec, remove, ...).
SANDBOX_ENGINE_TIMEOUT_S = envfloat("SANDBOX_ENGINE_TIMEOUT_S", 30.0, minimum=1.0)
# A safety or emergency stop freezes the sandbox and keeps its evidence (/output) before the kill:
# the whole step, at most this long (apps/sandboxing/evidence.py).
SANDBOX_EVIDENCE_DEADLINE_S = envfloat("SANDBOX_EVIDENCE_DEADLINE_S", 10.0, minimum=1.0, maximum=60.0)
# How often a run's process view (names of the processes in its sandbox) is read for the rules.
SANDBOX_PROCESS_VIEW_EVERY_S = envfloat("SANDBOX_PROCESS_VIEW_EVERY_S", 2.0, minimum=0.0, maximum=60.0)
SANDBOX_RUNSC_HOST_TASKS = envint("SANDBOX_RUNSC_HOST_TASKS", 4096, minimum=256)
# Under gVisor the engine's memory limit also covers gVisor's own kernel: this much is added to it.
SANDBOX_RUNSC_MEMORY_OVERHEAD_MB = envint("SANDBOX_RUNSC_MEMORY_OVERHEAD_MB", 48, minimum=0)
SANDBOX_DEFAULT_TIMEOUT_S = envfloat("SANDBOX_DEFAULT_TIMEOUT_S", 10.0, minimum=0.1)
SANDBOX_MAX_TIMEOUT_S = envfloat("SANDBOX_MAX_TIMEOUT_S", 300.0, minimum=0.1)
SANDBOX_DEFAULT_MEMORY_MB = envint("SANDBOX_DEFAULT_MEMORY_MB", 256, minimum=16)
SANDBOX_MAX_MEMORY_MB = envint("SANDBOX_MAX_MEMORY_MB", 2048, minimum=16)
# The smallest limits are the sandbox policy's (apps/sandboxing/policy.py MINIMA); its system check
# (apps/sandboxing/checks.py) refuses defaults and maxima below them or a default above its maximum.
SANDBOX_DEFAULT_CPUS = envfloat("SANDBOX_DEFAULT_CPUS", 1.0, minimum=0.1)
SANDBOX_MAX_CPUS = envfloat("SANDBOX_MAX_CPUS", 2.0, minimum=0.1)
SANDBOX_PIDS_LIMIT = envint("SANDBOX_PIDS_LIMIT", 64, minimum=8)
SANDBOX_OUTPUT_CAP_BYTES = envint("SANDBOX_OUTPUT_CAP_BYTES", 1024 * 1024, minimum=1024)
SANDBOX_MAX_CODE_BYTES = envint("SANDBOX_MAX_CODE_BYTES", 256 * 1024, minimum=1024)
SANDBOX_MAX_STDIN_BYTES = envint("SANDBOX_MAX_STDIN_BYTES", 1024 * 1024, minimum=0)
# Files of a submission besides its entry point (their bytes count in SANDBOX_MAX_CODE_BYTES);
# at most 48: the code directory's tmpfs has 64 inodes.
SANDBOX_MAX_FILES = envint("SANDBOX_MAX_FILES", 16, minimum=0, maximum=48)
SANDBOX_TMPFS_MB = envint("SANDBOX_TMPFS_MB", 64, minimum=1)
SANDBOX_TMPFS_INODES = envint("SANDBOX_TMPFS_INODES", 4096, minimum=64)
SANDBOX_ARTIFACT_MAX_FILES = envint("SANDBOX_ARTIFACT_MAX_FILES", 32, minimum=0)
SANDBOX_ARTIFACT_MAX_BYTES = envint("SANDBOX_ARTIFACT_MAX_BYTES", 16 * 1024 * 1024, minimum=0)
SANDBOX_KILL_GRACE_S = envfloat("SANDBOX_KILL_GRACE_S", 2.0, minimum=0.0)
SANDBOX_NOFILE = envint("SANDBOX_NOFILE", 256, minimum=16)
SANDBOX_FSIZE_MB = envint("SANDBOX_FSIZE_MB", SANDBOX_TMPFS_MB, minimum=1)

# --- Queue ------------------------------------------------------------------------------
QUEUE_CAPACITY = envint("QUEUE_CAPACITY", 1000, minimum=1)
# Batches (apps.tasks): the most samples one batch may hold, the most samples one user may have
# waiting, and how many of one user's samples are on the work queues at once (fair dispatch).
BATCH_MAX_SAMPLES = envint("BATCH_MAX_SAMPLES", 10_000, minimum=1)
QUEUED_SAMPLES_PER_USER = envint("QUEUED_SAMPLES_PER_USER", 50_000, minimum=1)
FAIR_SHARE_WINDOW = envint("FAIR_SHARE_WINDOW", 4, minimum=1)
# The batch endpoint's request body limit (every other endpoint keeps DATA_UPLOAD_MAX_MEMORY_SIZE).
BATCH_MAX_BODY_BYTES = envint("BATCH_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024)
RECONCILE_INTERVAL_S = envint("RECONCILE_INTERVAL_S", 15, minimum=1)
# Runtime images built in the background (apps.evaluations.builds, ``manage.py crucible_builder``):
# whether a submission for a runtime whose image is missing starts its build (else it is a 400),
# how long a build may run, and after how long without its builder's heartbeat it is taken back.
RUNTIME_BUILD_ON_DEMAND = envbool("RUNTIME_BUILD_ON_DEMAND", True)
RUNTIME_BUILD_TIMEOUT_S = envint("RUNTIME_BUILD_TIMEOUT_S", 3600, minimum=60)
RUNTIME_BUILD_LOST_AFTER_S = envint("RUNTIME_BUILD_LOST_AFTER_S", 120, minimum=5)
# Runtimes whose missing images the builder requests when it starts ("prebuilt", "all", or names).
RUNTIME_BUILD_AT_START = envlist("RUNTIME_BUILD_AT_START", [])
# The retention policy (apps.console.retention): evaluations, batches, sessions and callback
# deliveries that ended more than RETENTION_DAYS ago are deleted (0: keep everything), at most
# RETENTION_BATCH of each kind per pass, a pass every RETENTION_EVERY_S (sooner while there is more).
RETENTION_DAYS = envint("RETENTION_DAYS", 0, minimum=0)
RETENTION_BATCH = envint("RETENTION_BATCH", 500, minimum=1)
RETENTION_EVERY_S = envint("RETENTION_EVERY_S", 600, minimum=1)
WORKER_LOST_AFTER_S = envint("WORKER_LOST_AFTER_S", 30, minimum=5)
# RQ's worker key lives this long without a heartbeat; an idle worker beats every (this - 15) s and
# registers again if Redis forgot it (restarted empty or flushed).
WORKER_REGISTRATION_TTL_S = envint("WORKER_REGISTRATION_TTL_S", 30, minimum=20)
# A worker counts as alive while its last RQ heartbeat is younger than WORKER_REGISTRATION_TTL_S; a
# busy worker beats every WORKER_BUSY_BEAT_S. With each beat it publishes what it sees of its engine,
# probed every ENGINE_REPORT_S (apps.sandboxing.enginereport), under the host name WORKER_HOST.
WORKER_BUSY_BEAT_S = envint("WORKER_BUSY_BEAT_S", 10, minimum=1)
ENGINE_REPORT_S = envfloat("ENGINE_REPORT_S", 5.0, minimum=0.5)
WORKER_HOST = envstr("WORKER_HOST", socket.gethostname())
# A running evaluation's worker writes heartbeat_at this often; keep it well under WORKER_LOST_AFTER_S.
WORKER_HEARTBEAT_S = envfloat("WORKER_HEARTBEAT_S", min(5.0, WORKER_LOST_AFTER_S / 3), minimum=0.2)
# Runs interrupted by a platform fault (worker lost or shut down, engine failure) are run again
# until they have been claimed this many times; after that they end as error.
EVALUATION_MAX_ATTEMPTS = envint("EVALUATION_MAX_ATTEMPTS", 2, minimum=1, maximum=5)
# True: RQ's default, a work horse forked per job. False (the default): each job runs in the
# worker's own process, which saves the fork and the horse's new PostgreSQL and Redis connections
# (about 60 ms a run on a 2-core machine) and lets a worker keep state between runs (a warm pool);
# a job that kills its process takes the worker with it, and the reconciler hands its run back.
# See apps.evaluations.worker.
WORKER_FORK = envbool("WORKER_FORK", False)
# A worker's CPU priority below the web's (its niceness, 0-19; 0 keeps the web's): on a machine short
# of CPU, the API, the health endpoint and live output stay responsive while workers start and record
# runs (README, Benchmarks). At 5 a busy worker still gets a third of what a busy web process gets.
WORKER_NICE = envint("WORKER_NICE", 5, minimum=0, maximum=19)
# How long a worker keeps a run going (and retries its writes) while PostgreSQL is unreachable.
WORKER_DB_RETRY_S = envfloat("WORKER_DB_RETRY_S", 60.0, minimum=0.0)

# --- Sessions: long-lived agent sandboxes (apps/sessions) -------------------------------
# Limits of a session's sandbox: a caller may ask for less memory/CPU (up to SANDBOX_MAX_*) and
# for shorter or longer idle and lifetime limits up to the maxima. The workspace (/sandbox, also
# /tmp and /output) is memory-backed and counts against the session's memory.
SESSION_DEFAULT_MEMORY_MB = envint("SESSION_DEFAULT_MEMORY_MB", 1024, minimum=64)
SESSION_DEFAULT_CPUS = envfloat("SESSION_DEFAULT_CPUS", 1.0, minimum=0.1)
SESSION_WORKSPACE_MB = envint("SESSION_WORKSPACE_MB", 512, minimum=16)
SESSION_PIDS_LIMIT = envint("SESSION_PIDS_LIMIT", 256, minimum=16)
SESSION_NOFILE = envint("SESSION_NOFILE", 1024, minimum=64)
SESSION_IDLE_TIMEOUT_S = envint("SESSION_IDLE_TIMEOUT_S", 600, minimum=1)
SESSION_MAX_IDLE_TIMEOUT_S = envint("SESSION_MAX_IDLE_TIMEOUT_S", 3600, minimum=1)
SESSION_MAX_LIFETIME_S = envint("SESSION_MAX_LIFETIME_S", 3600, minimum=1)
SESSION_MAX_MAX_LIFETIME_S = envint("SESSION_MAX_MAX_LIFETIME_S", 24 * 3600, minimum=1)
# One exec: its timeout when none is given and the most it may ask for; the output it returns
# (both streams together; beyond it is dropped and ``truncated`` set) and what the transcript keeps.
SESSION_EXEC_TIMEOUT_S = envfloat("SESSION_EXEC_TIMEOUT_S", 600.0, minimum=1.0)
SESSION_EXEC_MAX_TIMEOUT_S = envfloat("SESSION_EXEC_MAX_TIMEOUT_S", 3600.0, minimum=1.0)
SESSION_OUTPUT_CAP_BYTES = envint("SESSION_OUTPUT_CAP_BYTES", 10 * 1024 * 1024, minimum=1024)
SESSION_TRANSCRIPT_OUTPUT_BYTES = envint("SESSION_TRANSCRIPT_OUTPUT_BYTES", 64 * 1024, minimum=0)
# The largest file written or read, and the largest exec input.
SESSION_FILE_MAX_BYTES = envint("SESSION_FILE_MAX_BYTES", 100 * 1024 * 1024, minimum=1024)
SESSION_MAX_ACTIVE_PER_USER = envint("SESSION_MAX_ACTIVE_PER_USER", 8, minimum=1)
# A session host (manage.py crucible_sessions) serves at most this many sessions; it writes its
# heartbeat every SESSION_HOST_HEARTBEAT_S and counts as gone after SESSION_HOST_LOST_AFTER_S.
SESSION_HOST_CAPACITY = envint("SESSION_HOST_CAPACITY", 32, minimum=1)
SESSION_HOST_HEARTBEAT_S = envfloat("SESSION_HOST_HEARTBEAT_S", 1.0, minimum=0.1)
SESSION_HOST_LOST_AFTER_S = envfloat("SESSION_HOST_LOST_AFTER_S", 10.0, minimum=1.0)
# How long POST /api/v1/sandboxes/ waits for the sandbox to be ready before answering "starting";
# a session no host has started after SESSION_START_TIMEOUT_S ends as error.
SESSION_START_WAIT_S = envfloat("SESSION_START_WAIT_S", 30.0, minimum=0.0)
SESSION_START_TIMEOUT_S = envfloat("SESSION_START_TIMEOUT_S", 120.0, minimum=1.0)

# --- Completion callbacks (apps/evaluations/callbacks) -----------------------------------
# A callback URL whose host resolves to a loopback, private, link-local or otherwise non-public
# address is refused, at submission and again at every delivery, unless its host name, or a network
# holding each of its addresses, is listed here (names, addresses or CIDRs, comma-separated).
CALLBACK_ALLOWED_HOSTS = envhosts("CALLBACK_ALLOWED_HOSTS", [])
# Attempts per delivery (the first included); a 2xx ends it, anything else is tried again after
# CALLBACK_RETRY_BASE_S, then twice that, four times … (at most an hour between attempts).
CALLBACK_MAX_ATTEMPTS = envint("CALLBACK_MAX_ATTEMPTS", 5, minimum=1, maximum=20)
CALLBACK_RETRY_BASE_S = envfloat("CALLBACK_RETRY_BASE_S", 30.0, minimum=1.0, maximum=3600.0)
# Connecting, and each read of the answer, may take this long; the answer's body is never read.
CALLBACK_TIMEOUT_S = envfloat("CALLBACK_TIMEOUT_S", 10.0, minimum=0.5, maximum=60.0)

# --- Monitoring -------------------------------------------------------------------------
# Alerts go to a webhook (JSON POST) and/or by email, from RQ jobs retried a bounded number of times.
ALERT_WEBHOOK_URL = envstr("ALERT_WEBHOOK_URL", "")
if ALERT_WEBHOOK_URL and not ALERT_WEBHOOK_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("ALERT_WEBHOOK_URL must be an http:// or https:// URL.")
ALERT_EMAILS = envlist("ALERT_EMAILS", [])
# Where people reach this deployment (e.g. https://crucible.example.org): alerts link to an incident's
# report with it; empty: they carry the report's path alone.
SITE_URL = (envstr("SITE_URL", "") or "").rstrip("/")
if SITE_URL and not SITE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("SITE_URL must be an http:// or https:// URL.")
ALERT_WEBHOOK_TIMEOUT_S = envfloat("ALERT_WEBHOOK_TIMEOUT_S", 5.0, minimum=0.5)
ALERT_NOTIFY_RETRIES = envint("ALERT_NOTIFY_RETRIES", 3, minimum=0, maximum=10)
ALERT_NOTIFY_RETRY_INTERVALS = [10, 60, 300]
# Prometheus scrapers authenticate with "Authorization: Bearer <METRICS_TOKEN>" (empty: operators only).
METRICS_TOKEN = envstr("METRICS_TOKEN", "")

# --- Logging ----------------------------------------------------------------------------
# plain: one line of text per record; json: one JSON object per line (crucible/jsonlog.py). Either
# way a line about an evaluation or a session carries its id (crucible/logcontext.py).
LOG_FORMAT = envstr("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "crucible.logcontext.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s%(context_text)s"},
        "json": {"()": "crucible.jsonlog.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
