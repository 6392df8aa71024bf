"""Forms: the Force conclude and decision dialogs, and workspace settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.text import capfirst

from experiments import dates
from experiments.mixpanel.experiment import Experiment
from experiments.models import (
    APPROVAL_WINDOW_MAX_HOURS,
    APPROVAL_WINDOW_MIN_HOURS,
    ApprovalPolicy,
    ReasonCategory,
    TokenScope,
    Workspace,
    decision_words,
)
from experiments.notifications import webhook_address
from experiments.notifications.webhook_address import MSG_URL_INVALID
from experiments.queries import ExperimentListQuery
from experiments.selectors.experiment_page import VariantOption
from experiments.services.decisions import NOTE_MAX_LENGTH

# --- Force conclude ---------------------------------------------------------------

REASON_TEXT_MAX_LENGTH = 1000
# What the end-time field shows and takes: UTC, 24-hour, minutes ("2026-11-26 09:30").
# A text field rather than datetime-local, which browsers draw in the reader's own
# 12- or 24-hour style although the value is UTC.
END_DATE_INPUT_FORMAT = "%Y-%m-%d %H:%M"
MSG_END_DATE_FORMAT = "Enter a date and time like 2026-11-26 09:30 (UTC, 24-hour)."


def datetime_local_value(value: dt.datetime) -> str:
    """A UTC datetime as the end-time field's value: "2026-11-26 09:30"."""
    return value.astimezone(dt.UTC).strftime(END_DATE_INPUT_FORMAT)


class UTCDateTimeField(forms.DateTimeField):
    """A typed date and time read as UTC, whatever timezone is active.

    The label says "UTC", so the wall-clock value a person types is UTC; "T" or a
    space between date and time both do; an explicit offset (from a script or a
    test) is honoured and converted.
    """

    def to_python(self, value: Any) -> dt.datetime | None:
        if value in self.empty_values:
            return None
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        try:
            return dates.parse_iso_datetime(str(value))
        except ValueError:
            raise forms.ValidationError(MSG_END_DATE_FORMAT, code="invalid") from None


