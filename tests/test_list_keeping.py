"""Lists kept fresh by the worker: pages serve the last copy past its fresh period and never wait
for Mixpanel for a list read before; the worker reads again what was viewed (before it expires),
what was wanted, and every workspace with members at a slower pace; one reader at a time, with
back-off after failures; and it tells what became owed."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel.errors import MixpanelUnavailable
from experiments.models import OwedReminder
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors.experiment_list import ListKeeping
from experiments.services import list_refresh
from experiments.services.worker import Housekeeping
from tests.fake_mixpanel import FakeMixpanel, exp_json, install
from tests.test_notifications import webhook_on

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch, FakeMixpanel([exp_json(n) for n in range(1, 4)]))


def expire_fresh_copy(workspace) -> None:
    """Let the fresh period pass: the fresh key is gone, the last good copy stays."""
    cache.delete(list_selectors.list_cache_key(workspace=workspace, suffix="fresh"))


def test_past_its_fresh_period_a_page_shows_the_last_copy_and_asks_the_worker(pm_client, workspace, fake):
    url = reverse("experiments:experiment-list", args=[workspace.pk])
    assert pm_client.get(url).status_code == 200
    assert fake.list_calls == 1
    expire_fresh_copy(workspace)
    fake.add(exp_json(99, name="Made meanwhile"))

    html = pm_client.get(url).content.decode()
    assert fake.list_calls == 1  # the page did not wait for Mixpanel
    assert "Made meanwhile" not in html
    assert "ago</time> from Mixpanel" in html  # its age is still said
    keeping = list_selectors.experiment_list_keeping(workspaces=[workspace])[workspace.pk]
    assert keeping.wanted
    assert not keeping.fresh

    (done,) = list_refresh.lists_keep_fresh()
    assert (done.workspace, done.why, done.ok) == (workspace, list_refresh.WANTED, True)
    assert fake.list_calls == 2
    assert "Made meanwhile" in pm_client.get(url).content.decode()
    assert fake.list_calls == 2


def test_a_change_made_here_makes_the_next_page_read_mixpanel(pm_client, workspace, fake):
    url = reverse("experiments:experiment-list", args=[workspace.pk])
    pm_client.get(url)
    list_selectors.invalidate_experiment_list(workspace=workspace)
    pm_client.get(url)
    assert fake.list_calls == 2


def test_a_list_never_read_is_read_by_the_page(pm_client, workspace, fake):
    pm_client.get(reverse("experiments:experiment-list", args=[workspace.pk]))
    assert fake.list_calls == 1


NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


def keeping(**kwargs) -> ListKeeping:
    values = {"fetched_at": NOW, "fresh": True, "viewed_at": None, "wanted": False, "invalid": False}
    values.update(kwargs)
    return ListKeeping(**values)


def test_which_lists_are_due(settings):
    settings.EXPERIMENT_LIST_CACHE_SECONDS = 60
    settings.WORKER_HEARTBEAT_SECONDS = 10
    settings.EXPERIMENT_LIST_BACKGROUND_SECONDS = 900
    reason = list_refresh.refresh_reason
    ago = lambda seconds: NOW - dt.timedelta(seconds=seconds)  # noqa: E731
    assert reason(keeping=keeping(fetched_at=None), now=NOW) == list_refresh.BACKGROUND
    assert reason(keeping=keeping(wanted=True), now=NOW) == list_refresh.WANTED
    # Viewed lately: read again two ticks before its fresh copy expires, not sooner.
    assert reason(keeping=keeping(fetched_at=ago(30), viewed_at=ago(5)), now=NOW) is None
    assert reason(keeping=keeping(fetched_at=ago(41), viewed_at=ago(5)), now=NOW) == list_refresh.VIEWED
    # Not viewed: the slow pace.
    assert reason(keeping=keeping(fetched_at=ago(899), fresh=False), now=NOW) is None
    assert reason(keeping=keeping(fetched_at=ago(900), fresh=False), now=NOW) == list_refresh.BACKGROUND
    # A view long ago counts for nothing.
    old_view = ago(settings.EXPERIMENT_LIST_VIEWED_SECONDS + 1)
    assert reason(keeping=keeping(fetched_at=ago(100), fresh=False, viewed_at=old_view), now=NOW) is None


def test_every_workspace_with_members_is_read_in_the_background(workspace, other_workspace, pm, fake):
    done = list_refresh.lists_keep_fresh()
    assert [(d.workspace, d.why) for d in done] == [(workspace, list_refresh.BACKGROUND)]  # Payments has no member
    assert list_refresh.lists_keep_fresh() == []  # fresh now: nothing to do


def test_one_reader_per_list_at_a_time(workspace, pm, fake):
    cache.add(list_selectors.list_cache_key(workspace=workspace, suffix="refreshing"), True, 60)
    assert list_refresh.list_refresh(workspace=workspace) is None
    assert fake.list_calls == 0


def test_an_outage_keeps_the_last_copy_and_backs_off(pm_client, workspace, fake, settings):
    url = reverse("experiments:experiment-list", args=[workspace.pk])
    pm_client.get(url)
    expire_fresh_copy(workspace)
    fake.list_error = MixpanelUnavailable("Mixpanel is unavailable (HTTP 503).")

    failed = list_refresh.list_refresh(workspace=workspace)
    assert failed is not None
    assert not failed.ok
    assert list_refresh.list_refresh(workspace=workspace) is None  # backing off: not asked again
    assert fake.list_calls == 2
    failures = cache.get(list_selectors.list_cache_key(workspace=workspace, suffix="refresh-failures"))
    assert failures == 1

    html = pm_client.get(url).content.decode()
    assert "Experiment 00001" in html  # the last copy, with the error and its age
    assert "Mixpanel is unavailable" in html
    assert fake.list_calls == 2


def test_the_backoff_doubles_up_to_the_slow_pace(workspace, pm, fake, settings, monkeypatch):
    settings.EXPERIMENT_LIST_BACKGROUND_SECONDS = 100
    fake.list_error = MixpanelUnavailable("down")
    waits = []
    real_set = cache.set

    def spy(key, value, timeout=None, **kwargs):
        if key.endswith(":refresh-backoff"):
            waits.append(timeout)
        return real_set(key, value, timeout, **kwargs)

    monkeypatch.setattr(cache, "set", spy)
    backoff = list_selectors.list_cache_key(workspace=workspace, suffix="refresh-backoff")
    for _ in range(5):
        list_refresh.list_refresh(workspace=workspace)
        cache.delete(backoff)
    assert waits == [15, 30, 60, 100, 100]


def test_the_worker_tick_reads_lists_and_tells_what_became_owed(workspace, pm, monkeypatch, settings):
    long_ago = (timezone.now() - dt.timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    install(monkeypatch, FakeMixpanel([exp_json(1, start_date=long_ago)]))
    webhook_on(workspace, "https://hooks.example.com/services/T0/B0/abcd")
    # The tick's own part (tick() first closes connections, which would end this test's transaction).
    Housekeeping(worker_id="test").keep_owed()
    assert list(OwedReminder.objects.values_list("experiment_id", "reason")) == [(exp_json(1)["id"], "overdue")]


def test_a_list_a_page_read_is_checked_for_reminders_without_asking_mixpanel(pm_client, workspace, monkeypatch):
    long_ago = (timezone.now() - dt.timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fake = install(monkeypatch, FakeMixpanel([exp_json(1, start_date=long_ago)]))
    webhook_on(workspace, "https://hooks.example.com/services/T0/B0/abcd")
    pm_client.get(reverse("experiments:experiment-list", args=[workspace.pk]))
    assert list_refresh.lists_keep_fresh() == []  # fresh: not read again
    assert fake.list_calls == 1
    assert OwedReminder.objects.count() == 1
    list_refresh.lists_keep_fresh()
    assert OwedReminder.objects.count() == 1
