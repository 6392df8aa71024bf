"""`manage.py create_api_token USERNAME --name NAME --scope read|act [--expires-days N]`.

Prints the token once: only its SHA-256 is kept. The making is chained, by the command.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.models import TokenScope
from experiments.services import tokens as token_services


class Command(BaseCommand):
    help = "Make a personal API token for a person and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="What uses the token.")
        parser.add_argument("--scope", required=True, choices=TokenScope.values, help="read, or act.")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=token_services.DEFAULT_DAYS,
            help=f"Days until it expires (default {token_services.DEFAULT_DAYS}, at most {token_services.MAX_DAYS}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None or not user.is_active:
            raise CommandError(f"No active user {options['username']!r}.")
        try:
            made = token_services.api_token_create(
                user=user,
                name=options["name"],
                scope=options["scope"],
                days=options["expires_days"],
                by="create_api_token command",
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"Token “{made.token.name}” for {user.get_username()} ({made.token.scope}), "
            f"expires {made.token.expires_at:%Y-%m-%d %H:%M} UTC. Shown once; only its hash is kept:"
        )
        self.stdout.write(made.secret)
