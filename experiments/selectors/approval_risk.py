"""Whether a press needs two-person approval: the workspace's policy and the risk rules.

One rule, one place. The dialogs say before anyone presses whether approval is needed and
why; the press judges again on its own fresh read and records the rules that made it a
request. Both call `approval_verdict` on facts taken from the experiment by the experiment
page's own readers (planned length, the sample-ratio test, the results' lifts), so the
dialog and the press agree on the same data.

A conclusion is risky when it ends before the planned length, when the page shows a
sample-ratio warning, or when the plan changed after it was sealed. A decision is risky for
the same reasons, or when it ships a variant the results show as worse than control.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from experiments.dates import format_utc
from experiments.mixpanel import shapes
from experiments.mixpanel.experiment import Experiment
from experiments.models import ApprovalPolicy, AttemptAction, Workspace
from experiments.selectors import plans as plan_selectors

RULE_ALWAYS = "always"
RULE_EARLY = "before_planned_length"
RULE_SRM = "sample_ratio_warning"
RULE_PLAN_CHANGED = "plan_changed"
RULE_WORSE = "worse_than_control"

WORDS_ALWAYS = {
    AttemptAction.CONCLUSION: "this workspace asks a second person to approve every Force conclude",
    AttemptAction.DECISION: "this workspace asks a second person to approve every decision",
}
WORDS_EARLY = "the planned length ({planned}) is not reached — {run} run"
WORDS_EARLY_DECISION = "the experiment ended before its planned length ({planned}) — {run} run"
WORDS_EARLY_NO_START = "it ends before its planned end ({when})"
WORDS_SRM = "the experiment page shows a sample-ratio warning: exposures do not follow the planned split"
WORDS_PLAN_CHANGED = "the plan changed after it was sealed (found changed {when})"
WORDS_WORSE = "it ships {variant}, which the results show as worse than control (lift {lift} on {metric})"
UNCHECKED_LENGTH = "Planned length: none is given, so this rule could not be checked."
UNCHECKED_RESULTS = "Worse than control: results could not be read, so this rule could not be checked."

MSG_NEEDED = "Needs approval: {rules}."
MSG_NOT_NEEDED = "No approval needed: none of this workspace's risk rules applies."


@dataclass(frozen=True, slots=True)
class RiskRule:
    """One reason a press needs approval: its code (RULE_*) and plain words."""

    rule: str
    words: str


@dataclass(frozen=True, slots=True)
class RiskFacts:
    """What the risk rules read of an experiment, by the experiment page's readers."""

    start_date: dt.datetime | None
    end_date: dt.datetime | None  # when its analysis ended (a concluded one), else None
    planned_end: dt.datetime | None  # shapes.planned_finish: the page's rule
    sample_ratio_mismatch: bool | None  # the page's warning: True when it shows one
    # Per variant key (casefolded): (lift as shown, metric); None when there are no results to read.
    lifts: dict[str, tuple[str, str]] | None
    control: str | None


@dataclass(frozen=True, slots=True)
class ApprovalVerdict:
    """Whether a press needs a second person's approval, and why."""

    policy: str  # an ApprovalPolicy value
    needed: bool
    rules: tuple[RiskRule, ...]  # the rules that make it a request (empty when not needed)
    unchecked: tuple[str, ...] = ()  # rules that could not be checked, in words

    @property
    def message(self) -> str:
        """What the dialog says before anyone presses ("" where approval never applies)."""
        if self.policy == ApprovalPolicy.NEVER:
            return ""
        if self.needed:
            return MSG_NEEDED.format(rules="; ".join(rule.words for rule in self.rules))
        return MSG_NOT_NEEDED

    def as_record(self) -> list[dict[str, str]]:
        """The rules as the attempt and its request entry keep them."""
        return [{"rule": rule.rule, "words": rule.words} for rule in self.rules]


def risk_facts(experiment: Any) -> RiskFacts:
    """The facts of an Experiment (as read by id) or of the list's ExperimentSummary, which
    keeps the page's planned end and split verdict but no results."""
    concluded_end = experiment.end_date if experiment.is_concluded else None
    if not isinstance(experiment, Experiment):
        return RiskFacts(
            experiment.start_date, concluded_end, experiment.planned_end, experiment.sample_ratio_mismatch, None, None
        )
    table = shapes.variant_table(experiment.variants, experiment.exposures_cache)
    srm, _ = shapes.sample_ratio_check(table)
    lifts = shapes.variant_lifts(experiment.results_cache)
    return RiskFacts(
        start_date=experiment.start_date,
        end_date=concluded_end,
        planned_end=shapes.planned_finish(experiment.settings, experiment.start_date),
        sample_ratio_mismatch=srm.mismatch if srm is not None else None,
        lifts=lifts or None,
        control=shapes.control_variant(experiment.variants),
    )


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def _lift_number(text: str) -> float | None:
    try:
        return float(text.strip().rstrip("%").replace("+", "", 1))
    except ValueError:
        return None


