"""Reads of API tokens (never their secrets: only hashes are kept)."""

from __future__ import annotations

from typing import Any

from experiments.models import ApiToken


def api_token_list_for_user(*, user: Any) -> list[ApiToken]:
    """A person's tokens, newest first (index apitoken_user_created_idx)."""
    return list(ApiToken.objects.filter(user=user).order_by("-created_at", "-id"))


def api_token_for_user(*, user: Any, pk: int) -> ApiToken | None:
    """One of a person's own tokens, or None."""
    return ApiToken.objects.filter(user=user, pk=pk).select_related("user").first()
