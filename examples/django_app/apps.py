from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):  # type: ignore[misc]
    name = "examples.django_app"
    label = "jobs"
