"""axe-core on every screen and dialog, for every role, at laptop and phone widths, and on the
error pages (400, 403, 404, 500 and the CSRF failure).

axe-core is vendored (tests/browser/vendor/axe.min.js, from npm's axe-core package; see
the README) and put into each page by Playwright before the page's own scripts run, so
it needs no CDN and no exception in our Content Security Policy. A serious or critical
violation fails the test, listed rule by rule with the elements it was found on.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from experiments.models import (
    AttemptAction,
    AttemptState,
    Bookmark,
    BookmarkKind,
    ConclusionAttempt,
    ConclusionClaim,
    Membership,
    Region,
    Role,
    Workspace,
)
from experiments.notifications import webhook, webhook_address
from experiments.selectors import experiment_list as list_selectors
from experiments.services import workspaces as workspace_services
from experiments.views.errors import CSRF_PAGE, PAGES
from tests.browser.signin import TIMEOUT_MS, log_in
from tests.factories import make_attempt

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE_PATH = Path(__file__).parent / "vendor" / "axe.min.js"
WIDTHS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
FAILING_IMPACTS = ("serious", "critical")
# Every WCAG 2.x A/AA rule and axe's best practices; target size (WCAG 2.2 AA) is off by default.
AXE_OPTIONS = {"rules": {"target-size": {"enabled": True}}, "resultTypes": ["violations"]}
MISMATCH = "one-page checkout (exposures off the planned split)"

RUN_AXE = """async ([selector, options]) => {
  const results = await window.axe.run(selector ? document.querySelector(selector) : document, options);
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({target: n.target.join(" "), summary: n.failureSummary || ""})),
  }));
}"""


def describe(violations: list[dict[str, Any]]) -> str:
    """The violations as a person reads them: rule, impact, help, then each element and why."""
    lines = []
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']}")
        for node in v["nodes"][:8]:
            why = " ".join(node["summary"].split())
            lines.append(f"      {node['target']}\n        {why[:400]}")
        if len(v["nodes"]) > 8:
            lines.append(f"      ... and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


class AxeReport:
    """Collects what axe finds on each screen, so one run reports every failing screen at once."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.checked: list[str] = []
        self.width = ""

    def check(self, page: Page, label: str, *, within: str | None = None) -> None:
        page.wait_for_load_state("load")
        label = f"{label} at {self.width}"
        violations = page.evaluate(RUN_AXE, [within, AXE_OPTIONS])
        serious = [v for v in violations if v["impact"] in FAILING_IMPACTS]
        self.checked.append(label)
        if serious:
            self.failures.append(f"{label} ({page.url}):\n{describe(serious)}")

    def assert_clean(self) -> None:
        assert self.checked, "no screen was checked"
        if self.failures:
            pytest.fail(
                f"axe-core found serious or critical violations on {len(self.failures)} of "
                f"{len(self.checked)} screens:\n\n" + "\n\n".join(self.failures),
                pytrace=False,
            )


def make_user(django_user_model: Any, role: str, workspace: Any) -> Any:
    user = django_user_model.objects.create_user(
        username=role, password="pw-" + role, first_name=role.title(), last_name="Example"
    )
    if role == "auditor":
        user.user_permissions.add(Permission.objects.get(codename="review_all_conclusions"))
    else:
        Membership.objects.create(user=user, workspace=workspace, role=getattr(Role, role.upper()))
    return user


def add_home_scene(standin: Any, user: Any, pm: Any, payments: Any) -> None:
    """A second workspace with open attempts, and a third whose list Mixpanel refuses, for the home page."""
    Membership.objects.create(user=user, workspace=payments, role=Role.VIEWER)
    refused = Workspace.objects.create(name="Search & Discovery", region=Region.IN, mixpanel_workspace_id=3003)
    Membership.objects.create(user=user, workspace=refused, role=Role.VIEWER)
    standin.set_access(3003, allowed=False)
    active = [e for e in standin.experiments(2002) if e["status"] == "active" and e["name"]]
    for experiment, state in zip(active, (AttemptState.UNKNOWN, AttemptState.AWAITING_APPROVAL), strict=False):
        attempt = ConclusionAttempt.objects.create(
            workspace=payments,
            experiment_id=experiment["id"],
            experiment_name=experiment["name"],
            actor=pm,
            actor_name="Pat",
            state=state,
        )
        ConclusionClaim.objects.create(
            workspace=payments, experiment_id=experiment["id"], action=AttemptAction.CONCLUSION, attempt=attempt
        )


