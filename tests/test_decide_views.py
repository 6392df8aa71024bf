"""The "Record the decision" button, dialog and view: who is offered it, what each answer looks like."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.urls import reverse

from experiments.models import AttemptAction, ConclusionAttempt
from experiments.services import decisions
from tests import fake_mixpanel
from tests.factories import make_attempt
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, raw_experiment

HTMX = {"HTTP_HX_REQUEST": "true"}
NOTE = "Green converts better; shipping it."


@pytest.fixture
def fake(monkeypatch, settings):
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 0
    concluded = raw_experiment(status="concluded", end_date="2026-11-20T10:00:00Z")
    return fake_mixpanel.install(monkeypatch, FakeMixpanel({1001: [concluded]}))


def decide_url(workspace):
    return reverse("experiments:experiment-decide", args=[workspace.pk, EXP_ID])


def detail_url(workspace):
    return reverse("experiments:experiment-detail", args=[workspace.pk, EXP_ID])


@pytest.mark.django_db
def test_a_concluded_experiment_offers_the_decision_to_a_concluder(pm_client, workspace, fake):
    page = pm_client.get(detail_url(workspace)).content.decode()
    assert ">Record the decision</a>" in page
    assert 'id="decide-dialog"' in page
    assert "Not decided yet" in page


@pytest.mark.django_db
def test_a_viewer_is_offered_no_decision_and_gets_a_readable_403(client, teammate, workspace, fake):
    client.force_login(teammate)
    page = client.get(detail_url(workspace)).content.decode()
    assert "Record the decision</a>" not in page
    assert 'id="decide-dialog"' not in page
    for response in (client.get(decide_url(workspace)), client.post(decide_url(workspace), {"note": NOTE})):
        assert response.status_code == 403
        assert "Only concluders and admins of Growth can record decisions" in response.content.decode()
    posted = client.post(decide_url(workspace), {"decision": "none", "note": NOTE}, **HTMX)
    assert posted.status_code == 403
    assert fake.patches == []
    assert not ConclusionAttempt.objects.exists()


@pytest.mark.django_db
def test_the_dialog_offers_one_choice_per_variant_and_ship_none(pm_client, workspace, fake):
    body = pm_client.get(decide_url(workspace), **HTMX).content.decode()
    assert 'value="variant:control"' in body
    assert "Ship variant control" in body
    assert "Ship variant green" in body
    assert 'value="none"' in body
    assert "Keep control (ship none)" in body
    assert "<html" not in body  # the dialog's content only


@pytest.mark.django_db
def test_each_choice_says_what_mixpanel_records_with_exposures_and_lift(pm_client, workspace, monkeypatch, settings):
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 0
    results = {"metrics": [{"name": "Conversion", "variants": {"green": {"lift": 0.034, "p_value": 0.01}}}]}
    concluded = raw_experiment(status="concluded", end_date="2026-11-20T10:00:00Z", results_cache=results)
    fake_mixpanel.install(monkeypatch, FakeMixpanel({1001: [concluded]}))
    body = pm_client.get(decide_url(workspace), **HTMX).content.decode()
    labels = re.findall(r'name="decision" value="([^"]+)"', body)
    # Keeping control comes before shipping control, which Mixpanel records as a success.
    assert labels == ["variant:green", "none", "variant:control"]
    green, keep, control = re.findall(r'<p class="small muted" id="decide-choice-\d">(.*?)</p>', body, re.S)
    assert "Mixpanel records a success, with green as the winning variant." in green
    assert "118 exposures · lift +0.034 on Conversion" in green
    assert "Mixpanel records a fail: no variant beat control, none ships." in keep
    assert "120 exposures" in keep
    assert "Mixpanel records a success, with control as the winning variant." in control
    assert "choose Keep control (ship none) instead" in control


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"decision": "variant:green", "note": "  "}, "Write a note saying why"),
        ({"note": NOTE}, "Choose a variant to ship, or ship none."),
        ({"decision": "variant:blue", "note": NOTE}, "Choose one of the listed options."),
    ],
)
def test_an_incomplete_decision_stays_in_the_dialog(pm_client, workspace, fake, data, error):
    response = pm_client.post(decide_url(workspace), data, **HTMX)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert response["HX-Retarget"] == "#decide-body"
    assert fake.patches == []


@pytest.mark.django_db
def test_recording_the_decision_updates_the_page_in_place(pm_client, workspace, fake):
    response = pm_client.post(decide_url(workspace), {"decision": "variant:green", "note": NOTE}, **HTMX)
    html = response.content.decode()
    assert fake.patch_bodies == [{"success": True, "variant": "green", "message": NOTE}]
    assert html.lstrip().startswith('<section id="conclude-section"')
    assert "Ship variant green: recorded by Pat (pat) at" in html
    assert "data-focus-after-swap" in html
    header = html[html.index('id="experiment-header" hx-swap-oob="true"') :]
    assert '<span class="badge status-success">success</span>' in header[: header.index("</header>")]
    assert (
        '<dialog id="decide-dialog" class="conclude-dialog" aria-labelledby="decide-title" hx-swap-oob="true">' in html
    )
    assert ">Record the decision</a>" not in html  # decided: no second offer
    assert "Decision recorded" in response["HX-Trigger"]
    attempt = ConclusionAttempt.objects.get()
    assert attempt.action == AttemptAction.DECISION


@pytest.mark.django_db
def test_without_javascript_the_decision_redirects_with_a_message(pm_client, workspace, fake):
    response = pm_client.post(decide_url(workspace), {"decision": "none", "note": NOTE}, follow=True)
    assert response.redirect_chain[-1][0] == detail_url(workspace)
    assert "Decision recorded" in response.content.decode()
    assert fake.patch_bodies == [{"success": False, "variant": "", "message": NOTE}]


@pytest.mark.django_db
def test_the_list_shows_days_running_and_the_decision(pm_client, workspace, fake):
    pm_client.post(decide_url(workspace), {"decision": "variant:green", "note": NOTE})
    page = pm_client.get(reverse("experiments:experiment-list", args=[workspace.pk])).content.decode()
    assert re.search(r'<th scope="col" class="num" aria-sort="none"><a [^>]*>Days running<', page)
    assert '<th scope="col">Decision</th>' in page
    assert '<td data-label="Decision" class="decision">Ship variant green</td>' in page
    # Started 2026-11-01, concluded 2026-11-20: 19 days.
    assert '<td data-label="Days running" class="num">19</td>' in page


def _body(response) -> str:
    return b"".join(response.streaming_content).decode("utf-8")


@pytest.mark.django_db
def test_decisions_are_in_the_audit_list_filter_detail_and_both_exports(client, pm, auditor, workspace, fake):
    make_attempt(workspace=workspace, actor=pm, experiment_id="other-exp")  # a conclusion
    decided = decisions.experiment_decide(
        workspace=workspace,
        user=pm,
        experiment_id=EXP_ID,
        experiment_name="Checkout",
        variant="green",
        note=NOTE,
        client=fake,
    ).attempt
    client.force_login(auditor)
    audit = reverse("experiments:audit-list")

    everything = client.get(audit).content.decode()
    assert "Force conclude" in everything
    assert "Ship variant green" in everything
    only = client.get(audit, {"action": "decision"}).content.decode()
    assert f'href="/audit/{decided.pk}/"' in only
    assert "other-exp" not in only
    assert "other-exp" in client.get(audit, {"action": "conclusion"}).content.decode()
    assert client.get(audit, {"action": "bogus"}).status_code == 200  # a readable answer, not a 500

    detail = client.get(reverse("experiments:audit-detail", args=[decided.pk])).content.decode()
    assert "Decision on Checkout" in detail
    assert "Ship variant <code>green</code>" in detail
    assert NOTE in detail
    assert "Decision requested" in detail
    assert "Decision succeeded" in detail

    export = reverse("experiments:audit-export", args=["csv"])
    rows = list(csv.DictReader(io.StringIO(_body(client.get(export, {"action": "decision"})), newline="")))
    assert [(r["attempt_id"], r["action"]) for r in rows] == [(str(decided.pk), "decision")]
    assert json.loads(rows[0]["request_body"]) == {"success": True, "variant": "green", "message": NOTE}
    lines = _body(client.get(reverse("experiments:audit-export", args=["ndjson"]))).splitlines()
    assert sorted(json.loads(line)["action"] for line in lines) == ["conclusion", "decision"]
