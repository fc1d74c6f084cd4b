from __future__ import annotations

from django.conf import settings
from django.db import models


class Job(models.Model):  # type: ignore[misc]  # (Django has no type stubs here)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    title = models.CharField(max_length=200)