def add_waiting_scene(standin: Any, workspace: Any, pm: Any) -> None:
    """What waits in Growth: a request for approval (in the inbox of its concluders and admins),
    an answer lost; a settings change for the controls view; email on, for the reach."""
    ws_admin = Membership.objects.filter(workspace=workspace, role=Role.ADMIN).first()
    changer = ws_admin.user if ws_admin else pm
    workspace_services.workspace_settings_update(
        workspace=workspace,
        user=changer,
        webhook_url="",
        remove_webhook=False,
        email_bookmarkers=True,
        requires_approval=workspace.requires_approval,
        approval_window_hours=12,
    )
    active = [e for e in standin.experiments(1001) if e["status"] == "active" and MISMATCH not in e["name"]]
    for experiment, state in zip(active[3:5], (AttemptState.AWAITING_APPROVAL, AttemptState.UNKNOWN), strict=True):
        waiting = ConclusionAttempt.objects.create(
            workspace=workspace,
            experiment_id=experiment["id"],
            experiment_name=experiment["name"],
            actor=pm,
            actor_name="Pat (pat)",
            reason_category="significance",
            reason_text="The lift is clear.",
            state=state,
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)
            if state == AttemptState.AWAITING_APPROVAL
            else None,
        )
        ConclusionClaim.objects.create(
            workspace=workspace, experiment_id=experiment["id"], action=AttemptAction.CONCLUSION, attempt=waiting
        )


def check_screens(
    page: Page, report: AxeReport, base: str, *, role: str, ws: Any, exp: dict, ended: dict, attempt: Any
) -> None:
    """Every screen this role can reach, and every dialog it can open, at the current width."""
    report.check(page.goto(base + "/") and page, f"{role}: home")
    if role != "auditor":
        # The home page with experiments: both readable workspaces' rows, the open attempts
        # (outcome unknown, awaiting approval), and the card of the workspace that cannot be read.
        expect(page.locator("#home-results tbody tr").first).to_be_visible()
        expect(page.locator("#home-results")).to_contain_text("Awaiting approval")
        expect(page.locator(".workspace-card .error")).to_have_count(1)
        page.locator("#home-q").fill("checkout")
        expect(page).to_have_url(re.compile(r"\?q=checkout$"))
        expect(page.locator("#home-summary")).to_contain_text("matching")
        report.check(page, f"{role}: home, searched")
    report.check(page.goto(base + reverse("experiments:audit-list")) and page, f"{role}: audit list")
    page.goto(base + reverse("experiments:audit-list") + "?action=controls")
    expect(page.locator("#audit-results")).to_contain_text("approval window")
    report.check(page, f"{role}: audit list of settings changes")
    page.goto(base + reverse("experiments:audit-list") + "?action=plans")
    expect(page.locator("#audit-outcome-note")).to_contain_text("Plans and schedules")
    report.check(page, f"{role}: audit list of plans and schedules")
    url = base + reverse("experiments:audit-workspace-list", args=[ws.pk])
    report.check(page.goto(url) and page, f"{role}: audit of one workspace")
    report.check(page.goto(base + attempt.get_absolute_url()) and page, f"{role}: attempt detail")
    report.check(page.goto(base + "/no/such/page/") and page, f"{role}: 404 page")
    if role == "auditor":
        return
    page.goto(base + reverse("experiments:experiment-list", args=[ws.pk]))
    expect(page.locator("#results")).to_be_visible()
    report.check(page, f"{role}: experiments list")
    # The list's Waiting tab: rows with their chips (a request, an answer lost).
    page.goto(base + reverse("experiments:experiment-list", args=[ws.pk]) + "?status=concluding")
    expect(page.locator("#results a.chip").first).to_be_visible()
    report.check(page, f"{role}: experiments list, waiting rows")
    page.locator("details.bookmark-view > summary").click()
    report.check(page, f"{role}: bookmark this view (open)")

    page.goto(base + reverse("experiments:bookmark-list", args=[ws.pk]))
    report.check(page, f"{role}: bookmarks page")
    edit = page.locator("details.bookmark-edit > summary")
    if edit.count():
        edit.first.click()
        report.check(page, f"{role}: bookmark edit (open)")

    page.goto(base + reverse("experiments:experiment-detail", args=[ws.pk, exp["id"]]))
    expect(page.locator("article h1")).to_contain_text("checkout")
    report.check(page, f"{role}: experiment page")
    page.locator("article button.star-button").click()
    expect(page.locator("#star-note-dialog")).to_be_visible()
    report.check(page, f"{role}: star note dialog", within="#star-note-dialog")
    page.keyboard.press("Escape")
    expect(page.locator("#star-note-dialog")).to_be_hidden()
    expect(page.locator(".plan-seal")).to_contain_text("Plan sealed")
    if role in ("concluder", "admin"):
        page.locator("#schedule summary").click()
        expect(page.get_by_label("Force conclude at (UTC)")).to_be_visible()
        report.check(page, f"{role}: schedule form (open)")
    opener = page.locator("[data-open-dialog=force-conclude-dialog]")
    if role in ("concluder", "admin"):
        opener.first.click()
        expect(page.locator("#force-conclude-form")).to_be_visible()
        report.check(page, f"{role}: force-conclude dialog", within="#force-conclude-dialog")
        page.keyboard.press("Escape")
        expect(page.locator("#force-conclude-dialog")).to_be_hidden()
    else:
        expect(opener).to_have_count(0)
    if role in ("concluder", "admin"):
        page.goto(base + reverse("experiments:experiment-detail", args=[ws.pk, ended["id"]]))
        page.get_by_role("link", name="Record the decision").click()
        expect(page.locator("#decide-form")).to_be_visible()
        report.check(page, f"{role}: record-the-decision dialog", within="#decide-dialog")
        page.keyboard.press("Escape")
        expect(page.locator("#decide-dialog")).to_be_hidden()
    if role == "admin":
        page.goto(base + reverse("experiments:workspace-settings", args=[ws.pk]))
        expect(page.locator(".deliveries-table")).to_be_visible()
        expect(page.locator("#settings-email-reach")).to_be_visible()
        report.check(page, f"{role}: workspace settings")
        page.get_by_role("button", name="Send a test message").click()
        expect(page.locator(".messages")).to_contain_text("A test message is on its way")
        report.check(page, f"{role}: workspace settings after a test message")
        page.get_by_label("Webhook address").fill("ftp://not-a-webhook")
        page.get_by_label("Approval window (hours)").fill("0")
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator("[aria-invalid=true]")).to_have_count(2)
        report.check(page, f"{role}: workspace settings with errors")
    # Without JavaScript the action is a page of its own (a 403 page for a viewer).
    page.goto(base + reverse("experiments:experiment-force-conclude", args=[ws.pk, exp["id"]]))
    report.check(page, f"{role}: force-conclude page without JavaScript")


