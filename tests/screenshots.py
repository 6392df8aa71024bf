"""`make screenshots`: the README's tour, taken from a live dashboard over the Mixpanel stand-in.

Runs everything it needs and removes it afterwards: a throwaway SQLite database in a
temporary folder, the stand-in (in this process, with `make run`'s demo data), the demo
users, and `manage.py runserver` on a free port. Chromium (/usr/bin/chromium, through
Playwright) signs in as the demo concluder and as the demo admin. The concluder force
concludes one experiment, tries a "[demo fault]" one and one whose answer gets lost (no
worker runs, so its row keeps waiting) and asks for approval twice in Search & Discovery;
the admin approves one request from the home page's inbox. Then every screen is
photographed at 1440 px and 390 px: home with the inbox, the list, a waiting row, an
experiment, both dialogs, a request as its requester sees it, the approver's view, the
settings, the audit list and one attempt. The PNGs go to docs/screenshots/, reduced to 256
colours (Pillow) so the tour stays small; desktop shots are also scaled to 1080 px wide.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
WIDTHS = {"desktop": (1440, 900), "phone": (390, 844)}
DESKTOP_SCALED_WIDTH = 1080
MISMATCH = "one-page checkout (exposures off the planned split)"
# The stand-in's demo fault whose answer is lost: its row waits for Mixpanel.
LOST_ANSWER = "[demo fault] Mixpanel applies the change"
TIMEOUT_MS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback server
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the dashboard did not answer at {url} within {seconds:.0f} s")


def shrink(path: Path, *, width: int | None) -> None:
    """Fewer bytes for the README: optional downscale, then a 256-colour palette."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if width and image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def shoot(page: Any, name: str, width: str) -> Path:
    path = OUT / f"{name}-{width}.png"
    page.wait_for_timeout(300)  # let the indicators' fade settle
    page.screenshot(path=str(path))
    shrink(path, width=DESKTOP_SCALED_WIDTH if width == "desktop" else None)
    print(f"  {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")
    return path


