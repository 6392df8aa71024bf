"""The experiment page (issue 4): facts, opaque JSON, Mixpanel link, attempts, failures."""

from __future__ import annotations

import datetime as dt
import html as htmllib

import pytest
from django.urls import reverse

from experiments import mixpanel
from experiments.models import AttemptState, ConclusionAttempt, ReasonCategory, Region, Workspace
from tests.factories import session_queries
from tests.fake_list_client import FakeClient, exp_json, install

EXP = "00000000-0000-4000-8000-000000000001"


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch, FakeClient([exp_json(1, "active"), exp_json(2, "concluded")]))


def detail_url(workspace, experiment_id: str = EXP) -> str:
    return reverse("experiments:experiment-detail", args=[workspace.pk, experiment_id])


def get(client, workspace, experiment_id: str = EXP, status: int = 200) -> str:
    response = client.get(detail_url(workspace, experiment_id))
    assert response.status_code == status, response.content.decode()[:2000]
    return response.content.decode()


@pytest.mark.django_db
def test_page_shows_the_experiments_facts(pm_client, workspace, fake):
    page = get(pm_client, workspace)
    for text in (
        "<h1>Experiment 00001</h1>",
        "Green buttons convert better",  # hypothesis
        "A test of the checkout button",  # description
        "2026-01-02 09:00 UTC",  # start
        "Casey Creator &lt;casey@example.com&gt;",
        "Morgan Modifier",
        '<span class="tag">growth</span>',
        "210 in total",
        "Variants (2)",
        "<summary>control</summary>",
        "<summary>green</summary>",
        "Metrics (1)",
        "<summary>Checkout rate</summary>",
        "checkout-green",  # feature flag, as JSON
        '<span class="badge status-active">active</span>',
        "just now from Mixpanel",
    ):
        assert text in page, text
    assert fake.get_calls == [EXP]


@pytest.mark.django_db
def test_fresh_read_adds_what_the_list_left_out(pm_client, workspace, fake):
    fake.details[EXP] = exp_json(1, "active", hypothesis="Only the full read has this hypothesis")
    assert "Only the full read has this hypothesis" in get(pm_client, workspace)


@pytest.mark.django_db
def test_failed_fresh_read_falls_back_to_the_list_copy(pm_client, workspace, fake):
    fake.get_error = mixpanel.MixpanelUnavailable("Mixpanel timed out.")
    page = get(pm_client, workspace)
    assert "<h1>Experiment 00001</h1>" in page
    assert "Showing the copy from the experiment list" in page
    assert "Mixpanel timed out." in page
    assert "from the cached experiment list" in page


@pytest.mark.django_db
def test_fresh_read_answering_for_another_id_is_not_trusted(pm_client, workspace, fake):
    fake.details[EXP] = exp_json(2, "concluded", name="Somebody else")
    page = get(pm_client, workspace)
    assert "Somebody else" not in page
    assert "different experiment" in page


@pytest.mark.django_db
def test_opaque_json_is_pretty_printed_and_escaped(pm_client, workspace, monkeypatch):
    item = exp_json(
        1,
        "active",
        settings={"flag": {"rollout": [10, 90]}, "note": "</pre><script>alert(1)</script>"},
        results_cache={"lift": 0.12},
    )
    install(monkeypatch, FakeClient([item]))
    page = get(pm_client, workspace)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Indented by json.dumps(indent=2), inside <details>.
    assert '"rollout": [\n      10,\n      90\n    ]' in htmllib.unescape(page)
    assert "<details><summary>Results cache</summary><pre>" in page


@pytest.mark.django_db
def test_null_and_unexpected_shapes_never_crash_the_page(pm_client, workspace, monkeypatch):
    weird = {
        "id": EXP,
        "name": None,
        "status": "active",
        "description": None,
        "hypothesis": 42,
        "start_date": "not a date",
        "end_date": 17,
        "created": None,
        "tags": "not-a-list",
        "creator_name": ["a", "list"],
        "variants": "control,green",
        "metrics": [None, 3, {"deep": [{"deeper": {"x": None}}]}, "plain"],
        "settings": [1, 2, 3],
        "exposures_cache": "n/a",
        "results_cache": {"nested": {"list": [1, {"a": True}]}},
        "feature_flag": 7,
        "unexpected_extra_field": {"whatever": True},
    }
    install(monkeypatch, FakeClient([weird]))
    page = get(pm_client, workspace)
    assert "(no name)" in page
    assert "Variants (0)" in page
    assert "Metrics (4)" in page
    assert "<summary>plain</summary>" in page
    assert "unexpected_extra_field" in page  # in "Everything, as received"
    assert "not started" in page