@pytest.mark.parametrize("role", ["viewer", "concluder", "admin", "auditor"])
def test_no_serious_axe_violation_on_any_screen(
    browser: Browser, live_server, standin, workspace, other_workspace, pm, django_user_model, role
):
    exp = next(e for e in standin.experiments(1001) if MISMATCH in e["name"])
    ended = next(e for e in standin.experiments(1001) if e["status"] == "concluded" and e["variants"])
    user = make_user(django_user_model, role, workspace)
    if role != "auditor":
        add_home_scene(standin, user, pm, other_workspace)
    if role == "admin":  # the settings page then lists a delivery about each attempt
        workspace.webhook_url_sealed = webhook.webhook_seal("https://hooks.example.com/services/T0/B0/abcdef")
        workspace.webhook_url_hint = webhook_address.webhook_hint("https://hooks.example.com/services/T0/B0/abcdef")
        workspace.save()
    attempt = make_attempt(workspace=workspace, actor=pm, experiment_id=exp["id"], experiment_name=exp["name"])
    make_attempt(workspace=workspace, actor=pm, outcome="failed", http_status=503, error="Mixpanel was down.")
    add_waiting_scene(standin, workspace, pm)
    Bookmark.objects.create(
        workspace=workspace,
        kind=BookmarkKind.VIEW,
        view_query="status=active&q=checkout",
        title="Live checkout",
        note="Every morning",
        created_by=user if role != "auditor" else pm,
        created_by_name=str(user),
    )
    report = AxeReport()
    context = browser.new_context(viewport=WIDTHS["desktop"])
    context.add_init_script(path=str(AXE_PATH))
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        for width, size in WIDTHS.items():
            page.set_viewport_size(size)
            report.width = width
            if width == "desktop":
                page.goto(live_server.url + reverse("login"))
                report.check(page, "anonymous: login page")
                log_in(page, live_server.url, role)
            check_screens(page, report, live_server.url, role=role, ws=workspace, exp=exp, ended=ended, attempt=attempt)
        page.goto(live_server.url + reverse("experiments:audit-list"))
        page.get_by_role("button", name="Log out").click()
        expect(page.locator("main h1")).to_be_visible()
        report.check(page, "anonymous: logged out")
        page.goto(live_server.url + reverse("login"))
        page.get_by_label("Username").fill(role)
        page.get_by_label("Password").fill("wrong")
        page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
        expect(page.get_by_role("alert")).to_be_visible()
        report.check(page, "anonymous: login refused")
    finally:
        context.close()
    report.assert_clean()


