"""The failures of talking to Mixpanel: one small exception family.

`str(exc)` is readable by a product manager; the attributes are data for the audit
trail, and none ever holds the service account's secret.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("experiments.mixpanel")


class MixpanelError(Exception):
    """Base of every failure talking to Mixpanel. `str(exc)` is readable by a PM.

    Attributes are data for the audit trail; none ever holds the secret.
    """

    default_message = "Mixpanel could not be reached."

    def __init__(
        self,
        message: str | None = None,
        *,
        http_status: int | None = None,
        body_excerpt: str = "",
        duration_ms: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.http_status = http_status
        self.body_excerpt = body_excerpt
        self.duration_ms = duration_ms
        self.retry_after = retry_after
        super().__init__(self.message)

    # True only where a state-changing request may have been applied upstream.
    outcome_unknown = False


class MixpanelConfigError(MixpanelError):
    """The dashboard's own Mixpanel settings are missing or wrong.

    `message` is what people see, in plain words; `detail` names what to fix, for
    operators: commands print it, and it is logged when the error is made.
    """

    default_message = (
        "Mixpanel is not set up correctly for this dashboard. Ask the dashboard's operators to check its "
        "Mixpanel settings."
    )
    default_detail = (
        "Mixpanel is not configured: set MIXPANEL_SERVICE_ACCOUNT_USERNAME and "
        "MIXPANEL_SERVICE_ACCOUNT_SECRET (or their *_FILE variants)."
    )

    def __init__(self, detail: str | None = None) -> None:
        super().__init__()
        self.detail = detail or self.default_detail
        logger.error("%s", self.detail)


class MixpanelUnavailable(MixpanelError):
    default_message = "Mixpanel is unavailable right now (no connection, timeout or server error). Try again later."


class MixpanelRateLimited(MixpanelError):
    default_message = "Mixpanel is rate limiting us. Wait a minute and try again."


class MixpanelAuthError(MixpanelError):
    default_message = "Mixpanel refused the service account (credentials invalid, expired, or lacking access)."


class MixpanelNotFound(MixpanelError):
    default_message = "Mixpanel has no such experiment in this workspace."


class MixpanelRejected(MixpanelError):
    default_message = "Mixpanel rejected the request."


class MixpanelBadResponse(MixpanelError):
    default_message = "Mixpanel answered with something that is not a valid response."


class MixpanelOutcomeUnknown(MixpanelError):
    """The PUT was (or may have been) sent, and no trustworthy answer came back."""

    default_message = (
        "The request was sent to Mixpanel but no trustworthy answer came back, so we do not know "
        "whether it was applied. It will be reconciled by reading the experiment; do not retry blindly."
    )
    outcome_unknown = True
