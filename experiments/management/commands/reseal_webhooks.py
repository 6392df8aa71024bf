"""`python manage.py reseal_webhooks`: seal every saved webhook address under the current key.

After DJANGO_SECRET_KEY changes, with the old key in DJANGO_SECRET_KEY_FALLBACKS, the
addresses sealed under it still open, and each is sealed again under the new key when its
next message is sent. This does it for every workspace at once, so the old key can leave the
fallbacks. Exits 1 when an address no key opens (its workspace admin must paste it again).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from experiments.notifications import webhook
from experiments.services import workspaces as workspace_services

SAID = {
    webhook.RESEALED: "sealed again under the current key",
    webhook.CURRENT: "already sealed under the current key",
    webhook.UNREADABLE: "cannot be opened by the current key or any fallback: a workspace admin must set it again",
}


class Command(BaseCommand):
    help = "Seal every workspace's webhook address under the current DJANGO_SECRET_KEY; exit 1 if one cannot be read."

    def handle(self, *args: Any, **options: Any) -> None:
        results = workspace_services.workspace_webhooks_reseal()
        for workspace, result in results:
            self.stdout.write(
                f"{workspace.name} (#{workspace.pk}): webhook {workspace.webhook_url_hint} {SAID[result]}"
            )
        resealed = sum(result == webhook.RESEALED for _, result in results)
        unreadable = [workspace.name for workspace, result in results if result == webhook.UNREADABLE]
        summary = f"{len(results)} webhook(s), {resealed} sealed again."
        if unreadable:
            raise CommandError(f"{summary} Unreadable, set them again on the Settings page: {', '.join(unreadable)}.")
        self.stdout.write(self.style.SUCCESS(summary + " The old key can now leave DJANGO_SECRET_KEY_FALLBACKS."))