def test_focus_lands_on_the_outcome_and_indicators_speak_only_while_busy(
    page: Page, live_server, standin, pm, workspace
):
    exp = standin.find(1001, status="active")
    # A slow PUT keeps "Force concluding…" on screen long enough to look at it.
    standin.set_fault("latency", experiment_id=exp["id"], method="PUT", latency_ms=1500)
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, live_server.url, "pat")
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, exp["id"]]))
    page.locator("[data-open-dialog=force-conclude-dialog]").click()
    expect(page.locator("#force-conclude-form")).to_be_visible()

    # Idle indicators are hidden from assistive technology, not merely transparent.
    progress = page.locator("#force-conclude-progress")
    assert progress.evaluate("el => getComputedStyle(el).visibility") == "hidden"
    expect(page.get_by_text("Force concluding…")).to_be_hidden()
    for live in page.locator("[aria-live], [role=status], [role=alert]").all():
        # No live region sits inside a block htmx replaces wholesale.
        assert not live.evaluate("el => !!el.closest('#force-conclude-body, #conclude-section, #results')"), (
            live.evaluate("el => el.outerHTML")
        )

    # The end time is typed as 24-hour UTC text; "Now" fills in the current UTC minute.
    end = page.get_by_label("End of the analysis window (UTC)")
    expect(end).to_have_attribute("type", "text")
    end.fill("")
    page.get_by_role("button", name=re.compile("^Now")).click()
    expect(end).to_be_focused()
    typed = dt.datetime.strptime(end.input_value(), "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
    assert abs(typed - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=2)

    page.locator("#force-conclude-form").get_by_label("Reason").select_option("significance")
    page.locator("#force-conclude-form").get_by_label("In your own words").fill("The treatment won clearly.")
    page.locator("#force-conclude-submit").click()
    # While the PUT is on its way: shown, and said once through the page's one live region.
    expect(progress).to_be_visible()
    expect(page.locator("#announcer")).to_have_text("Force concluding…")
    # After a second, the person is told what we wait for.
    expect(page.locator("#slow-notice")).to_contain_text("Waiting for Mixpanel")

    # The outcome takes the focus (not <body>), and the busy notice is gone.
    outcome = page.locator("#conclude-section p.success")
    expect(outcome).to_contain_text("Concluded", timeout=TIMEOUT_MS)
    expect(outcome).to_be_focused()
    expect(page.locator("#slow-notice")).to_be_hidden()
    assert progress.count() == 0 or progress.evaluate("el => getComputedStyle(el).visibility") == "hidden"


def test_a_slow_mixpanel_page_says_what_it_waits_for(page: Page, live_server, standin, pm, workspace, settings):
    settings.MIXPANEL_READ_TIMEOUT = settings.MIXPANEL_DEADLINE = 10.0
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, live_server.url, "pat")
    # The home page has just read the list: without that copy, the workspace's page must wait for Mixpanel.
    list_selectors.invalidate_experiment_list(workspace=workspace)
    standin.set_fault("latency", latency_ms=4000)
    # Playwright waits for a navigation before it looks at a page again, so the old page is
    # read from inside: click, let a second and a half pass there, report the notice.
    seen = page.evaluate(
        """() => new Promise((done) => {
            document.querySelector("main a[href^='/w/']").click();
            setTimeout(() => {
                const notice = document.getElementById("slow-notice");
                const said = document.getElementById("announcer").textContent;
                done({hidden: notice.hidden, text: notice.textContent, said: said});
            }, 1500);
        })"""
    )
    assert seen["hidden"] is False
    assert "Waiting for Mixpanel" in seen["text"]
    assert "Waiting for Mixpanel" in seen["said"]
    expect(page.locator("h1.workspace-title")).to_have_text("Growth", timeout=TIMEOUT_MS)
    expect(page.locator("#slow-notice")).to_be_hidden()


def test_no_serious_axe_violation_on_the_error_pages(browser: Browser, live_server, settings, pm):
    """The 400, 403, 404 and 500 pages (tests.error_urls adds views that fail on purpose), and
    the CSRF page a form posted with a spoiled token gets, at both widths."""
    settings.ROOT_URLCONF = "tests.error_urls"
    report = AxeReport()
    context = browser.new_context(viewport=WIDTHS["desktop"])
    context.add_init_script(path=str(AXE_PATH))
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        for width, size in WIDTHS.items():
            page.set_viewport_size(size)
            report.width = width
            for path, status in (("/bad/", 400), ("/forbidden/", 403), ("/no/such/page/", 404), ("/boom/", 500)):
                response = page.goto(live_server.url + path)
                assert response.status == status
                expect(page.locator("main h1")).to_have_text(PAGES[status][0])
                report.check(page, f"{status} page")
            page.goto(live_server.url + reverse("login"))
            page.evaluate("document.querySelector('input[name=csrfmiddlewaretoken]').value = 'spoiled'")
            page.get_by_label("Username").fill("pat")
            page.get_by_label("Password").fill("pw-pat")
            page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
            expect(page.locator("main h1")).to_have_text(CSRF_PAGE[0])
            report.check(page, "CSRF page")
    finally:
        context.close()
    report.assert_clean()
