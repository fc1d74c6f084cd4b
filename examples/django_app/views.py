"""The example's JSON API: log in, list jobs, add one (published after commit, or through the
outbox), and an add that fails after publishing (nothing is sent)."""

from __future__ import annotations

from django.contrib.auth import authenticate, login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from liveupdates import Invalidate, User
from liveupdates.integrations.django import publish_on_commit, write_event

from .models import Job


def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(
        request, username=request.POST.get("username"), password=request.POST.get("password")
    )
    if user is None:
        return JsonResponse({"error": "wrong username or password"}, status=401)
    login(request, user)
    return JsonResponse({"user": str(user.pk)})


def jobs_view(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=401)
    if request.method == "GET":
        jobs = Job.objects.filter(owner=request.user).order_by("id")
        return JsonResponse({"jobs": [{"id": j.pk, "title": j.title} for j in jobs]})
    how = request.GET.get("via", "on_commit")
    to = User(str(request.user.pk))
    try:
        with transaction.atomic():
            job = Job.objects.create(owner=request.user, title=request.POST.get("title", "job"))
            event = Invalidate([["jobs"], ["job", job.pk]])
            if how == "outbox":
                write_event(event, to=to)  # committed with the job, published by the relay
            else:
                publish_on_commit(event, to=to)  # published once the job is committed
            if how == "fail":
                raise RuntimeError("the job could not be saved")  # rolls back: nothing sent
    except RuntimeError as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"id": job.pk}, status=201)


def stats_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})
