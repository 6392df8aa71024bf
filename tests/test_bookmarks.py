"""Team bookmarks: shared per workspace, permissions, safety, htmx and no-JS paths."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from django.contrib.messages import get_messages
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from experiments import auditlog
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelConfigError, MixpanelUnavailable
from experiments.models import AuditEntry, Bookmark, BookmarkKind, EntryKind, Membership, Role
from experiments.queries import ExperimentListQuery
from experiments.selectors import experiment_list as list_selectors
from experiments.services import bookmarks as bookmark_services
from experiments.templatetags.bookmarks import bookmark_href
from tests.factories import session_queries
from tests.fake_mixpanel import FakeMixpanel, install

EXP = "0b9c4b8e-4a57-4c1e-9a55-5b0d1f6b7a01"
GONE = "5f1e0000-dead-4bee-8000-000000000000"
HX = {"HTTP_HX_REQUEST": "true"}


def _raw(exp_id: str, name: str, status: str = "active") -> dict:
    return {"id": exp_id, "name": name, "status": status, "start_date": "2026-11-01T09:00:00Z"}


@pytest.fixture
def fake(monkeypatch):
    experiments = [
        _raw(EXP, "Checkout button <b>colour</b>"),
        _raw("e-2", "Pricing page", status="success"),
        _raw("e-3", "Onboarding tour", status="draft"),
    ]
    return install(monkeypatch, FakeMixpanel(experiments))


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _url(name: str, workspace, *args) -> str:
    return reverse(f"experiments:{name}", args=[workspace.pk, *args])


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _star(client, workspace, experiment_id=EXP, **extra):
    return client.post(_url("bookmark-toggle", workspace, experiment_id), {"next": "/somewhere/"}, **extra)


def _add_view(client, workspace, query, title="", note="", **extra):
    data = {"kind": "view", "query": query, "title": title, "note": note}
    return client.post(_url("bookmark-create", workspace), data, **extra)


# --- Shared by the team; invisible to others -------------------------------------------


@pytest.mark.django_db
def test_two_members_see_each_others_bookmarks(workspace, pm, teammate, fake):
    pat, tess = _client_for(pm), _client_for(teammate)
    assert _star(pat, workspace).status_code == 302
    response = _add_view(tess, workspace, "?status=active", title="Live ones", note="Tess watches these")
    assert response.status_code == 302

    for client in (pat, tess):
        page = client.get(_url("bookmark-list", workspace))
        assert page.status_code == 200
        html = page.content.decode()
        assert "Checkout button &lt;b&gt;colour&lt;/b&gt;" in html
        assert "Live ones" in html
        assert "Tess watches these" in html
        assert "Added by Pat (pat)" in html
        assert "Added by Tess (tess)" in html


@pytest.mark.django_db
def test_member_of_another_workspace_sees_none_and_gets_404_everywhere(workspace, pm, outsider, fake):
    bookmark_services.bookmark_create_experiment(
        workspace=workspace, user=pm, experiment_id=EXP, experiment_name="Secret plan", note="internal"
    )
    bookmark = Bookmark.objects.get()
    otto = _client_for(outsider)

    # Their own workspace's page shows nothing of ours.
    own = otto.get(reverse("experiments:bookmark-list", args=[outsider.memberships.get().workspace_id]))
    assert own.status_code == 200
    assert "Secret plan" not in own.content.decode()

    for method, url in [
        ("get", _url("bookmark-list", workspace)),
        ("post", _url("bookmark-create", workspace)),
        ("post", _url("bookmark-update", workspace, bookmark.pk)),
        ("post", _url("bookmark-delete", workspace, bookmark.pk)),
        ("post", _url("bookmark-toggle", workspace, EXP)),
    ]:
        for extra in ({}, HX):
            data = {"kind": "view", "query": "?status=draft", "note": "pwned", "title": "x"}
            response = getattr(otto, method)(url, data, **extra) if method == "post" else otto.get(url, **extra)
            assert response.status_code == 404, (method, url, extra)
    bookmark.refresh_from_db()
    assert (bookmark.note, Bookmark.objects.count()) == ("internal", 1)


@pytest.mark.django_db
def test_bookmark_of_another_workspace_is_404_through_this_workspaces_urls(
    workspace, other_workspace, pm, outsider, fake
):
    # otto's bookmark lives in Payments; pat (Growth) must not reach it via Growth's URLs.
    theirs = bookmark_services.bookmark_create_view(
        workspace=other_workspace, user=outsider, query="", title="Payments view"
    ).bookmark
    pat = _client_for(pm)
    assert pat.post(_url("bookmark-update", workspace, theirs.pk), {"note": "x"}).status_code == 404
    assert pat.post(_url("bookmark-delete", workspace, theirs.pk)).status_code == 404
    assert Bookmark.objects.filter(pk=theirs.pk, note="").exists()


# --- Permissions -----------------------------------------------------------------------


@pytest.fixture
def pats_bookmark(workspace, pm):
    return bookmark_services.bookmark_create_experiment(
        workspace=workspace, user=pm, experiment_id=EXP, experiment_name="Checkout", note="first"
    ).bookmark


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["pm", "ws_admin"])
def test_creator_and_admin_may_edit_and_remove(request, workspace, pats_bookmark, who):
    user = request.getfixturevalue(who)
    client = _client_for(user)
    response = client.post(
        _url("bookmark-update", workspace, pats_bookmark.pk), {"note": f"edited by {who}", "title": "Checkout!"}
    )
    assert response.status_code == 302
    pats_bookmark.refresh_from_db()
    assert (pats_bookmark.note, pats_bookmark.title) == (f"edited by {who}", "Checkout!")
    assert client.post(_url("bookmark-delete", workspace, pats_bookmark.pk)).status_code == 302
    assert not Bookmark.objects.exists()


@pytest.mark.django_db
def test_other_member_may_not_edit_or_remove(workspace, pats_bookmark, teammate):
    tess = _client_for(teammate)
    for url in (
        _url("bookmark-update", workspace, pats_bookmark.pk),
        _url("bookmark-delete", workspace, pats_bookmark.pk),
        _url("bookmark-toggle", workspace, EXP),
    ):
        page = tess.post(url, {"note": "hijacked"})
        assert page.status_code == 403
        assert "Only Pat (pat) (who added it) or a workspace admin" in page.content.decode()
        fragment = tess.post(url, {"note": "hijacked"}, **HX)
        assert fragment.status_code == 403
        assert "<html" not in fragment.content.decode()
        toast = json.loads(fragment["HX-Trigger"])["showToast"]["message"]
        assert "Only Pat (pat) (who added it) or a workspace admin" in toast
    pats_bookmark.refresh_from_db()
    assert pats_bookmark.note == "first"
    assert not AuditEntry.objects.filter(kind=EntryKind.BOOKMARK_REMOVED).exists()


@pytest.mark.django_db
def test_edit_and_remove_controls_only_for_those_allowed(workspace, pats_bookmark, pm, teammate):
    edit_url = _url("bookmark-update", workspace, pats_bookmark.pk)
    assert edit_url in _client_for(pm).get(_url("bookmark-list", workspace)).content.decode()
    assert edit_url not in _client_for(teammate).get(_url("bookmark-list", workspace)).content.decode()


@pytest.mark.django_db
def test_service_refuses_a_non_creator(pats_bookmark, teammate):
    for outcome in (
        bookmark_services.bookmark_delete(bookmark=pats_bookmark, user=teammate),
        bookmark_services.bookmark_update(bookmark=pats_bookmark, user=teammate, note="x"),
    ):
        assert not outcome.ok
        assert outcome.refusal == bookmark_services.REFUSED_NOT_ALLOWED
        assert "Only Pat (pat) (who added it) or a workspace admin" in outcome.message
    assert Bookmark.objects.get().note == "first"


@pytest.mark.django_db
def test_removing_twice_writes_one_audit_entry(pats_bookmark, pm):
    stale_copy = Bookmark.objects.get(pk=pats_bookmark.pk)
    assert bookmark_services.bookmark_delete(bookmark=pats_bookmark, user=pm).ok
    again = bookmark_services.bookmark_delete(bookmark=stale_copy, user=pm)
    assert (again.ok, again.refusal) == (False, bookmark_services.REFUSED_GONE)
    assert AuditEntry.objects.filter(kind=EntryKind.BOOKMARK_REMOVED).count() == 1


# --- Duplicates ------------------------------------------------------------------------


@pytest.mark.django_db
def test_second_experiment_bookmark_is_refused_saying_who_added_it(workspace, pats_bookmark, teammate, fake):
    tess = _client_for(teammate)
    response = tess.post(_url("bookmark-create", workspace), {"kind": "experiment", "experiment_id": EXP}, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Pat (pat) already bookmarked this experiment on" in html
    assert 'aria-pressed="true"' in html  # the star shows the truth: it is bookmarked
    no_js = tess.post(_url("bookmark-create", workspace), {"kind": "experiment", "experiment_id": EXP})
    assert no_js.status_code == 302
    assert any("Pat (pat) already bookmarked" in m for m in _messages(no_js))
    assert Bookmark.objects.count() == 1


@pytest.mark.django_db
def test_identical_views_are_one_bookmark_whatever_the_parameter_order(workspace, pm, teammate):
    first = bookmark_services.bookmark_create_view(workspace=workspace, user=pm, query="?q=checkout&status=active")
    second = bookmark_services.bookmark_create_view(
        workspace=workspace, user=teammate, query=f"/w/{workspace.pk}/?status=active&page=4&q=checkout&x=1"
    )
    assert (second.ok, second.refusal) == (False, bookmark_services.REFUSED_EXISTS)
    assert "Pat (pat) already bookmarked this view" in second.message
    assert second.bookmark == first.bookmark
    assert Bookmark.objects.count() == 1


@pytest.mark.django_db
def test_duplicate_is_refused_by_the_database_not_only_a_pre_check(workspace, pm, pats_bookmark):
    # What a concurrent second add meets: the partial unique constraint.
    with pytest.raises(IntegrityError), transaction.atomic():
        Bookmark.objects.create(workspace=workspace, kind=BookmarkKind.EXPERIMENT, experiment_id=EXP)
    # The service relies on it (no pre-check), and turns it into a readable refusal
    # without leaving a stray audit entry behind.
    entries = AuditEntry.objects.count()
    outcome = bookmark_services.bookmark_create_experiment(
        workspace=workspace, user=pm, experiment_id=EXP, experiment_name="Checkout", note=""
    )
    assert (outcome.refusal, outcome.bookmark, outcome.starred) == (
        bookmark_services.REFUSED_EXISTS,
        pats_bookmark,
        True,
    )
    assert AuditEntry.objects.count() == entries


@pytest.mark.django_db
def test_same_experiment_may_be_bookmarked_in_two_workspaces(workspace, other_workspace, pm, outsider):
    bookmark_services.bookmark_create_experiment(workspace=workspace, user=pm, experiment_id=EXP, experiment_name="A")
    bookmark_services.bookmark_create_experiment(
        workspace=other_workspace, user=outsider, experiment_id=EXP, experiment_name="A"
    )
    assert Bookmark.objects.count() == 2


# --- Vanished experiments and statuses ---------------------------------------------------


@pytest.mark.django_db
def test_bookmark_of_a_vanished_experiment_renders_with_its_snapshot_and_gone(workspace, pm, fake):
    bookmark_services.bookmark_create_experiment(
        workspace=workspace, user=pm, experiment_id=GONE, experiment_name="Old <i>banner</i> test", note="RIP"
    )
    bookmark_services.bookmark_create_experiment(
        workspace=workspace, user=pm, experiment_id="e-2", experiment_name="Pricing"
    )
    # The experiments page has read the list (the bookmarks page itself never asks Mixpanel).
    list_selectors.experiment_list_cached(workspace=workspace, client=fake)
    reads = fake.list_calls
    page = _client_for(pm).get(_url("bookmark-list", workspace))
    assert page.status_code == 200
    assert fake.list_calls == reads
    html = page.content.decode()
    assert "Old &lt;i&gt;banner&lt;/i&gt; test" in html
    assert "bookmark-gone" in html
    assert ">gone<" in html
    assert 'class="badge status-success">success<' in html
    assert "concluded" in html


@pytest.mark.django_db
def test_bookmarks_page_without_a_cached_list_shows_no_status_and_does_not_call_mixpanel(workspace, pm, fake):
    bookmark_services.bookmark_create_experiment(
        workspace=workspace, user=pm, experiment_id=GONE, experiment_name="Old"
    )
    page = _client_for(pm).get(_url("bookmark-list", workspace))
    assert page.status_code == 200
    assert fake.list_calls == 0
    assert ">gone<" not in page.content.decode()  # unknown is not the same as gone


# --- View bookmarks: only our page, exactly its filters -----------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "submitted",
    [
        "?status=success&q=Pricing&sort=name&page=3&utm=x",
        "/w/{pk}/?sort=name&q=++Pricing+&status=SUCCESS",
        "status=success&q=Pricing&sort=name",
    ],
)
def test_view_bookmark_reproduces_the_exact_filters(workspace, pm, fake, submitted):
    client = _client_for(pm)
    response = _add_view(client, workspace, submitted.format(pk=workspace.pk), title="Pricing wins")
    assert response.status_code == 302
    bookmark = Bookmark.objects.get()
    assert bookmark.view_query == "status=success&q=Pricing&sort=name"
    link = bookmark_href(bookmark)
    parts = urlsplit(link)
    assert parts.path == _url("experiment-list", workspace)
    applied = ExperimentListQuery.from_querystring(parts.query)
    assert (applied.status, applied.q, applied.sort, applied.page) == ("success", "Pricing", "name", 1)
    # And the link is what the Bookmarks page offers.
    assert f'href="{link.replace("&", "&amp;")}"' in client.get(_url("bookmark-list", workspace)).content.decode()


@pytest.mark.django_db
def test_default_view_is_stored_empty_and_links_to_the_plain_page(workspace, pm):
    bookmark = bookmark_services.bookmark_create_view(
        workspace=workspace, user=pm, query="?status=all&sort=-start&page=2"
    ).bookmark
    assert bookmark.view_query == ""
    assert bookmark.title == "All experiments"
    assert bookmark_href(bookmark) == _url("experiment-list", workspace)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "javascript:alert(1)",
        " JaVaScRiPt:alert(document.cookie)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.example/w/1/?status=active",
        "https://evil.example/w/{pk}/?status=active",
        "http://testserver/w/{pk}/?status=active",
        "/\\evil.example/",
        "/admin/?status=active",
        "/w/{other}/?status=active",
        "/w/{pk}/experiments/x/?status=active",
        "evil.example/w/{pk}/?status=active",
    ],
)
def test_views_pointing_elsewhere_are_refused(workspace, other_workspace, pm, query):
    client = _client_for(pm)
    query = query.format(pk=workspace.pk, other=other_workspace.pk)
    response = _add_view(client, workspace, query, **HX)
    assert response.status_code == 200
    assert "Only views of this workspace&#x27;s experiments page can be bookmarked" in response.content.decode()
    no_js = _add_view(client, workspace, query)
    assert no_js.status_code == 302
    assert any("Only views of this workspace's experiments page" in m for m in _messages(no_js))
    assert not Bookmark.objects.exists()


@pytest.mark.django_db
def test_script_in_note_and_title_is_rendered_inert(workspace, pm, teammate, fake):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    _add_view(_client_for(pm), workspace, "?status=draft", title=evil, note=evil + "\nline two")
    html = _client_for(teammate).get(_url("bookmark-list", workspace)).content.decode()
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "line two" in html


@pytest.mark.django_db
def test_over_long_text_is_refused_readably(workspace, pm, pats_bookmark):
    client = _client_for(pm)
    response = _add_view(client, workspace, "?status=draft", title="t" * 121, **HX)
    assert "The title is too long: at most 120 characters, this one has 121." in response.content.decode()
    response = client.post(_url("bookmark-update", workspace, pats_bookmark.pk), {"note": "n" * 1001}, **HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "The note is too long: at most 1000 characters, this one has 1001." in html
    assert "n" * 1001 in html  # what was typed is kept in the open form
    pats_bookmark.refresh_from_db()
    assert pats_bookmark.note == "first"
    no_js = client.post(_url("bookmark-update", workspace, pats_bookmark.pk), {"note": "n" * 1001})
    assert any("The note is too long" in m for m in _messages(no_js))
    assert Bookmark.objects.filter(kind=BookmarkKind.VIEW).count() == 0


@pytest.mark.django_db
def test_limits_count_what_a_person_typed(workspace, pm):
    # Browsers send line breaks as CRLF; 1000 characters with line breaks still fit.
    note = ("a" * 99 + "\r\n") * 10
    bookmark = bookmark_services.bookmark_create_view(workspace=workspace, user=pm, query="", note=note[:-2]).bookmark
    assert len(bookmark.note) == 999
    # NUL and other control characters are dropped (PostgreSQL refuses NUL in text).
    outcome = bookmark_services.bookmark_update(bookmark=bookmark, user=pm, note="ok\x00\x07 fine", title="T\x00")
    assert outcome.ok
    bookmark.refresh_from_db()
    assert (bookmark.note, bookmark.title) == ("ok fine", "T")


@pytest.mark.django_db
def test_over_long_search_is_cut_like_the_page_does(workspace, pm):
    bookmark = bookmark_services.bookmark_create_view(workspace=workspace, user=pm, query="q=" + "x" * 900).bookmark
    assert ExperimentListQuery.from_querystring(bookmark.view_query).q == "x" * 200
    refused = bookmark_services.bookmark_create_view(workspace=workspace, user=pm, query="q=" + "x" * 5000)
    assert refused.refusal == bookmark_services.REFUSED_INVALID
    assert "too long" in refused.message


@pytest.mark.django_db
def test_only_listed_experiments_can_be_starred(workspace, pm, fake):
    response = _star(_client_for(pm), workspace, "not-in-the-list", **HX)
    assert response.status_code == 200
    assert "has no experiment with that id" in response.content.decode()
    assert not Bookmark.objects.exists()


@pytest.mark.django_db
def test_star_when_mixpanel_is_down_with_no_copy_says_so(workspace, pm, monkeypatch):
    down = install(monkeypatch, FakeMixpanel([]))
    down.list_error = MixpanelUnavailable()
    response = _star(_client_for(pm), workspace, EXP, **HX)
    assert response.status_code == 200
    assert "could not be checked against Mixpanel" in response.content.decode()
    assert not Bookmark.objects.exists()


# --- htmx and no-JS ----------------------------------------------------------------------


@pytest.mark.django_db
def test_star_toggle_with_htmx_swaps_the_button(workspace, pm, fake):
    client = _client_for(pm)
    on = _star(client, workspace, **HX)
    html = on.content.decode()
    assert on.status_code == 200
    assert "<html" not in html
    assert 'class="star-toggle"' in html
    assert 'aria-pressed="true"' in html
    assert "Remove bookmark Checkout button &lt;b&gt;colour&lt;/b&gt;" in html
    assert "Bookmarked" in json.loads(on["HX-Trigger"])["showToast"]["message"]
    bookmark = Bookmark.objects.get()
    assert bookmark.experiment_name == "Checkout button <b>colour</b>"  # snapshot from the list, not the form

    off = _star(client, workspace, **HX)
    html = off.content.decode()
    assert 'aria-pressed="false"' in html
    assert "Bookmark Checkout button &lt;b&gt;colour&lt;/b&gt;" in html
    assert not Bookmark.objects.exists()


@pytest.mark.django_db
def test_star_toggle_without_js_redirects_back_with_a_message(workspace, pm, fake):
    client = _client_for(pm)
    response = client.post(_url("bookmark-toggle", workspace, EXP), {"next": f"/w/{workspace.pk}/?status=active"})
    assert response.status_code == 302
    assert response["Location"] == f"/w/{workspace.pk}/?status=active"
    assert any("Bookmarked" in m for m in _messages(response))
    assert Bookmark.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/", "javascript:alert(1)", ""])
def test_unsafe_next_falls_back_to_the_bookmarks_page(workspace, pm, fake, next_url):
    response = _client_for(pm).post(_url("bookmark-toggle", workspace, EXP), {"next": next_url})
    assert response.status_code == 302
    assert response["Location"] == _url("bookmark-list", workspace)


@pytest.mark.django_db
def test_star_from_the_experiments_page_also_refreshes_the_strip(workspace, pm, fake):
    response = _client_for(pm).post(_url("bookmark-toggle", workspace, EXP), {"strip": "1"}, **HX)
    html = response.content.decode()
    assert 'id="bookmark-strip"' in html
    assert 'hx-swap-oob="true"' in html
    assert "Checkout button &lt;b&gt;colour&lt;/b&gt;" in html


@pytest.mark.django_db
def test_view_form_with_htmx_swaps_itself_and_uses_the_browsers_location(workspace, pm):
    # htmx swapped the table and pushed the URL; the hidden field still holds the old query.
    response = _client_for(pm).post(
        _url("bookmark-create", workspace),
        {"kind": "view", "query": "status=draft", "from_location": "1", "title": "", "note": "n"},
        HTTP_HX_CURRENT_URL=f"http://testserver/w/{workspace.pk}/?status=fail&q=promo",
        **HX,
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="bookmark-view-form"' in html
    assert "<html" not in html
    assert "Bookmarked the view" in html
    assert Bookmark.objects.get().view_query == "status=fail&q=promo"


@pytest.mark.django_db
def test_edit_note_with_htmx_returns_the_item(workspace, pm, pats_bookmark):
    response = _client_for(pm).post(
        _url("bookmark-update", workspace, pats_bookmark.pk), {"note": "why: <b>revenue</b>", "title": ""}, **HX
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<li class="card bookmark-item" id="bookmark-{pats_bookmark.pk}"')
    assert "why: &lt;b&gt;revenue&lt;/b&gt;" in html


@pytest.mark.django_db
def test_remove_with_htmx_returns_nothing_and_a_toast(workspace, pm, pats_bookmark):
    response = _client_for(pm).post(_url("bookmark-delete", workspace, pats_bookmark.pk), **HX)
    assert response.status_code == 200
    assert response.content.decode().strip() == ""
    assert "Removed the bookmark" in json.loads(response["HX-Trigger"])["showToast"]["message"]


@pytest.mark.django_db
def test_bookmark_posts_need_the_csrf_token(workspace, pm, fake):
    client = Client(enforce_csrf_checks=True)
    client.force_login(pm)
    assert _star(client, workspace).status_code == 403
    assert not Bookmark.objects.exists()


@pytest.mark.django_db
def test_get_is_not_allowed_on_changes(workspace, pm, pats_bookmark):
    client = _client_for(pm)
    assert client.get(_url("bookmark-delete", workspace, pats_bookmark.pk)).status_code == 405
    assert client.get(_url("bookmark-toggle", workspace, EXP)).status_code == 405


# --- Trail ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_add_and_remove_write_audit_entries_shown_as_recent_activity(workspace, pm, teammate, fake):
    pat = _client_for(pm)
    _star(pat, workspace)
    bookmark = Bookmark.objects.get()
    _star(pat, workspace)
    added, removed = AuditEntry.objects.filter(workspace=workspace).order_by("seq")
    assert (added.kind, removed.kind) == (EntryKind.BOOKMARK_ADDED, EntryKind.BOOKMARK_REMOVED)
    for entry in (added, removed):
        assert (entry.actor, entry.actor_name, entry.experiment_id) == (pm, "Pat (pat)", EXP)
        assert entry.experiment_name == "Checkout button <b>colour</b>"
        assert entry.payload_data == {
            "bookmark_id": bookmark.pk,
            "kind": "experiment",
            "title": "",
            "note": "",
            "view_query": "",
        }
    html = _client_for(teammate).get(_url("bookmark-list", workspace)).content.decode()
    assert "Pat (pat) added" in html
    assert "Pat (pat) removed" in html


@pytest.mark.django_db
def test_audit_entry_and_bookmark_commit_together(workspace, pm, monkeypatch):
    def broken_append(**kwargs):
        raise RuntimeError("audit store down")

    monkeypatch.setattr(auditlog, "append_entry", broken_append)
    with pytest.raises(RuntimeError):
        bookmark_services.bookmark_create_view(workspace=workspace, user=pm, query="?status=draft")
    assert not Bookmark.objects.exists()


# --- Cost ------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("count", [1, 6])
def test_bookmarks_page_query_count_is_fixed(workspace, pm, teammate, fake, django_assert_num_queries, count):
    list_selectors.experiment_list_cached(workspace=workspace, client=fake)
    for i in range(count):
        user = pm if i % 2 else teammate
        bookmark_services.bookmark_create_view(workspace=workspace, user=user, query=f"q=term{i}", note="n")
    bookmark_services.bookmark_create_experiment(workspace=workspace, user=pm, experiment_id=EXP, experiment_name="C")
    client = _client_for(teammate)
    # user, membership+workspace, bookmarks, activity (+ the session without Redis)
    with django_assert_num_queries(4 + session_queries()):
        assert client.get(_url("bookmark-list", workspace)).status_code == 200


@pytest.mark.django_db
def test_superuser_acts_as_admin(workspace, pats_bookmark, django_user_model):
    root = django_user_model.objects.create_superuser(username="root", password="pw-root")
    assert _client_for(root).post(_url("bookmark-delete", workspace, pats_bookmark.pk)).status_code == 302
    assert not Bookmark.objects.exists()


@pytest.mark.django_db
def test_viewer_may_add(workspace, teammate, fake):
    Membership.objects.filter(user=teammate).update(role=Role.VIEWER)
    assert _star(_client_for(teammate), workspace).status_code == 302
    assert Bookmark.objects.get().created_by == teammate


@pytest.mark.django_db(transaction=True)
def test_two_people_adding_at_once_make_one_bookmark(workspace, pm, teammate):
    """Real concurrent adds (two threads, two connections): the constraint lets exactly one win."""
    import threading

    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite's in-memory test database admits no concurrent writers")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def add(user):
        try:
            barrier.wait(timeout=10)
            outcome = bookmark_services.bookmark_create_experiment(
                workspace=workspace, user=user, experiment_id=EXP, experiment_name="Checkout"
            )
            outcomes.append("added" if outcome.ok else outcome.message)
        finally:
            connection.close()

    threads = [threading.Thread(target=add, args=(user,)) for user in (pm, teammate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 2
    assert outcomes.count("added") == 1
    [refusal] = [o for o in outcomes if o != "added"]
    assert "already bookmarked this experiment" in refusal
    assert Bookmark.objects.count() == 1
    assert AuditEntry.objects.filter(kind=EntryKind.BOOKMARK_ADDED).count() == 1


# --- On the experiments page and the experiment page ----------------------------------------


@pytest.mark.django_db
def test_followed_view_bookmark_applies_the_same_filters_on_the_experiments_page(workspace, pm, teammate, fake):
    original = f"/w/{workspace.pk}/?status=success&q=pricing&sort=-name&page=1"
    shown = _client_for(pm).get(original)
    assert shown.status_code == 200
    _add_view(_client_for(pm), workspace, original, title="Wins")
    followed = _client_for(teammate).get(bookmark_href(Bookmark.objects.get()))
    assert followed.status_code == 200
    for key in ("status", "q", "sort", "page"):
        assert getattr(followed.context["query"], key) == getattr(shown.context["query"], key)
    assert [e.id for e in followed.context["page"].experiments] == [e.id for e in shown.context["page"].experiments]
    assert [e.id for e in followed.context["page"].experiments] == ["e-2"]


@pytest.mark.django_db
def test_experiments_page_shows_the_strip_and_the_stars(workspace, pm, teammate, fake):
    _star(_client_for(pm), workspace, "e-2")
    bookmark_services.bookmark_create_experiment(
        workspace=workspace, user=pm, experiment_id=GONE, experiment_name="Old one"
    )
    html = _client_for(teammate).get(_url("experiment-list", workspace)).content.decode()
    strip = html[html.index('id="bookmark-strip"') : html.index("</section>", html.index('id="bookmark-strip"'))]
    assert "Pricing page" in strip
    assert 'class="badge status-success">success<' in strip
    assert "(concluded)" in strip
    assert "Old one" in strip
    assert ">gone<" in strip
    assert "Remove bookmark Pricing page" in html  # its row's star is on
    assert "Bookmark Onboarding tour" in html  # the others' are off
    assert "Bookmark this view" in html


@pytest.mark.django_db
def test_experiment_page_has_the_star(workspace, pm, fake):
    client = _client_for(pm)
    html = client.get(_url("experiment-detail", workspace, "e-3")).content.decode()
    assert 'aria-pressed="false"' in html
    assert "Bookmark Onboarding tour" in html
    _star(client, workspace, "e-3")
    html = client.get(_url("experiment-detail", workspace, "e-3")).content.decode()
    assert "Remove bookmark Onboarding tour" in html


@pytest.mark.django_db
def test_starring_from_a_cached_list_asks_mixpanel_nothing(workspace, pm, fake, monkeypatch):
    list_selectors.experiment_list_cached(workspace=workspace, client=fake)

    def no_client(workspace):
        raise MixpanelConfigError()

    monkeypatch.setattr(mixpanel, "client_for", no_client)
    response = _star(_client_for(pm), workspace, "e-3", **HX)
    assert 'aria-pressed="true"' in response.content.decode()
    assert Bookmark.objects.get().experiment_name == "Onboarding tour"


# --- The star's note, in the same step; saved views in words ----------------------------


def _toggle(client, workspace, data, **extra):
    return client.post(reverse("experiments:bookmark-toggle", args=[workspace.pk, EXP]), data, **extra)


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [HX, {}])
def test_a_star_with_a_note_keeps_the_note(client, pm, workspace, fake, headers):
    client.force_login(pm)
    response = _toggle(client, workspace, {"note": "  Watch refunds.  ", "next": "/"}, **headers)
    assert response.status_code in (200, 302)
    bookmark = Bookmark.objects.get(workspace=workspace, experiment_id=EXP)
    assert bookmark.note == "Watch refunds."
    if headers:
        assert 'aria-pressed="true"' in response.content.decode()


@pytest.mark.django_db
def test_a_star_without_a_note_still_stars_and_an_over_long_note_is_refused_readably(client, pm, workspace, fake):
    client.force_login(pm)
    html = _toggle(client, workspace, {"note": "x" * 1001}, **HX).content.decode()
    assert not Bookmark.objects.exists()
    assert 'role="alert"' in html
    assert 'aria-pressed="false"' in html
    _toggle(client, workspace, {}, **HX)
    assert Bookmark.objects.get(experiment_id=EXP).note == ""


@pytest.mark.parametrize(
    ("query", "chips"),
    [
        ("", []),
        ("status=active", [("Status", "Active")]),
        ("q=checkout&sort=-start&status=fail", [("Status", "Shipped none"), ("Search", "checkout")]),
        ("sort=name&page=3", [("Sort", "Name, A to Z"), ("Page", "3")]),
        ("status=bogus&sort=nope", []),
    ],
)
def test_a_saved_view_is_described_in_words(query, chips):
    assert ExperimentListQuery.from_querystring(query).describe() == chips
