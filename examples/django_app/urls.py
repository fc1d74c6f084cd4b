from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("login", views.login_view),
    path("jobs", views.jobs_view),
    path("stats", views.stats_view),
]
