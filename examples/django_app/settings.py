"""Settings of the Django example: sessions and auth, one model, liveupdates configured here.

``DJANGO_DB`` names the SQLite file (default: ``db.sqlite3`` beside this file).
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "an example's key: set your own")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "examples.django_app",
]
# (no CsrfViewMiddleware: the example's JSON API is posted to by tests; keep it in your app)
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", str(HERE / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

LIVEUPDATES = {
    "BACKPLANE": os.environ.get("LIVEUPDATES_BACKPLANE", "memory://"),
    "OUTBOX": "default",  # run the outbox relay for this database in the ASGI lifespan
}
