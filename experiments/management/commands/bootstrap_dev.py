"""Development only: make sure a superuser exists to log in with (used by `make run`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from experiments.management.commands.seed_demo import demo_password, ensure_user
from experiments.models import Workspace

REFUSAL = (
    "bootstrap_dev creates a superuser with a published password, so it only runs with DJANGO_DEBUG=1 "
    "(local development). Create real accounts with `manage.py createsuperuser`."
)


class Command(BaseCommand):
    help = "Ensure the development superuser `root` exists and print how to log in (DEBUG only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(REFUSAL)
        # An existing root keeps whatever password its owner gave it.
        _, change = ensure_user("root", superuser=True, reset_password=False)
        if change == "created":
            self.stdout.write(self.style.SUCCESS(f"Log in as root / {demo_password('root')} (development only)."))
        else:
            self.stdout.write("Log in as root (it already existed, so its password is unchanged).")
        if not Workspace.objects.exists():
            self.stdout.write(
                "No workspaces yet. Add one and a member, for example:\n"
                "  python manage.py add_workspace --name Growth --region us --workspace-id <id>\n"
                "  python manage.py add_member --workspace-id <id> --user root --role admin"
            )
