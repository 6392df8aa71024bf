"""The experiment page: what a person deciding needs, read by id, tolerant of every shape Mixpanel may send."""

from __future__ import annotations

import datetime as dt
import html as htmllib
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel.errors import MixpanelUnavailable
from experiments.models import AttemptState, ConclusionAttempt, ReasonCategory, Region, Workspace
from tests.factories import session_queries
from tests.fake_mixpanel import FakeMixpanel, exp_json, install

EXP = "00000000-0000-4000-8000-000000000001"
CONCLUDE_BUTTON = 'data-open-dialog="force-conclude-dialog"'


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch, FakeMixpanel([exp_json(1, "active"), exp_json(2, "concluded")]))


def detail_url(workspace, experiment_id: str = EXP) -> str:
    return reverse("experiments:experiment-detail", args=[workspace.pk, experiment_id])


def get(client, workspace, experiment_id: str = EXP, status: int = 200) -> str:
    response = client.get(detail_url(workspace, experiment_id))
    assert response.status_code == status, response.content.decode()[:2000]
    return response.content.decode()


def show(client, workspace, monkeypatch, **fields) -> str:
    """The page of one active experiment whose fields are replaced by `fields`."""
    install(monkeypatch, FakeMixpanel([exp_json(1, "active", **fields)]))
    return get(client, workspace)


def text_of(page: str) -> str:
    """The page's text with tags dropped and whitespace collapsed, for assertions on what people read."""
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.mark.django_db
def test_page_leads_with_status_running_time_owner_tags_and_mixpanel_link(pm_client, workspace, fake):
    page = get(pm_client, workspace)
    header = page[
        page.index('<header class="experiment-header') : page.index("</header>", page.index("experiment-header"))
    ]
    assert "<h1>Experiment 00001</h1>" in header
    assert '<span class="badge status-active">active</span>' in header
    assert re.search(r"<dt>Running</dt>\s*<dd>[\d,]+ days", header)
    assert "Casey Creator" in header
    assert "&lt;casey@example.com&gt;" in header
    assert '<span class="tag">growth</span>' in header
    assert f'href="https://mixpanel.com/project/77/view/1001/app/experiments/{EXP}"' in header


@pytest.mark.django_db
def test_page_reads_the_experiment_by_id_not_from_the_list(pm_client, workspace, fake):
    fake.details[EXP] = exp_json(1, "active", hypothesis="Only the full read has this hypothesis")
    page = get(pm_client, workspace)
    assert "Only the full read has this hypothesis" in page
    assert fake.get_calls == [EXP]
    assert fake.list_calls == 0


@pytest.mark.django_db
def test_variants_table_shows_split_exposures_and_share_with_thousands_separators(pm_client, workspace, monkeypatch):
    variants = [{"key": "control", "name": "Control", "split": 50}, {"key": "green", "split": 50}]
    page = show(pm_client, workspace, monkeypatch, variants=variants, exposures_cache={"control": 5120, "green": 5089})
    text = text_of(page)
    assert "control Control 50 % 5,120 50.2 %" in text
    assert "green 50 % 5,089 49.8 %" in text
    assert "Total 100 % 10,209 100 %" in text
    assert "<summary>control</summary>" not in page  # a table, not JSON
    assert "Exposures are consistent with the planned split" in page
    assert 'role="alert"' not in page


@pytest.mark.django_db
def test_sample_ratio_mismatch_is_announced_with_its_numbers_before_the_conclude_button(
    pm_client, workspace, monkeypatch
):
    variants = [{"key": "control", "split": 50}, {"key": "green", "split": 50}]
    page = show(pm_client, workspace, monkeypatch, variants=variants, exposures_cache={"control": 10412, "green": 9311})
    warning = page[page.index('<div class="srm-warning"') : page.index("</div>\n", page.index("srm-warning"))]
    assert 'role="alert"' in warning
    assert "Sample ratio mismatch" in warning
    text = text_of(page)
    assert "control 10,412 9,861.5 550.5" in text
    assert "green 9,311 9,861.5 -550.5" in text
    assert "Chi-square 61.46 with 1 degree of freedom; p = 4.5e-15" in text
    assert page.index("Sample ratio mismatch") < page.index(CONCLUDE_BUTTON)


