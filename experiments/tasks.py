"""The background tasks' old addresses.

Each task lives beside the service it runs: reconciling in services.reconcile, the expiry
of a request for approval in services.approvals, sending a notification in
notifications.deliveries. The database queue stores a task by its import path, so rows
queued under these names before an upgrade still find their task here. New rows use the
new paths; nothing in the dashboard imports this module.
"""

from experiments.notifications.deliveries import deliver_notification
from experiments.services.approvals import expire_request
from experiments.services.reconcile import reconcile_attempt

__all__ = ["deliver_notification", "expire_request", "reconcile_attempt"]
