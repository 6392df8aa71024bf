"""PLACEHOLDER: being built by another issue; every route answers 404 until then."""

from __future__ import annotations

from django.http import Http404


def bookmark_list(request, workspace_pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def bookmark_create(request, workspace_pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def bookmark_update(request, workspace_pk, bookmark_pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def bookmark_delete(request, workspace_pk, bookmark_pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def bookmark_toggle(request, workspace_pk, experiment_id):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")
