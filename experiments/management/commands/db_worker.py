"""`manage.py db_worker`: django-tasks-db's worker, with this dashboard's housekeeping beside it.

The same command and options as django-tasks-db's (this app comes first in INSTALLED_APPS,
so its command is the one Django runs). Beside the worker's loop, a housekeeping thread
records the worker's heartbeat (experiments.services.worker).
"""

from __future__ import annotations

import os
from typing import Any

from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from django_tasks_db.management.commands import db_worker

from experiments.services.worker import Housekeeping


class Command(db_worker.Command):
    help = "Run the task worker, with its housekeeping (the heartbeat /readyz/worker reads)"

    def handle(self, *args: Any, **options: Any) -> None:
        # With --reload the tasks run in a child process that runs this again: only it beats.
        # A --batch run drains the queue and exits: it is not a worker to watch.
        reloading_parent = options.get("reload") and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true"
        housekeeping = None
        if not options.get("batch") and not reloading_parent:
            housekeeping = Housekeeping(worker_id=options["worker_id"])
            housekeeping.start()
        try:
            super().handle(*args, **options)
        finally:
            if housekeeping is not None:
                housekeeping.stop()
