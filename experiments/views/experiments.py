"""PLACEHOLDER: being built by another issue; every route answers 404 until then."""

from __future__ import annotations

from django.http import Http404


def experiment_list(request, workspace_pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def experiment_list_refresh(request, workspace_pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def experiment_detail(request, workspace_pk, experiment_id):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def experiment_force_conclude(request, workspace_pk, experiment_id):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")
