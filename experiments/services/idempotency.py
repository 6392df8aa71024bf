"""Idempotency-Key for API POSTs: the same key (per token) within the replay window gets the
first answer again, without acting again.

Inserting the (token, key) row is the claim: of two requests with one key, one inserts and
acts, the other finds the row (its answer, or that the first is still running). The row
keeps a fingerprint of the request, so a key reused for a different request is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments.models import ApiToken, IdempotencyRecord

REPLAY_WINDOW = dt.timedelta(hours=24)
KEY_MAX_LENGTH = IdempotencyRecord._meta.get_field("key").max_length


@dataclass(frozen=True)
class Claim:
    """`record` is this key's row; `first` is True when this request made it and must act;
    `same_request` is False when the key was first used for another request."""

    record: IdempotencyRecord
    first: bool
    same_request: bool


def request_fingerprint(*, method: str, path: str, body: bytes) -> str:
    """What makes two requests the same request: their method, path and body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def idempotency_claim(*, token: ApiToken, key: str, fingerprint: str) -> Claim:
    """Claim `key` for this token: the first request with it gets first=True; a later one the row."""
    IdempotencyRecord.objects.filter(token=token, key=key, created_at__lt=timezone.now() - REPLAY_WINDOW).delete()
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(token=token, key=key, fingerprint=fingerprint)
        return Claim(record, first=True, same_request=True)
    except IntegrityError:
        record = IdempotencyRecord.objects.get(token=token, key=key)
        return Claim(record, first=False, same_request=record.fingerprint == fingerprint)


def idempotency_answered(*, record: IdempotencyRecord, status: int, body: Any, headers: dict[str, str]) -> None:
    """Keep the first request's answer for the requests that repeat its key."""
    IdempotencyRecord.objects.filter(pk=record.pk).update(status=status, body=body, headers=headers)


def idempotency_abandon(*, record: IdempotencyRecord) -> None:
    """Forget a claim whose request ended without an answer to keep, so the key may be tried again."""
    IdempotencyRecord.objects.filter(pk=record.pk, status__isnull=True).delete()


def idempotency_prune() -> int:
    """Forget the answers older than the replay window; how many were forgotten."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - REPLAY_WINDOW).delete()
    return deleted
