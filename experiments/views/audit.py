"""PLACEHOLDER: being built by another issue; every route answers 404 until then."""

from __future__ import annotations

from django.http import Http404


def audit_list(request):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def audit_detail(request, pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def audit_export(request, fmt):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")


def audit_workspace_list(request, workspace_pk):  # noqa: ANN001, ANN201
    raise Http404("Not built yet.")