@pytest.mark.django_db
def test_list_with_null_and_unexpected_shapes_renders(pm_client, workspace, monkeypatch):
    weird = {"id": EXP, "status": "active", "name": None, "tags": None, "variants": {"a": 1}, "exposures_cache": []}
    install(monkeypatch, FakeClient([weird, exp_json(2, "draft")]))
    response = pm_client.get(reverse("experiments:experiment-list", args=[workspace.pk]))
    assert response.status_code == 200
    assert "(no name)" in response.content.decode()


@pytest.mark.django_db
def test_mixpanel_link_uses_the_workspaces_region_and_project(pm_client, workspace, fake):
    page = get(pm_client, workspace)
    assert f'href="https://mixpanel.com/project/77/view/1001/app/experiments/{EXP}"' in page


@pytest.mark.django_db
def test_eu_workspace_links_to_the_eu_host(client, pm, monkeypatch):
    eu = Workspace.objects.create(name="Europe", region=Region.EU, mixpanel_workspace_id=3003, mixpanel_project_id=9)
    from experiments.models import Membership, Role

    Membership.objects.create(user=pm, workspace=eu, role=Role.VIEWER)
    install(monkeypatch, FakeClient([exp_json(1, "active")]))
    client.force_login(pm)
    assert "https://eu.mixpanel.com/project/9/view/3003/app/experiments/" in get(client, eu)


@pytest.mark.django_db
def test_no_mixpanel_link_without_a_project_id(pm_client, workspace, fake):
    workspace.mixpanel_project_id = None
    workspace.save()
    assert "Open in Mixpanel" not in get(pm_client, workspace)


@pytest.mark.django_db
def test_experiment_the_list_does_not_hold_is_404(pm_client, workspace, fake):
    get(pm_client, workspace, "not-in-this-workspace", status=404)
    assert fake.get_calls == []  # never asked Mixpanel about an id outside the workspace's list


@pytest.mark.django_db
def test_outsider_gets_404(client, outsider, workspace, fake):
    client.force_login(outsider)
    get(client, workspace, status=404)
    assert fake.list_calls == 0


@pytest.mark.django_db
def test_no_list_copy_is_a_readable_503_not_a_500(pm_client, workspace, fake):
    fake.list_error = mixpanel.MixpanelUnavailable("Mixpanel is unavailable right now (HTTP 502).")
    page = get(pm_client, workspace, status=503)
    assert "could not be read from Mixpanel, and there is no earlier copy" in page
    assert "HTTP 502" in page


@pytest.mark.django_db
def test_conclusion_attempts_are_listed_with_links_to_the_audit(pm_client, pm, workspace, fake):
    older = ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=EXP,
        experiment_name="Experiment 00001",
        actor=pm,
        actor_name="Pat",
        reason_category=ReasonCategory.BROKEN,
        reason_text="Tracking <b>broke</b>",
        end_date=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        state=AttemptState.FAILED,
        failure_reason="Mixpanel is rate limiting us.",
        http_status=429,
    )
    newer = ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=EXP,
        experiment_name="Experiment 00001",
        actor=pm,
        actor_name="Pat",
        reason_category=ReasonCategory.BUSINESS,
        reason_text="Launch moved",
        end_date=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
        state=AttemptState.SUCCEEDED,
        http_status=200,
    )
    ConclusionAttempt.objects.create(  # another experiment: not listed
        workspace=workspace,
        experiment_id="other",
        actor=pm,
        actor_name="Pat",
        reason_category=ReasonCategory.OTHER,
        end_date=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
    )
    page = get(pm_client, workspace)
    assert page.index(f"#{newer.pk}<") < page.index(f"#{older.pk}<")  # newest first
    assert reverse("experiments:audit-detail", args=[older.pk]) in page
    assert reverse("experiments:audit-detail", args=[newer.pk]) in page
    assert "Tracking &lt;b&gt;broke&lt;/b&gt;" in page
    assert "Failed (HTTP 429)" in page
    assert "Mixpanel is rate limiting us." in page
    assert "Succeeded (HTTP 200)" in page
    assert page.count('<td data-label="Attempt">') == 2


@pytest.mark.django_db
def test_page_without_attempts_says_so(pm_client, workspace, fake):
    assert "No one has tried to conclude it from this dashboard." in get(pm_client, workspace)


@pytest.mark.django_db
def test_script_tag_names_are_inert_on_the_page(pm_client, workspace, monkeypatch):
    evil = "<script>alert(1)</script>"
    install(monkeypatch, FakeClient([exp_json(1, "active", name=evil, description=evil, tags=[evil])]))
    page = get(pm_client, workspace)
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.django_db
def test_query_count_is_fixed(client, pm, workspace, fake, django_assert_num_queries):
    ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=EXP,
        actor=pm,
        actor_name="Pat",
        reason_category=ReasonCategory.OTHER,
        end_date=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
    )
    client.force_login(pm)
    get(client, workspace)
    # user, membership, claim, attempts, team bookmark (star) (+ the session without Redis)
    with django_assert_num_queries(5 + session_queries()):
        get(client, workspace)