def log_in(browser: Any, base: str, username: str) -> Any:
    """A page of a new browser context, signed in as the demo user `username`."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"demo-{username}")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("main h1")).to_be_visible()
    return page


def tour(base: str, standin: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    growth, search = 1001, 3003
    mismatch = next(e for e in standin.experiments(growth) if MISMATCH in e["name"])
    plain = [e for e in standin.experiments(growth) if e["status"] == "active" and "[" not in e["name"]]
    fault = standin.find(growth, demo_fault=True)
    lost = next(e for e in standin.experiments(growth) if e["name"].startswith(LOST_ANSWER))
    asked = [e for e in standin.experiments(search) if e["status"] == "active" and "[" not in e["name"]][:2]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        concluder = log_in(browser, base, "concluder")
        growth_url = concluder.get_by_role("link", name="Growth").first.get_attribute("href")
        search_url = concluder.get_by_role("link", name="Search & Discovery").first.get_attribute("href")

        # Something on every screen: one force concluded, one refused by Mixpanel, one whose
        # answer got lost (a waiting row), and two requests for approval in Search & Discovery.
        for exp in (plain[0], fault, lost):
            concluder.goto(f"{base}{growth_url}experiments/{exp['id']}/")
            press(concluder, expect)
        for exp in asked:
            concluder.goto(f"{base}{search_url}experiments/{exp['id']}/")
            press(concluder, expect)
        admin = log_in(browser, base, "admin")
        item = admin.locator("#needs-approval .inbox-item").first
        item.get_by_role("textbox").fill("Numbers checked; go ahead.")
        item.get_by_role("button", name=re.compile("^Approve")).click()
        expect(admin.locator("#needs-approval .inbox-item .success")).to_be_visible()

        for width, (w, h) in WIDTHS.items():
            for page in (concluder, admin):
                page.set_viewport_size({"width": w, "height": h})
            admin.goto(base + "/")
            shoot(admin, "home", width)
            concluder.goto(base + growth_url)
            expect(concluder.locator("#results")).to_be_visible()
            shoot(concluder, "list", width)
            concluder.goto(f"{base}{growth_url}?status=concluding")
            expect(concluder.locator("#results a.chip").first).to_be_visible()
            shoot(concluder, "waiting", width)
            concluder.goto(f"{base}{growth_url}experiments/{mismatch['id']}/")
            shoot(concluder, "experiment", width)
            concluder.goto(f"{base}{growth_url}experiments/{plain[1]['id']}/")
            concluder.locator("[data-open-dialog=force-conclude-dialog]").click()
            expect(concluder.locator("#force-conclude-form")).to_be_visible()
            concluder.get_by_label("Reason").select_option(index=1)
            concluder.get_by_label("In your own words").fill("The treatment is clearly ahead; the team agreed to stop.")
            shoot(concluder, "dialog", width)
            concluder.keyboard.press("Escape")
            concluder.goto(f"{base}{growth_url}experiments/{plain[0]['id']}/")
            concluder.get_by_role("link", name="Record the decision").click()
            expect(concluder.locator("#decide-form")).to_be_visible()
            shoot(concluder, "decide", width)
            concluder.keyboard.press("Escape")
            concluder.goto(f"{base}{search_url}?status=awaiting")
            expect(concluder.locator("#results a.chip").first).to_be_visible()
            shoot(concluder, "request", width)
            admin.goto(f"{base}{search_url}experiments/{asked[1]['id']}/#conclude-section")
            expect(admin.locator("#conclude-section")).to_contain_text("Awaiting approval")
            shoot(admin, "approval", width)
            admin.goto(f"{base}{growth_url}settings/")
            shoot(admin, "settings", width)
            concluder.goto(base + "/audit/")
            shoot(concluder, "audit", width)
            concluder.locator("td[data-label=When] a").first.click()
            expect(concluder.locator(".timeline")).to_be_visible()
            shoot(concluder, "attempt", width)
        browser.close()


def press(page: Any, expect: Any) -> None:
    """Force conclude (or ask for approval of) the experiment on the page, and wait for the answer."""
    page.locator("[data-open-dialog=force-conclude-dialog]").click()
    expect(page.locator("#force-conclude-form")).to_be_visible()
    page.get_by_label("Reason").select_option(index=1)
    page.get_by_label("In your own words").fill("Clear result after two weeks.")
    page.locator("#force-conclude-submit").click()
    expect(page.locator("#conclude-section [data-focus-after-swap], #conclude-section p[role]").first).to_be_visible()


def main() -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"screenshots need Chromium at {CHROMIUM} (apt-get install -y chromium)")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="desk-screenshots-") as tmp:
        port, standin_port = free_port(), free_port()
        env = {
            **os.environ,
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
            "MIXPANEL_API_BASE_URL": f"http://127.0.0.1:{standin_port}",
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "demo.stand-in",
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": "demo-stand-in-not-a-secret",
            "DJANGO_LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        os.environ.update({k: env[k] for k in ("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "MIXPANEL_SERVICE_ACCOUNT_SECRET")})
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
        os.environ["DJANGO_DEBUG"] = "1"
        import django

        django.setup()
        from experiments.standin import StandIn

        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT)
        subprocess.run([*manage, "seed_demo"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        standin = StandIn(port=standin_port, log=None).start()
        server = subprocess.Popen(
            [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(base + "/healthz")
            print(f"Taking screenshots into {OUT.relative_to(ROOT)}/")
            tour(base, standin)
        finally:
            server.terminate()
            server.wait(timeout=10)
            standin.stop()
    total = sum(p.stat().st_size for p in OUT.glob("*.png"))
    print(f"{len(list(OUT.glob('*.png')))} screenshots, {total // 1024} KB in all")


if __name__ == "__main__":
    main()