class ForceConcludeForm(forms.Form):
    """The confirmation dialog: why, and when the analysis window ends.

    `experiment` (the list's copy) supplies the start date the end may not precede.
    `back` says where the person came from, so the answer lands in the same place.
    """

    reason_category = forms.ChoiceField(
        label="Reason",
        choices=[("", "Choose a reason…"), *ReasonCategory.choices],
        error_messages={"required": "Choose a reason.", "invalid_choice": "Choose one of the listed reasons."},
    )
    reason_text = forms.CharField(
        label="In your own words",
        max_length=REASON_TEXT_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={
            "required": "Say briefly why you are concluding it; the audit trail keeps this.",
            "max_length": f"Keep it under {REASON_TEXT_MAX_LENGTH} characters.",
        },
    )
    end_date = UTCDateTimeField(
        label="End of the analysis window (UTC)",
        error_messages={"required": "Give the end date and time (UTC)."},
    )
    back = forms.ChoiceField(choices=[("list", "list"), ("detail", "detail")], required=False)
    # The experiments page's query string, to return to the same view without JavaScript.
    list_query = forms.CharField(required=False, max_length=1000)

    def __init__(self, *args: Any, experiment: Experiment | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.experiment = experiment
        if not self.is_bound:
            self.initial.setdefault("end_date", datetime_local_value(timezone.now()))

    def clean_end_date(self) -> dt.datetime:
        end_date: dt.datetime = self.cleaned_data["end_date"]
        start = self.experiment.start_date if self.experiment else None
        problem = dates.end_date_problem(end_date, start=start, now=timezone.now())
        if problem:
            raise forms.ValidationError(problem, code="end_date")
        return end_date

    def clean_back(self) -> str:
        return self.cleaned_data.get("back") or "list"

    def clean_list_query(self) -> str:
        # Re-encoded from parsed values: never echoes anything but our own parameters.
        return ExperimentListQuery.from_querystring(self.cleaned_data.get("list_query") or "").querystring()


class ScheduleForm(forms.Form):
    """Schedule a Force conclude for later: when, and the same reasons as a press. The service
    checks the time (future, at most 90 days ahead), so the form and the API answer alike."""

    run_at = UTCDateTimeField(
        label="Force conclude at (UTC)", error_messages={"required": "Give the date and time (UTC)."}
    )
    reason_category = ForceConcludeForm.base_fields["reason_category"]
    reason_text = ForceConcludeForm.base_fields["reason_text"]

    def __init__(self, *args: Any, suggested: dt.datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound and suggested is not None:
            self.initial.setdefault("run_at", datetime_local_value(suggested))


SHIP_NONE = "none"
MSG_RECORDS_VARIANT = "Mixpanel records a success, with {key} as the winning variant."
MSG_RECORDS_NONE = "Mixpanel records a fail: no variant won, none ships."
MSG_RECORDS_KEEP_CONTROL = "Mixpanel records a fail: no variant beat {key}, none ships."
MSG_RECORDS_CONTROL = (
    "Mixpanel records a success, with {key} as the winning variant. To keep things as they are, "
    "choose Keep {key} (ship none) instead."
)


@dataclass(frozen=True)
class DecisionChoice:
    """One answer in the decision dialog: its label, what Mixpanel will record, and the
    evidence beside it (the variant's exposures and lift, when known)."""

    value: str
    label: str
    records: str
    exposures: int | None = None
    lift: str = ""


class DecisionForm(forms.Form):
    """The decision dialog: which variant to ship (or none), and a required note.

    `options` are the experiment's variants as the page lists them; the choice values are
    "variant:<key>" or "none", so no key can pass for "ship none". The control variant,
    when one is recognisable, is offered last: shipping it records a success, which is
    rarely what "keep control" means, so "Keep control (ship none)" comes before it.
    """

    decision = forms.ChoiceField(
        label="Decision",
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose a variant to ship, or ship none.",
            "invalid_choice": "Choose one of the listed options.",
        },
    )
    note = forms.CharField(
        label="Note (sent to Mixpanel with the decision)",
        max_length=NOTE_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={
            "required": "Write a note saying why; it is sent to Mixpanel and kept in the audit trail.",
            "max_length": f"Keep it under {NOTE_MAX_LENGTH} characters.",
        },
    )

    def __init__(self, *args: Any, options: tuple[VariantOption, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _decision_choices(options)
        self.fields["decision"].choices = [(choice.value, choice.label) for choice in self.choices]

    def variant(self) -> str | None:
        """The key of the variant to ship, or None for "ship none" (after is_valid())."""
        return self.variant_of(self.cleaned_data["decision"])

    @staticmethod
    def variant_of(value: str) -> str | None:
        """The variant key a choice value ships, or None for "ship none"."""
        return None if value == SHIP_NONE else value.removeprefix("variant:")


def _decision_choices(options: tuple[VariantOption, ...]) -> list[DecisionChoice]:
    control = next((option for option in options if option.is_control), None)

    def ship(option: VariantOption, records: str) -> DecisionChoice:
        label = capfirst(decision_words(success=True, variant=option.key))
        return DecisionChoice(
            f"variant:{option.key}", label, records.format(key=option.key), option.exposures, option.lift
        )

    choices = [ship(option, MSG_RECORDS_VARIANT) for option in options if option is not control]
    if control is None:
        choices.append(DecisionChoice(SHIP_NONE, capfirst(decision_words(success=False, variant="")), MSG_RECORDS_NONE))
    else:
        keep = f"Keep {control.key} ({decision_words(success=False, variant='')})"
        records = MSG_RECORDS_KEEP_CONTROL.format(key=control.key)
        choices.append(DecisionChoice(SHIP_NONE, keep, records, control.exposures, control.lift))
        choices.append(ship(control, MSG_RECORDS_CONTROL))
    return choices


# --- Workspace settings -------------------------------------------------------------

MSG_WINDOW = (
    f"Give the approval window in whole hours, from {APPROVAL_WINDOW_MIN_HOURS} to {APPROVAL_WINDOW_MAX_HOURS}."
)
MSG_SET_AND_REMOVE = "Either paste a new webhook address or remove the webhook, not both."
MSG_POLICY = "Choose when two-person approval applies: never, when risky or always."


class WorkspaceSettingsForm(forms.Form):
    """A workspace's notification and approval settings (its admins' settings page).

    The webhook address is write-only: blank keeps the current one, and a typed one is
    never drawn back into the page, not even next to its error.
    """

    webhook_url = forms.CharField(
        label="Webhook address",
        required=False,
        strip=True,
        max_length=webhook_address.WEBHOOK_URL_MAX_LENGTH,
        error_messages={
            "max_length": webhook_address.MSG_URL_TOO_LONG,
            "null_characters_not_allowed": MSG_URL_INVALID,
        },
    )
    remove_webhook = forms.BooleanField(label="Remove the webhook", required=False)
    email_bookmarkers = forms.BooleanField(label="Email", required=False)
    requires_approval = forms.BooleanField(label="Require two-person approval", required=False)
    # The page's three choices; a form posted without them (an older page) reads the checkbox above.
    approval_policy = forms.ChoiceField(
        label="Two-person approval",
        choices=ApprovalPolicy.choices,
        required=False,
        error_messages={"invalid_choice": MSG_POLICY},
    )
    # Reminders about decisions owed, one switch per kind (services.owed.REMINDER_SWITCHES).
    remind_due = forms.BooleanField(label="Planned length reached", required=False)
    remind_overdue = forms.BooleanField(label="Overdue", required=False)
    remind_undecided = forms.BooleanField(label="Concluded, not decided", required=False)
    remind_no_data = forms.BooleanField(label="No data", required=False)
    # Set by the page's reminder fieldset: a form posted without it (an older page) keeps the switches.
    reminders_shown = forms.BooleanField(required=False)
    approval_window_hours = forms.IntegerField(
        label="Approval window (hours)",
        min_value=APPROVAL_WINDOW_MIN_HOURS,
        max_value=APPROVAL_WINDOW_MAX_HOURS,
        error_messages={
            "required": MSG_WINDOW,
            "invalid": MSG_WINDOW,
            "min_value": MSG_WINDOW,
            "max_value": MSG_WINDOW,
        },
    )

    def clean_webhook_url(self) -> str:
        url: str = self.cleaned_data["webhook_url"]
        problem = webhook_address.webhook_url_problem(url) if url else None
        if problem:
            raise forms.ValidationError(problem, code="webhook_url")
        return url

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("webhook_url") and cleaned.get("remove_webhook"):
            raise forms.ValidationError(MSG_SET_AND_REMOVE, code="set_and_remove")
        policy = cleaned.pop("approval_policy", "")
        if policy:
            # Never turns approval off (after its delay) and keeps the scope for when it is on again.
            cleaned["requires_approval"] = policy != ApprovalPolicy.NEVER
            if policy != ApprovalPolicy.NEVER:
                cleaned["approval_when"] = policy
        if not cleaned.pop("reminders_shown", False):
            for name in Workspace.REMINDER_FIELDS:
                cleaned[name] = None
        return cleaned


class NotificationChoicesForm(forms.Form):
    """A person's own notification choices (their notifications page)."""

    weekly_digest = forms.BooleanField(label="Email me the weekly digest of decisions owed", required=False)


class ApiTokenForm(forms.Form):
    """A new personal API token: what it is for, what it may do, how long it lives."""

    name = forms.CharField(
        label="Name",
        max_length=100,
        help_text="What uses it, e.g. “release script” or “audit export to the SIEM”.",
        error_messages={"required": "Give the token a name saying what uses it."},
    )
    scope = forms.ChoiceField(label="It may", choices=TokenScope.choices, initial=TokenScope.READ)
    days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        max_value=365,
        initial=90,
        error_messages={
            "min_value": "A token lives from 1 to 365 days.",
            "max_value": "A token lives from 1 to 365 days.",
            "invalid": "Give the number of days, from 1 to 365.",
            "required": "Give the number of days, from 1 to 365.",
        },
    )