@pytest.mark.django_db
def test_page_with_a_results_cache_of_an_unknown_shape_renders(pm_client, workspace, monkeypatch):
    results = {
        "computed_at": "2026-11-28T10:00:00Z",
        "metrics": [
            {"name": "Checkout rate", "variants": {"green": {"lift": 0.034, "p_value": 0.0004, "significant": True}}},
            {"name": "Revenue", "lift": "-1.2%", "confidence_interval": [-0.05, 0.01], "significance": None},
        ],
        "odd": [1, [2, {"x": None}], "three"],
        "huge_number": 10**40,
        "long_text": "x" * 5000,
        "nothing": None,
    }
    page = show(pm_client, workspace, monkeypatch, results_cache=results)
    text = text_of(page)
    assert "Checkout rate · green +0.034 < 0.001 — yes" in text
    assert "Revenue -1.2% — -0.05 to 0.01 —" in text
    assert "computed_at 2026-11-28T10:00:00Z" in text
    assert "huge_number 10,000,000,000,000,000,000,000,000,000,000,000,000,000" in text
    results_text = text_of(page[page.index('id="results-heading"') : page.index('id="conclude-section"')])
    assert "x" * 299 + "…" in results_text
    assert "x" * 301 not in results_text
    assert "nothing —" in text
    assert "odd · #2 · #1 2" in text


@pytest.mark.parametrize(
    "results_cache",
    [
        [],
        "just text",
        42,
        3.5,
        True,
        [None, 1, "a", [], {}],
        [{"lift": {"nested": {"too": "deep"}}}],
        {"lift": {"a": 0.02, "b": [1, 2]}},
        {"p-value": float("nan"), "Confidence": float("inf")},
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}},
        {str(n): n for n in range(500)},
        {"metrics": {"m": [{"lift": 0.1}] * 300}},
    ],
)
@pytest.mark.django_db
def test_page_never_fails_on_a_results_cache_shape(pm_client, workspace, monkeypatch, results_cache):
    page = show(pm_client, workspace, monkeypatch, results_cache=results_cache)
    assert '<h2 id="results-heading">Results so far</h2>' in page


@pytest.mark.django_db
def test_cut_off_results_say_where_the_rest_is(pm_client, workspace, monkeypatch):
    page = show(pm_client, workspace, monkeypatch, results_cache={str(n): n for n in range(250)})
    assert "150 more values not shown here" in page


@pytest.mark.parametrize("results_cache", [{}, None, {"metrics": []}])
@pytest.mark.django_db
def test_page_with_an_empty_results_cache_says_there_are_no_results_yet(
    pm_client, workspace, monkeypatch, results_cache
):
    page = show(pm_client, workspace, monkeypatch, results_cache=results_cache)
    assert "Mixpanel has no cached results for this experiment yet." in page


@pytest.mark.django_db
def test_metrics_are_a_table(pm_client, workspace, monkeypatch):
    metrics = [{"name": "Checkout rate", "type": "funnel", "is_primary": True, "id": 7}, "bare", None]
    page = show(pm_client, workspace, monkeypatch, metrics=metrics)
    text = text_of(page)
    assert "Metrics (3)" in text
    assert "Checkout rate funnel yes id: 7" in text
    assert "bare — — —" in text
    assert "Metric 3 — — —" in text


@pytest.mark.django_db
def test_tables_have_captions_and_header_cells(pm_client, workspace, monkeypatch):
    variants = [{"key": "control", "split": 50}, {"key": "green", "split": 50}]
    page = show(
        pm_client,
        workspace,
        monkeypatch,
        variants=variants,
        exposures_cache={"control": 10412, "green": 9311},
        results_cache={"lift": 0.1},
    )
    tables = re.findall(r"<table.*?</table>", page, flags=re.S)
    assert len(tables) == 4  # variants, the mismatch, results, metrics (no attempts yet)
    for table in tables:
        assert "<caption>" in table
        assert '<th scope="col"' in table
        assert '<th scope="row"' in table


@pytest.mark.django_db
def test_raw_json_is_collapsed_at_the_bottom_and_escaped(pm_client, workspace, monkeypatch):
    settings_json = {"flag": {"rollout": [10, 90]}, "note": "</pre><script>alert(1)</script>"}
    page = show(pm_client, workspace, monkeypatch, settings=settings_json, results_cache={"lift": 0.12})
    assert "<script>alert(1)</script>" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '"rollout": [\n      10,\n      90\n    ]' in htmllib.unescape(page)
    assert '<details><summary>Results cache</summary><pre tabindex="0">' in page
    assert "<details open" not in page
    assert page.index('id="raw-heading"') > page.index('id="conclude-section"')
    assert page.index('id="raw-heading"') > page.index('id="metrics-heading"')


