"""Headers on every answer: no cache keeps a signed-in page, and a page never stands in for its fragment."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils.cache import get_max_age

from tests.routes import ROUTES, route_path, route_values


def _cache_directives(response) -> set[str]:
    return {part.strip().split("=")[0] for part in response.get("Cache-Control", "").split(",") if part.strip()}


def _vary(response) -> set[str]:
    return {part.strip().lower() for part in response.get("Vary", "").split(",")}


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["concluder", "superuser"])
def test_every_route_answers_with_no_store_and_vary_hx_request(standin, workspace, pm, django_user_model, persona):
    values = route_values(standin=standin, workspace=workspace, owner=pm)
    user = pm if persona == "concluder" else django_user_model.objects.create_superuser("root", password="pw-root")
    client = Client()
    missing = []
    for route in ROUTES:
        if "logout" in route.template:
            continue  # ends the session the rest of the walk needs; checked below
        path = route_path(route, {name: values[name]() for name in route.params})
        for htmx in (False, True):
            client.force_login(user)
            response = client.get(path, headers={"HX-Request": "true"} if htmx else {})
            if response.streaming:
                b"".join(response.streaming_content)
            if not {"no-store", "private"} <= _cache_directives(response) or "hx-request" not in _vary(response):
                missing.append(f"{path} htmx={htmx}: {response.status_code} {response.get('Cache-Control')!r}")
    assert missing == []


@pytest.mark.django_db
def test_pages_that_answer_a_fragment_to_htmx_vary_on_it(standin, workspace, pm, client):
    client.force_login(pm)
    for path in (f"/w/{workspace.pk}/", "/audit/", f"/w/{workspace.pk}/audit/"):
        page = client.get(path)
        fragment = client.get(path, headers={"HX-Request": "true"})
        assert "<html" in page.content.decode()
        assert "<html" not in fragment.content.decode()
        for response in (page, fragment):
            assert "hx-request" in _vary(response)
            assert "no-store" in _cache_directives(response)
            assert get_max_age(response) in (None, 0)


@pytest.mark.django_db
def test_post_answers_and_logout_are_not_stored_either(standin, workspace, pm, client):
    client.force_login(pm)
    created = client.post(
        f"/w/{workspace.pk}/bookmarks/add/", {"kind": "view", "query": "?status=active"}, headers={"HX-Request": "true"}
    )
    assert created.status_code == 200
    assert "no-store" in _cache_directives(created)
    logged_out = client.post("/accounts/logout/")
    assert "no-store" in _cache_directives(logged_out)
