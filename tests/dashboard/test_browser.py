"""The dashboard in headless Chromium, against the app under uvicorn: live jobs in several tabs,
isolation between users, cancel and retry (shown at once), failures, hundreds and more than a
page of jobs, toasts that never cover a control, and a filter shared by the tabs."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Request, Route, WebSocket, expect

from examples.jobs_dashboard.live import JobFinished
from liveupdates import User
from liveupdates.durable import write_event

from .helpers import Dashboard, not_reloaded, open_dashboard, row, screenshot, start_job, stat

pytestmark = pytest.mark.browser

SignIn = Callable[[str, str], BrowserContext]


def test_two_tabs_follow_a_job_live_and_another_user_never_sees_it(
    dashboard: Dashboard, sign_in: SignIn
) -> None:
    alice = sign_in(dashboard.url, "alice")
    tab1, tab2 = open_dashboard(alice), open_dashboard(alice)  # one shared connection
    bob = sign_in(dashboard.url, "bob").new_page()
    frames: list[str | bytes] = []

    def record(frame: str | bytes) -> None:
        frames.append(frame)

    def listen(websocket: WebSocket) -> None:
        websocket.on("framereceived", record)

    bob.on("websocket", listen)  # every frame bob's page receives
    bob.goto("/")
    expect(bob.locator("#live-status")).to_have_attribute("data-state", "live")
    bob.evaluate("""new MutationObserver(() => {
        if (document.querySelector('.job')) window.sawJob = true
    }).observe(document.body, {childList: true, subtree: true})""")
    admin = open_dashboard(sign_in(dashboard.url, "admin"))
    expect(stat(tab2, "total")).to_have_text("0")

    start_job(tab1, "Quarterly numbers", items=40)
    for tab in (tab1, tab2):
        partway = re.compile(r"^([1-9]|[1-3][0-9])/40$")
        expect(row(tab, "Quarterly numbers").locator(".count")).to_have_text(partway)
        expect(stat(tab, "running")).to_have_text("1")
    screenshot(tab2, "progress")
    for tab in (tab1, tab2):
        job = row(tab, "Quarterly numbers")
        expect(job).to_have_attribute("data-status", "completed")
        expect(job.locator(".count")).to_have_text("40/40")
        expect(job.locator(".percent")).to_have_text("100%")
        expect(stat(tab, "completed")).to_have_text("1")
        expect(stat(tab, "items")).to_have_text("40")
        expect(tab.locator(".toast.completed")).to_contain_text("Quarterly numbers completed")
        assert not_reloaded(tab)

    expect(row(admin, "Quarterly numbers").locator(".owner")).to_have_text("alice")
    expect(row(admin, "Quarterly numbers")).to_have_attribute("data-status", "completed")
    expect(stat(admin, "connections")).to_have_text("3")  # alice's two tabs share one
    screenshot(admin, "admin")

    expect(stat(bob, "total")).to_have_text("0")
    expect(bob.locator(".job")).to_have_count(0)
    assert bob.evaluate("window.sawJob === undefined")
    assert frames and not any("Quarterly" in str(f) or "user:alice" in str(f) for f in frames)


def test_cancel_and_retry_in_one_tab_show_in_the_other(
    dashboard: Dashboard, sign_in: SignIn
) -> None:
    alice = sign_in(dashboard.url, "alice")
    tab1, tab2 = open_dashboard(alice), open_dashboard(alice)
    start_job(tab1, "Long export", items=1000)
    expect(row(tab2, "Long export")).to_have_attribute("data-status", "running")

    row(tab1, "Long export").get_by_role("button", name="Cancel").click()
    expect(row(tab2, "Long export")).to_have_attribute("data-status", "cancelled")
    expect(stat(tab2, "cancelled")).to_have_text("1")
    expect(stat(tab2, "running")).to_have_text("0")

    row(tab1, "Long export").get_by_role("button", name="Retry").click()
    expect(row(tab2, "Long export")).to_have_attribute("data-status", "running")
    expect(stat(tab2, "cancelled")).to_have_text("0")
    expect(stat(tab2, "running")).to_have_text("1")

    row(tab2, "Long export").get_by_role("button", name="Cancel").click()  # and the other way
    expect(row(tab1, "Long export")).to_have_attribute("data-status", "cancelled")
    assert not_reloaded(tab1) and not_reloaded(tab2)


def test_a_failed_job_shows_its_error_live_history_and_a_failure_toast(
    dashboard: Dashboard, sign_in: SignIn
) -> None:
    page = open_dashboard(sign_in(dashboard.url, "alice"))
    start_job(page, "Flaky import", items=60, fail=True)  # fails on item 30
    row(page, "Flaky import").locator(".name").click()  # the job page, while it runs

    job = page.locator(".job-page")
    expect(job.locator(".count")).to_have_text(re.compile(r"^([1-9]|[12][0-9])/60$"))
    expect(job).to_have_attribute("data-status", "failed")
    expect(job.locator(".message")).to_have_text("item 30: failed on purpose")
    expect(page.locator(".history tbody tr")).to_have_count(32)  # queued, started, 29, failed
    expect(page.locator(".history tbody tr").first).to_contain_text("failed: item 30")
    expect(page.get_by_role("alert")).to_contain_text("Flaky import failed: item 30: failed on")
    screenshot(page, "job")

    page.get_by_role("link", name="← All jobs").click()
    expect(row(page, "Flaky import").locator(".message")).to_have_text("item 30: failed on purpose")
    expect(stat(page, "failed")).to_have_text("1")
    screenshot(page, "failed")
    assert not_reloaded(page)


def test_finished_jobs_leave_the_active_list_after_the_configured_time(
    start_dashboard: Callable[..., Dashboard], sign_in: SignIn
) -> None:
    dashboard = start_dashboard(finished_ttl=1.0)
    page = open_dashboard(sign_in(dashboard.url, "bob"))
    start_job(page, "Quick one", items=2)
    expect(row(page, "Quick one")).to_have_attribute("data-status", "completed")
    expect(row(page, "Quick one")).to_have_count(0)  # gone from "Active"
    page.locator(".filters").get_by_role("button", name="Completed").click()
    expect(row(page, "Quick one")).to_have_count(1)


def test_hundreds_of_jobs_cost_few_refetches(
    start_dashboard: Callable[..., Dashboard], sign_in: SignIn
) -> None:
    dashboard = start_dashboard(concurrency=10, step_seconds=0.02)
    page = open_dashboard(sign_in(dashboard.url, "alice"))
    fetches: list[str] = []

    def count(request: Request) -> None:
        if re.search(r"/api/jobs(\?|$)", request.url):  # a page of the list, or a POST
            fetches.append(request.method)

    page.on("request", count)
    form = page.get_by_role("form", name="New job")
    form.get_by_label("Items").fill("3")
    form.get_by_label("How many").select_option("100")
    form.get_by_role("button", name="Start").click()
    form.get_by_role("button", name="Start").click()
    expect(stat(page, "completed")).to_have_text("200", timeout=30_000)
    expect(page.locator(".job")).to_have_count(200)
    expect(page.locator(".job[data-status=completed] .count", has_text="3/3")).to_have_count(200)
    screenshot(page, "many")
    # 200 jobs changed state 600 times: coalesced into a few list refetches.
    assert fetches.count("GET") < 60, len(fetches)


def test_signing_in_and_out_through_the_page(
    dashboard: Dashboard, new_context: Callable[[str], BrowserContext]
) -> None:
    page = new_context(dashboard.url).new_page()
    page.goto("/")
    expect(page.get_by_role("table", name="Demo accounts")).to_contain_text("admin")
    page.get_by_label("User").fill("alice")
    page.get_by_label("Password").fill("bob")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".login .error")).to_have_text("wrong user name or password")
    page.get_by_label("Password").fill("alice")
    screenshot(page, "login")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    expect(page.locator(".who")).to_have_text("alice")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.context.request.get("/api/jobs").status == 401


def test_without_websocket_and_sse_the_page_falls_back_to_polling(
    start_dashboard: Callable[..., Dashboard], sign_in: SignIn
) -> None:
    dashboard = start_dashboard(polling_after=0.5, polling_fallback=0.5)
    context = sign_in(dashboard.url, "alice")
    context.route_web_socket(re.compile(r"/live$"), lambda ws: ws.close())  # a proxy that
    context.route(re.compile(r"/live/sse"), lambda route: route.abort())  # blocks both
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "polling")
    expect(page.locator(".banner")).to_contain_text("refreshing every 0.5 s")

    context.request.post("/api/jobs", data={"name": "Polled", "items": 5})
    expect(row(page, "Polled")).to_have_attribute("data-status", "completed")
    expect(stat(page, "completed")).to_have_text("1")
    screenshot(page, "polling")


def test_a_percentage_stands_beside_the_count(dashboard: Dashboard, sign_in: SignIn) -> None:
    page = open_dashboard(sign_in(dashboard.url, "alice"))
    start_job(page, "Halfway", items=40, fail=True)  # fails on item 20: stops at 19/40
    job = row(page, "Halfway")
    expect(job).to_have_attribute("data-status", "failed")
    expect(job.locator(".count")).to_have_text("19/40")
    expect(job.locator(".percent")).to_have_text("48%")


@contextmanager
def api_client(dashboard: Dashboard, user: str) -> Iterator[httpx.Client]:
    """An HTTP client of the dashboard, signed in as `user`."""
    with httpx.Client(base_url=dashboard.url, timeout=30) as client:
        client.post("/api/login", json={"user": user, "password": user}).raise_for_status()
        yield client


def test_toasts_never_cover_a_control(
    start_dashboard: Callable[..., Dashboard], sign_in: SignIn
) -> None:
    """With toasts shown, the Cancel button of the last row, scrolled to the very bottom, is
    what a click there reaches (the toasts have a dock of their own below the page)."""
    dashboard = start_dashboard(concurrency=20)
    with api_client(dashboard, "alice") as alice:
        alice.post("/api/jobs", json={"name": "Long", "items": 10_000, "count": 14})
    page = open_dashboard(sign_in(dashboard.url, "alice"))
    start_job(page, "Quick", items=1)
    start_job(page, "Quick", items=1)
    start_job(page, "Quick", items=1)
    expect(page.locator(".toast")).to_have_count(3)
    last = page.locator(".job").last
    expect(last).to_contain_text("Long #1")
    cancel = last.get_by_role("button", name="Cancel")
    page.evaluate("""() => {
        for (const el of [document.scrollingElement, ...document.querySelectorAll('.page')])
            el.scrollTop = el.scrollHeight
    }""")
    expect(cancel).to_be_in_viewport()
    hit = cancel.evaluate("""(button) => {
        const box = button.getBoundingClientRect()
        const x = box.left + box.width / 2, y = box.top + box.height / 2
        return button.contains(document.elementFromPoint(x, y))
    }""")
    assert hit, "a toast covers the Cancel button of the last row"
    screenshot(page, "toasts")
    cancel.click(no_wait_after=True, timeout=2000)
    expect(last).to_have_attribute("data-status", "cancelled")


def test_more_than_a_thousand_jobs_are_all_reachable_page_by_page(
    dashboard: Dashboard, sign_in: SignIn
) -> None:
    with api_client(dashboard, "alice") as alice:
        created = []
        for batch in range(3):  # 1,200 jobs: more than the 1,000 the list used to stop at
            spec = {"name": f"Batch {batch}", "items": 10_000, "count": 400}
            created += alice.post("/api/jobs", json=spec).raise_for_status().json()
        oldest = created[0]["id"]
        page = open_dashboard(sign_in(dashboard.url, "alice"))
        page.locator(".filters").get_by_role("button", name="All").click()
        expect(stat(page, "total")).to_have_text("1200")
        expect(page.locator(".job")).to_have_count(500)
        expect(page.locator(".filters .shown")).to_have_text("500 of 1200")
        page.get_by_role("button", name="Show 500 more").click()
        expect(page.locator(".job")).to_have_count(1000)
        page.get_by_role("button", name="Show 200 more").click()
        expect(page.locator(".job")).to_have_count(1200)
        expect(page.locator(".filters .shown")).to_have_text("1200 of 1200")
        expect(page.get_by_role("button", name=re.compile("^Show"))).to_have_count(0)
        first = page.locator(f'.job[data-job-id="{oldest}"]')
        expect(first).to_contain_text("Batch 0 #1")

        alice.post(f"/api/jobs/{oldest}/cancel").raise_for_status()  # on the third page: live
        expect(first).to_have_attribute("data-status", "cancelled")
        expect(page.locator(".job")).to_have_count(1200)
    assert not_reloaded(page)


def test_the_filter_is_the_same_in_every_tab(dashboard: Dashboard, sign_in: SignIn) -> None:
    alice = sign_in(dashboard.url, "alice")
    tab1, tab2 = open_dashboard(alice), open_dashboard(alice)

    def pressed(tab: Page) -> Locator:
        return tab.locator(".filters button[aria-pressed=true]")

    expect(pressed(tab2)).to_have_text("Active")
    tab1.locator(".filters").get_by_role("button", name="Failed").click()
    expect(pressed(tab2)).to_have_text("Failed")
    tab2.locator(".filters").get_by_role("button", name="All").click()
    expect(pressed(tab1)).to_have_text("All")
    expect(pressed(open_dashboard(alice))).to_have_text("All")  # a new tab too


def test_cancel_and_retry_show_at_once_and_go_back_if_refused(
    dashboard: Dashboard, sign_in: SignIn
) -> None:
    page = open_dashboard(sign_in(dashboard.url, "alice"))
    held: list[Route] = []
    page.route(re.compile(r"/api/jobs/\d+/(cancel|retry)$"), lambda r: held.append(r))  # held
    start_job(page, "Optimistic", items=10_000)
    job = row(page, "Optimistic")
    expect(job).to_have_attribute("data-status", "running")

    job.get_by_role("button", name="Cancel").click()
    expect(job).to_have_attribute("data-status", "cancelled")  # before the server answered
    assert len(held) == 1
    held.pop().fulfill(status=409, json={"error": "job 1 is completed"})
    expect(job).to_have_attribute("data-status", "running")  # refused: back as it was
    expect(job.get_by_role("alert")).to_have_text("job 1 is completed")

    job.get_by_role("button", name="Cancel").click()
    expect(job).to_have_attribute("data-status", "cancelled")
    held.pop().continue_()  # the server agrees, and its event confirms it
    expect(stat(page, "cancelled")).to_have_text("1")

    job.get_by_role("button", name="Retry").click()
    expect(job).to_have_attribute("data-status", "queued")  # at once
    expect(job.locator(".count")).to_have_text("0/10000")
    held.pop().continue_()
    expect(job).to_have_attribute("data-status", "running")
    expect(stat(page, "cancelled")).to_have_text("0")
    assert not_reloaded(page)


def test_a_job_finished_event_delivered_twice_shows_one_toast(
    dashboard: Dashboard, sign_in: SignIn
) -> None:
    """The outbox delivers at least once (a relay killed mid-batch leaves rows that another
    publishes again): a repeated `job.finished` toasts once."""
    page = open_dashboard(sign_in(dashboard.url, "alice"))
    start_job(page, "Once", items=2)
    expect(page.locator(".toast", has_text="Once completed")).to_have_count(1)
    job_id = int(row(page, "Once").get_attribute("data-job-id") or 0)
    with sqlite3.connect(dashboard.settings.db_path) as c:  # the rows a relay publishes again
        for event in (
            JobFinished(job_id, "Once", "completed", None, 1),
            JobFinished(job_id, "Once", "completed", None, 1),
            JobFinished(job_id + 1, "Marker", "completed", None, 1),  # after the repeats
        ):
            write_event(c, event, to=User("alice"))
    expect(page.locator(".toast", has_text="Marker completed")).to_have_count(1)
    expect(page.locator(".toast", has_text="Once completed")).to_have_count(1)
