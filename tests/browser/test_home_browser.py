"""The home page in a real browser: every active experiment of the person's workspaces on one page.

Chromium, the live dashboard and the Mixpanel stand-in over HTTP. A person in two workspaces
sees both workspaces' active experiments (and neither the ended ones nor those of a workspace
they are not in), filters by one workspace and searches, with the URL saying what is shown;
the same works without JavaScript, from the keyboard, and on a phone.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from experiments.models import Membership, Region, Role, Workspace
from tests.browser.signin import TIMEOUT_MS, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
MISMATCH = "one-page checkout (exposures off the planned split)"


@pytest.fixture
def scene(standin, pm, workspace, other_workspace):
    """Pat: concluder in Growth (stand-in 1001) and viewer in Payments (2002); not in Search & Discovery (3003)."""
    Membership.objects.create(user=pm, workspace=other_workspace, role=Role.VIEWER)
    search = Workspace.objects.create(name="Search & Discovery", region=Region.IN, mixpanel_workspace_id=3003)
    added = {
        "growth": standin.add_experiment(1001, name="Homepage hero (Growth)", status="active", creator_name="Gail"),
        "payments": standin.add_experiment(2002, name="Homepage wallet (Payments)", status="active"),
        "ended": standin.add_experiment(2002, name="Homepage ended (Payments)", status="concluded"),
        "secret": standin.add_experiment(3003, name="Homepage secret (Search)", status="active"),
    }
    return {"standin": standin, "workspace": workspace, "other": other_workspace, "search": search, **added}


def rows(page: Page):
    return page.locator("#home-results tbody tr")


def column(page: Page, label: str) -> list[str]:
    return [text.strip() for text in page.locator(f'#home-results tbody td[data-label="{label}"]').all_inner_texts()]


def url_params(page: Page) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(page.url).query).items()}


def test_both_workspaces_active_experiments_on_one_page_then_filtered_and_searched(page: Page, live_server, scene):
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url)
    page.evaluate("window.__noReload = true")  # gone if anything below reloads the page

    names = column(page, "Experiment")
    assert "Homepage hero (Growth)" in names
    assert "Homepage wallet (Payments)" in names
    assert "Homepage ended (Payments)" not in names
    assert "Homepage secret (Search)" not in page.content()
    assert set(column(page, "Workspace")) == {"Growth", "Payments"}
    # Every active experiment of both workspaces, and only those.
    expected = [e for ws in (1001, 2002) for e in scene["standin"].experiments(ws) if e["status"] == "active"]
    assert len(names) == len(expected)
    # The cards stay, with their counts.
    expect(page.locator(".workspace-card")).to_have_count(2)
    expect(page.locator(".workspace-card", has_text="Payments")).to_contain_text("You are viewer")
    # The sample-ratio warning of the stand-in's broken split, on its row.
    broken = rows(page).filter(has_text=MISMATCH).filter(has_text="Growth")
    expect(broken.locator('td[data-label="Sample ratio"]')).to_have_text("Mismatch: check the split")

    # One workspace, through htmx, with the address saying so.
    page.get_by_label("Workspace").select_option(label="Payments")
    expect(page).to_have_url(re.compile(rf"\?workspace={scene['other'].pk}$"))
    expect(rows(page).first).to_contain_text("Payments")
    assert set(column(page, "Workspace")) == {"Payments"}
    assert "Homepage wallet (Payments)" in column(page, "Experiment")

    # A search across every workspace again.
    page.get_by_label("Workspace").select_option(label="All your workspaces")
    page.get_by_label("Search").fill("homepage")
    expect(page).to_have_url(re.compile(r"\?q=homepage$"))
    expect(rows(page)).to_have_count(2)
    assert sorted(column(page, "Experiment")) == ["Homepage hero (Growth)", "Homepage wallet (Payments)"]
    expect(page.locator("#home-summary")).to_contain_text("2 active experiments in your workspaces matching")
    assert page.evaluate("window.__noReload") is True

    # The address is shareable: opened anew, it shows the same.
    page.goto(live_server.url + f"/?workspace={scene['workspace'].pk}&q=homepage")
    assert column(page, "Experiment") == ["Homepage hero (Growth)"]
    expect(page.get_by_label("Search")).to_have_value("homepage")
    expect(page.get_by_label("Workspace")).to_have_value(str(scene["workspace"].pk))

    # A row leads to its experiment page.
    rows(page).first.get_by_role("link", name="Homepage hero (Growth)").click()
    expect(page.locator("article h1")).to_contain_text("Homepage hero (Growth)")


def test_filters_work_without_javascript(browser: Browser, live_server, scene):
    context = browser.new_context(java_script_enabled=False, viewport=LAPTOP)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/")
        page.get_by_label("Username").fill("pat")
        page.get_by_label("Password").fill("pw-pat")
        page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
        expect(page.get_by_role("heading", name="Active experiments")).to_be_visible()
        page.get_by_label("Workspace").select_option(label="Growth")
        page.get_by_label("Search").fill("hero")
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(rf"\?workspace={scene['workspace'].pk}&q=hero$"))
        assert column(page, "Experiment") == ["Homepage hero (Growth)"]
        assert column(page, "Owner") == ["Gail"]
    finally:
        context.close()


def test_the_keyboard_reaches_the_filters_and_the_rows(page: Page, live_server, scene):
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url)
    page.get_by_label("Search").focus()
    page.keyboard.type("wallet")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?q=wallet$"))
    expect(rows(page)).to_have_count(1)
    # Tab from the search box: the Show button, then the row's link.
    page.get_by_label("Search").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Show")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Homepage wallet (Payments)")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("article h1")).to_contain_text("Homepage wallet (Payments)")


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["1440px", "390px"])
def test_the_page_fits_a_laptop_and_a_phone(page: Page, live_server, scene, viewport):
    page.set_viewport_size(viewport)
    log_in(page, live_server.url)
    expect(rows(page).first).to_be_visible()
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"
    widest = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('#home-results tbody td'))"
        ".map(td => td.getBoundingClientRect().right))"
    )
    assert widest <= viewport["width"], f"a cell ends at {widest}px"
    if viewport is PHONE:
        # Each row is a card: the name on a line of its own, then the facts, each named.
        first = rows(page).first
        name, workspace = first.locator("td.name"), first.locator('td[data-label="Workspace"]')
        assert workspace.bounding_box()["y"] >= name.bounding_box()["y"] + name.bounding_box()["height"] - 1
        label = workspace.evaluate("td => getComputedStyle(td, '::before').content")
        assert "Workspace" in label