@pytest.mark.django_db
def test_upstream_text_in_variants_results_and_metrics_is_escaped(pm_client, workspace, monkeypatch):
    evil = "<script>alert(1)</script>"
    page = show(
        pm_client,
        workspace,
        monkeypatch,
        name=evil,
        tags=[evil],
        variants=[{"key": evil, "name": evil, "split": "50%"}, {"key": "b", "split": "50%"}],
        exposures_cache={evil: 10, "b": 12, "c" + evil: 3},
        results_cache={evil: {"lift": evil}, "note": evil},
        metrics=[{"name": evil, "type": evil, evil: evil}],
        creator_name=evil,
    )
    assert evil not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10


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
    install(monkeypatch, FakeMixpanel([weird]))
    page = get(pm_client, workspace)
    text = text_of(page)
    assert "(no name)" in page
    assert "Mixpanel lists no variants for this experiment." in page
    assert "Metrics (4)" in text
    assert "plain — — —" in text
    assert "unexpected_extra_field" in page  # in "Everything, as received"
    assert "not started" in page
    assert "nested · list · #2 · a yes" in text


@pytest.mark.django_db
def test_failed_read_is_a_readable_page_not_a_500(pm_client, workspace, fake):
    fake.get = MixpanelUnavailable("Mixpanel timed out.")
    page = get(pm_client, workspace, status=503)
    assert "This experiment cannot be shown right now" in page
    assert "Mixpanel timed out." in page
    assert f'<a href="{detail_url(workspace)}">Try again</a>' in page
    assert fake.list_calls == 0


@pytest.mark.django_db
def test_read_answering_for_another_id_is_not_trusted(pm_client, workspace, fake):
    fake.details[EXP] = exp_json(2, "concluded", name="Somebody else")
    page = get(pm_client, workspace, status=503)
    assert "Somebody else" not in page
    assert "different experiment" in page


@pytest.mark.django_db
def test_an_id_mixpanel_does_not_have_in_this_workspace_is_404(pm_client, workspace, fake):
    get(pm_client, workspace, "not-in-this-workspace", status=404)
    assert fake.get_calls == ["not-in-this-workspace"]


@pytest.mark.django_db
def test_an_id_longer_than_any_experiment_id_is_404_without_asking_mixpanel(pm_client, workspace, fake):
    get(pm_client, workspace, "x" * 101, status=404)
    assert fake.get_calls == []


@pytest.mark.django_db
def test_outsider_gets_404(client, outsider, workspace, fake):
    client.force_login(outsider)
    get(client, workspace, status=404)
    assert fake.get_calls == []


@pytest.mark.django_db
def test_a_read_is_reused_for_a_few_seconds(pm_client, workspace, fake):
    get(pm_client, workspace)
    get(pm_client, workspace)
    assert fake.get_calls == [EXP]


@pytest.mark.django_db
def test_no_read_is_reused_when_the_cache_time_is_zero(pm_client, workspace, fake, settings):
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 0
    get(pm_client, workspace)
    get(pm_client, workspace)
    assert fake.get_calls == [EXP, EXP]


@pytest.mark.django_db
def test_a_conclusion_attempt_after_the_read_makes_the_page_read_again(pm_client, pm, workspace, fake):
    assert "badge status-active" in get(pm_client, workspace)
    ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=EXP,
        actor=pm,
        actor_name="Pat",
        reason_category=ReasonCategory.OTHER,
        end_date=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
        state=AttemptState.SUCCEEDED,
        finished_at=timezone.now(),
    )
    fake.details[EXP] = exp_json(1, "concluded")
    assert "badge status-concluded" in get(pm_client, workspace)
    assert fake.get_calls == [EXP, EXP]


@pytest.mark.django_db
def test_mixpanel_link_is_absent_without_a_project_id(pm_client, workspace, fake):
    workspace.mixpanel_project_id = None
    workspace.save()
    page = get(pm_client, workspace)
    assert "Open in Mixpanel" not in page
    assert "the workspace has no Mixpanel project id" in page


@pytest.mark.django_db
def test_eu_workspace_links_to_the_eu_host(client, pm, monkeypatch):
    eu = Workspace.objects.create(name="Europe", region=Region.EU, mixpanel_workspace_id=3003, mixpanel_project_id=9)
    from experiments.models import Membership, Role

    Membership.objects.create(user=pm, workspace=eu, role=Role.VIEWER)
    install(monkeypatch, FakeMixpanel({3003: [exp_json(1, "active")]}))
    client.force_login(pm)
    assert "https://eu.mixpanel.com/project/9/view/3003/app/experiments/" in get(client, eu)


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
    assert "No one has tried to force conclude it from this dashboard." in get(pm_client, workspace)


@pytest.mark.django_db
def test_query_count_is_fixed(client, pm, workspace, fake, django_assert_num_queries, settings):
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 0
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
    # user, membership, claim, attempts, team bookmark (star), the plan's seal, a waiting schedule
    # (+ the session without Redis)
    with django_assert_num_queries(7 + session_queries()):
        get(client, workspace)
    # A reused read adds one query: has a conclusion attempt begun or ended since?
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 60
    get(client, workspace)
    with django_assert_num_queries(8 + session_queries()):
        get(client, workspace)
