"""Django settings. Every deployment value comes from the environment (docs/configuration.md).

Embedded mode (the default): SQLite file, process-memory ledger and usage sink, in-process
timer for background work. Production mode: ``DATABASE_URL`` pointing at PostgreSQL and
``REDIS_URL`` set.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet

from gateway.env import (
    database_from_url,
    env_bool,
    env_int,
    env_list,
    first_run_secret,
    random_secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("GATEWAY_STATE_DIR", BASE_DIR / "var")).resolve()
STATE_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = first_run_secret("SECRET_KEY", STATE_DIR, generate=random_secret_key)
GATEWAY_ENCRYPTION_KEY = first_run_secret(
    "GATEWAY_ENCRYPTION_KEY", STATE_DIR, generate=lambda: Fernet.generate_key().decode()
)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000, minimum=1)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "channels",
    "gateway",
    "governance",
    "routing",
    "pricing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gateway.urls"
APPEND_SLASH = True  # admin pages only; API routes are declared without trailing slashes

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
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "gateway.asgi.application"

DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{STATE_DIR / 'gateway.sqlite3'}"),
        base_dir=BASE_DIR,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Bodies of management API and admin requests; inference bodies have their own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("GATEWAY_MAX_ADMIN_BODY_BYTES", 2 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 5000

REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED_MODE = not REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gateway.api.authentication.AdminTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["gateway.api.permissions.IsStaff"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["gateway.api.parsers.StrictJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "gateway.api.schema.ManagementAutoSchema",
    "EXCEPTION_HANDLER": "gateway.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_RATES": {"quota": "60/min"},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LLM Gateway management API",
    "DESCRIPTION": (
        "Governance of an LLM gateway: customers, teams, virtual keys, budgets, rate limits, "
        "model configs, provider limits, routing rules, pricing overrides, providers and the "
        "audit log. Bifrost-compatible paths under /api/governance/."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["gateway.api.permissions.IsStaff"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "gateway.api.schema.document_responses"],
}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "flush-usage": {"task": "governance.flush_usage", "schedule": 2.0},
    "record-resets": {"task": "governance.record_resets", "schedule": 10.0},
    "purge-usage": {"task": "governance.purge_usage", "schedule": 60.0},
}
# uvicorn's per-request access log (off by default: it costs throughput; x-request-id and
# usage records identify every inference request).
ACCESS_LOG = os.environ.get("GATEWAY_ACCESS_LOG", "").lower() in ("1", "true", "yes", "on")
# Redis keys of the ledger share this hash-tagged prefix (one cluster slot).
LEDGER_KEY_PREFIX = os.environ.get("GATEWAY_LEDGER_KEY_PREFIX", "ledger")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Every GATEWAY_* setting and its default lives in gateway/conf.py; values set here or in
# the environment override them.
for _name in (
    "GATEWAY_CEL_ENGINE",
    "GATEWAY_CONFIG_POLL_MS",
    "GATEWAY_ROUTING_MAX_DEPTH",
    "GATEWAY_REQUIRE_VIRTUAL_KEY",
    "GATEWAY_LEDGER_FAIL_MODE",
    "GATEWAY_MAX_BODY_MB",
    "GATEWAY_CORS_ORIGINS",
    "GATEWAY_PAGE_SIZE_DEFAULT",
    "GATEWAY_PAGE_SIZE_MAX",
    "GATEWAY_DEFAULT_MAX_TOKENS",
    "GATEWAY_USAGE_RETENTION_DAYS",
):
    if _name in os.environ:
        globals()[_name] = os.environ[_name]