def approval_verdict(
    *,
    policy: str,
    action: str,
    facts: RiskFacts | None,
    variant: str | None,
    now: dt.datetime,
    plan_changed_at: dt.datetime | None,
) -> ApprovalVerdict:
    """Whether a press of `action` needs approval under `policy`, and the rules that apply.

    Pure: the same facts give the same verdict. `now` is when the conclusion's analysis
    ends (a decision reads the experiment's own end); `variant` is the key a decision ships,
    None when it ships none; `facts` may be None only where the policy is not "when risky".
    """
    if policy == ApprovalPolicy.NEVER:
        return ApprovalVerdict(policy, needed=False, rules=())
    if policy == ApprovalPolicy.ALWAYS:
        return ApprovalVerdict(policy, needed=True, rules=(RiskRule(RULE_ALWAYS, WORDS_ALWAYS[action]),))
    if facts is None:
        raise ValueError("The risk rules need the experiment's facts.")
    rules: list[RiskRule] = []
    unchecked: list[str] = []
    decision = action == AttemptAction.DECISION

    # Before the planned length: the analysis ends before the planned end.
    ends = (facts.end_date or now) if decision else now
    if facts.planned_end is None:
        unchecked.append(UNCHECKED_LENGTH)
    elif ends < facts.planned_end:
        if facts.start_date is not None:
            planned = _days(max(0, (facts.planned_end - facts.start_date).days))
            run = _days(max(0, (ends - facts.start_date).days))
            words = (WORDS_EARLY_DECISION if decision else WORDS_EARLY).format(planned=planned, run=run)
        else:
            words = WORDS_EARLY_NO_START.format(when=format_utc(facts.planned_end))
        rules.append(RiskRule(RULE_EARLY, words))

    if facts.sample_ratio_mismatch:
        rules.append(RiskRule(RULE_SRM, WORDS_SRM))

    if plan_changed_at is not None:
        rules.append(RiskRule(RULE_PLAN_CHANGED, WORDS_PLAN_CHANGED.format(when=format_utc(plan_changed_at))))

    # Worse than control: only a decision that ships a variant other than the control.
    shipping = decision and variant is not None and variant.casefold() != (facts.control or "").casefold()
    if shipping:
        lift, metric = (facts.lifts or {}).get(variant.casefold(), ("", ""))
        number = _lift_number(lift) if lift else None
        if number is None:
            unchecked.append(UNCHECKED_RESULTS)
        elif number < 0:
            rules.append(RiskRule(RULE_WORSE, WORDS_WORSE.format(variant=variant, lift=lift, metric=metric)))

    return ApprovalVerdict(policy, needed=bool(rules), rules=tuple(rules), unchecked=tuple(unchecked))


def press_verdict(
    *, workspace: Workspace, action: str, experiment: Any, variant: str | None = None, now: dt.datetime
) -> ApprovalVerdict:
    """The verdict for a press (or a dialog) in `workspace` on `experiment` (an Experiment or
    the list's summary; None is enough where the policy is not "when risky"), with the
    sealed plan's changes from the chain."""
    policy = workspace.approval_policy
    if policy != ApprovalPolicy.RISKY:
        return approval_verdict(
            policy=policy, action=action, facts=None, variant=variant, now=now, plan_changed_at=None
        )
    changed = plan_selectors.plan_changed_since_seal(workspace=workspace, experiment_id=experiment.id)
    return approval_verdict(
        policy=policy,
        action=action,
        facts=risk_facts(experiment),
        variant=variant,
        now=now,
        plan_changed_at=changed,
    )


def decision_verdicts(
    *, workspace: Workspace, experiment: Experiment, variants: list[str | None], now: dt.datetime
) -> list[ApprovalVerdict]:
    """The verdict for each choice of the decision dialog (a variant key, or None to ship
    none), in order, asking the chain about the plan once."""
    policy = workspace.approval_policy
    facts = risk_facts(experiment) if policy == ApprovalPolicy.RISKY else None
    changed = (
        plan_selectors.plan_changed_since_seal(workspace=workspace, experiment_id=experiment.id)
        if policy == ApprovalPolicy.RISKY
        else None
    )
    action = AttemptAction.DECISION
    return [
        approval_verdict(policy=policy, action=action, facts=facts, variant=v, now=now, plan_changed_at=changed)
        for v in variants
    ]
