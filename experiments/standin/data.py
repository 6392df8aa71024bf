"""Seeded demo data for the Mixpanel stand-in.

Deterministic: the same seed and day give the same experiments. Each demo
workspace starts with hand-written "showcase" experiments that exercise
rendering (HTML and script in names, quotes, very long text, non-Latin text,
nulls where the contract allows them, odd inner shapes of the unpublished
objects, every status), then, in Growth, "[demo fault]" rows whose force
conclude always fails in the way their name says, then generated filler up to
the requested count. Every one of them is valid against the published contract
(tests/schemas). Rows that break it on purpose, to test the client's tolerance of
real-world drift, are a separate set (tolerance_rows) a stand-in adds on request.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DemoWorkspace:
    mixpanel_workspace_id: int
    name: str
    region: str
    mixpanel_project_id: int | None


# Shared with seed_demo (the dashboard's Workspace rows) and tests/conftest.py
# (whose `workspace` fixture is Growth, us, 1001, project 77).
DEMO_WORKSPACES: tuple[DemoWorkspace, ...] = (
    DemoWorkspace(1001, "Growth", "us", 77),
    DemoWorkspace(2002, "Payments", "eu", 88),
    DemoWorkspace(3003, "Search & Discovery", "in", 99),
)

# (name, fault kind, parameters): force conclude of these rows always fails this way.
DEMO_FAULT_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("[demo fault] Mixpanel returns 500 (an HTML error page)", "server_error", {}),
    ("[demo fault] Mixpanel rate limits us (429, Retry-After 30 s)", "rate_limit", {"retry_after": 30}),
    ("[demo fault] Mixpanel answers 200 with a body that is not JSON", "not_json", {}),
    ('[demo fault] Mixpanel answers 200 with {"status": "error"}', "status_error", {}),
    ("[demo fault] The connection is reset", "reset", {}),
    ("[demo fault] Mixpanel stalls past our deadline", "stall", {"stall_seconds": 60}),
    ("[demo fault] Mixpanel applies the change, then drops the connection", "apply_then_drop", {}),
    ("[demo fault] Mixpanel answers 200 but leaves the experiment active", "noop_200", {}),
    ("[demo fault] The service account lacks access (403)", "forbidden", {}),
    ("[demo fault] Slow Mixpanel (3 s), then success", "latency", {"latency_ms": 3000}),
)
DEMO_FAULT_WORKSPACE_ID = 1001

SERVICE_ACCOUNT_NAME = "Experiment Desk service account"

_PEOPLE = (
    (101, "Priya Raman", "priya@example.com"),
    (102, "Jonas Müller", "jonas@example.com"),
    (103, "佐藤 花子", "hanako@example.com"),
    (104, "Omar Al-Farsi", "omar@example.com"),
    (105, "Zoë O'Brien", "zoe@example.com"),
)
_ADJECTIVES = ("Bold", "Calm", "Quick", "Smart", "Simple", "Sticky", "Clear", "Compact", "Friendly", "Guided")
_SUBJECTS = (
    "checkout",
    "onboarding",
    "search ranking",
    "pricing page",
    "signup form",
    "paywall",
    "home feed",
    "cart reminder",
    "trial banner",
    "invite flow",
)
_TAGS = ("q3", "q4", "mobile", "web", "pricing", "retention", "growth", "checkout", "ml", "copy")
_STATUS_WEIGHTS = (("active", 30), ("draft", 15), ("concluded", 25), ("success", 15), ("fail", 15))
_FLAGS = {
    "can_view": True,
    "can_update_basic": True,
    "can_update_restricted": False,
    "can_update_visibility": False,
    "can_share": True,
    "is_superadmin": False,
    "allow_staff_override": False,
    "is_shared_with_project": True,
}
_VARIANTS_AB = [
    {"key": "control", "name": "Control", "split": 50, "is_control": True},
    {"key": "treatment", "name": "Treatment", "split": 50, "is_control": False},
]
_METRICS_DEFAULT = [{"id": 1, "name": "Conversion", "type": "funnel", "is_primary": True}]
_LONG_TEXT = (
    "This paragraph is deliberately long so that layouts must wrap, truncate or scroll it gracefully. " * 60
).strip()


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 with a Z, as Mixpanel writes its dates."""
    if value is None:
        return None
    # isoformat is several times faster than strftime, which matters for 10,000 rows.
    return value.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _results(today: dt.datetime, *, lift: float, p_value: float) -> dict[str, Any]:
    """A results cache shaped the way we guess Mixpanel's may be (unpublished): per metric, per variant."""
    return {
        "computed_at": iso(today),
        "metrics": [
            {
                "name": "Conversion",
                "variants": {
                    "treatment": {
                        "lift": lift,
                        "p_value": p_value,
                        "confidence": round(1 - p_value, 4),
                        "significant": p_value < 0.05,
                    }
                },
            },
            {"name": "Revenue per user", "variants": {"treatment": {"lift": lift / 4, "p_value": 0.41}}},
        ],
    }


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def base_experiment(*, exp_id: str, name: str, status: str, created: dt.datetime) -> dict[str, Any]:
    """A complete experiment object with every published field, plain values."""
    creator_id, creator_name, creator_email = _PEOPLE[0]
    started = created + dt.timedelta(days=1) if status != "draft" else None
    ended = created + dt.timedelta(days=15) if status in ("concluded", "success", "fail") else None
    return {
        "id": exp_id,
        "name": name,
        "content_type": "experiment",
        "description": None,
        "hypothesis": None,
        "status": status,
        "created": iso(created),
        "modified": iso(ended or started or created),
        "start_date": iso(started),
        "end_date": iso(ended),
        "deleted": None,
        "creator_id": creator_id,
        "creator_name": creator_name,
        "creator_email": creator_email,
        "last_modified_by_id": creator_id,
        "last_modified_by_name": creator_name,
        "last_modified_by_email": creator_email,
        "tags": [],
        "is_favorited": False,
        "pinned_date": None,
        **_FLAGS,
        "variants": _VARIANTS_AB,
        "metrics": _METRICS_DEFAULT,
        "settings": {"feature_flag_key": None, "confidence_level": 0.95},
        "exposures_cache": {},
        "results_cache": {},
        "feature_flag": None,
    }


def _showcase(ws: DemoWorkspace, rng: random.Random, today: dt.datetime) -> list[dict[str, Any]]:
    """Hand-written rows that test rendering and tolerance, one set per workspace."""
    label = ws.name

    def make(name: str, status: str, days_ago: int, **fields: Any) -> dict[str, Any]:
        exp = base_experiment(exp_id=_uuid(rng), name=name, status=status, created=today - dt.timedelta(days=days_ago))
        exp.update(fields)
        return exp

    person = _PEOPLE[1]
    return [
        make(
            f"<script>alert(1)</script> {label} checkout button",
            "active",
            12,
            description="<b>bold?</b> <script>alert('xss')</script> & friends",
            hypothesis="If the <em>button</em> is green, more people check out.",
            tags=["<script>", "checkout", 'quote"tag'],
            exposures_cache={"control": 5120, "treatment": 5089},
            settings={"feature_flag_key": None, "confidence_level": 0.95, "duration_days": 28},
            results_cache=_results(today, lift=0.034, p_value=0.012),
        ),
        make(
            f'{label}: "Pro" tier\'s headline — A/B & more',
            "active",
            20,
            description="She said \"ship it\" & he said 'not yet'.",
            tags=["pricing", "copy"],
            exposures_cache={"total": 18234},
            is_favorited=True,
            pinned_date=(today - dt.timedelta(days=3)).strftime("%Y-%m-%d"),
        ),
        make(
            f"{label} very long name " + "that keeps going and going " * 10 + "until it ends",
            "concluded",
            60,
            description=_LONG_TEXT,
            hypothesis=_LONG_TEXT[:900],
            tags=[f"tag-{i}" for i in range(20)],
        ),
        make(
            f"検索結果の並び替え（{label}）日本語のテスト",  # noqa: RUF001 - real Japanese punctuation
            "success",
            45,
            description="ユーザーがより早く目的の商品を見つけられるか検証します。",
            creator_id=person[0],
            creator_name="佐藤 花子",
            creator_email="hanako@example.com",
            tags=["日本語", "search"],
            exposures_cache={"counts": {"control": 700, "variant_a": 712}},
        ),
        make(
            f"تجربة الصفحة الرئيسية — {label}",
            "fail",
            50,
            description="نص عربي يُكتب من اليمين إلى اليسار.",
            tags=["العربية"],
            exposures_cache={"control": 300, "treatment": "n/a"},
        ),
        make(
            f"🚀 Emoji onboarding {label} 🎉👩🏽‍💻",
            "draft",
            2,
            creator_id=None,
            creator_name=None,
            creator_email=None,
            last_modified_by_name=None,
            variants=[],
            metrics=[],
            settings={},
        ),
        make(
            f"<img src=x onerror=alert(1)> {{{{ request.user }}}} {{% debug %}} {label}",
            "active",
            7,
            description='javascript:alert(document.cookie) <a href="javascript:alert(1)">link</a> ${7*7} {{7*7}}',
            tags=["javascript:alert(1)", "{{ csrf_token }}"],
            metrics=[{"nested": {"deep": [1, 2, {"x": None}]}}, {}],
            variants=[{"weird": True}, {"name": "a variant without a key"}],
            exposures_cache={"control": 12, "treatment": 15, "note": "cached", "flag": True},
        ),
        make(
            f'=HYPERLINK("https://evil.example/","click me") {label}',
            "concluded",
            30,
            description="+cmd|' /C calc'!A0",
            hypothesis="@SUM(1+1)*cmd|' /C calc'!A0",
            tags=["=1+1", "-2+3", "@x", "+y"],
        ),
        make(
            f"{label} soft-deleted experiment",
            "concluded",
            90,
            deleted=iso(today - dt.timedelta(days=5)),
        ),
        make(
            f"{label} active with every nullable field null",
            "active",
            4,
            description=None,
            hypothesis=None,
            start_date=None,
            end_date=None,
            creator_id=None,
            creator_name=None,
            creator_email=None,
            feature_flag=None,
            pinned_date=None,
        ),
        make("", "active", 9, description="This experiment has an empty name."),
        make(
            f"{label} three-way test with a feature flag",
            "active",
            15,
            variants=[
                {"key": "control", "name": "Control", "split": 34, "is_control": True},
                {"key": "a", "name": "Variant A", "split": 33},
                {"key": "b", "name": "Variant B", "split": 33},
            ],
            feature_flag={"id": 555, "key": f"{label.lower().replace(' ', '-')}-flag", "status": "enabled"},
            exposures_cache={"control": 1000, "a": 990, "b": 1010},
            results_cache={
                "computed_at": iso(today),
                "lift": {"a": 0.021, "b": -0.004},
                "p_value": {"a": 0.048, "b": 0.71},
                "significant": {"a": True, "b": False},
            },
        ),
        make(
            f"{label} one-page checkout (exposures off the planned split)",
            "active",
            18,
            description="Treatment reaches fewer people than its 50% share: its page drops the exposure event.",
            tags=["checkout", "web"],
            settings={"feature_flag_key": None, "confidence_level": 0.95, "duration_days": 21},
            exposures_cache={"control": 10412, "treatment": 9311},
            results_cache=_results(today, lift=0.052, p_value=0.0004),
        ),
    ]


TOLERANCE_PREFIX = "[tolerance]"


def tolerance_rows(*, seed: int, workspace_id: int, today: dt.datetime) -> list[dict[str, Any]]:
    """Experiments that break the published schema the ways real upstreams drift.

    Nulls where the contract promises values, a field the contract does not list, and
    variants and metrics that are not objects. The client must list and show them all
    without failing.
    """
    rng = random.Random(f"{seed}:{workspace_id}:tolerance")
    created = today - dt.timedelta(days=6)

    def make(name: str, **fields: Any) -> dict[str, Any]:
        exp = base_experiment(exp_id=_uuid(rng), name=f"{TOLERANCE_PREFIX} {name}", status="active", created=created)
        exp.update(fields)
        return exp

    nulls = dict.fromkeys(
        ("created", "modified", "settings", "exposures_cache", "results_cache", "last_modified_by_id", "tags"), None
    )
    return [
        make("nulls where Mixpanel promises values", last_modified_by_email=None, **nulls),
        make("a field a later Mixpanel may add", future_field={"added_by": "a later Mixpanel", "values": [1, 2]}),
        make(
            "variants and metrics that are not objects",
            variants=["variant as a string", None, 7],
            metrics=["a metric given as a bare string", 42, None],
            exposures_cache={"control": 12, "treatment": 15, "note": "cached", "flag": True},
        ),
    ]


def _fault_rows(rng: random.Random, today: dt.datetime) -> tuple[list[dict[str, Any]], dict[str, tuple[str, dict]]]:
    rows: list[dict[str, Any]] = []
    faults: dict[str, tuple[str, dict]] = {}
    for i, (name, kind, params) in enumerate(DEMO_FAULT_ROWS):
        exp = base_experiment(exp_id=_uuid(rng), name=name, status="active", created=today - dt.timedelta(days=3 + i))
        exp["description"] = (
            "A demo row of the local Mixpanel stand-in: pressing Force conclude on it always fails "
            "the way its name says, so you can see how the dashboard reports it."
        )
        exp["tags"] = ["demo-fault"]
        exp["exposures_cache"] = {"control": 100 + i, "treatment": 98 + i}
        rows.append(exp)
        faults[exp["id"]] = (kind, params)
    return rows, faults


def _filler(rng: random.Random, today: dt.datetime, index: int) -> dict[str, Any]:
    statuses = [s for s, _ in _STATUS_WEIGHTS]
    weights = [w for _, w in _STATUS_WEIGHTS]
    status = rng.choices(statuses, weights)[0]
    created = today - dt.timedelta(days=rng.randint(1, 400), minutes=rng.randint(0, 1439))
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_SUBJECTS)} #{index}"
    exp = base_experiment(exp_id=_uuid(rng), name=name, status=status, created=created)
    person = _PEOPLE[rng.randrange(len(_PEOPLE))]
    exp["creator_id"], exp["creator_name"], exp["creator_email"] = person
    exp["tags"] = rng.sample(_TAGS, rng.randint(0, 3))
    if status != "draft":
        exposed = rng.randint(50, 50_000)
        # Within two standard deviations of an even split, so filler shows no sample-ratio mismatch.
        spread = rng.randint(-500, 500) / 250 * exposed**0.5
        exp["exposures_cache"] = {"control": exposed, "treatment": exposed + round(spread)}
    if rng.random() < 0.1:
        exp["description"] = f"Testing whether a {name.lower()} moves the primary metric."
    return exp


def results_of_size(rng: random.Random, size: int) -> dict[str, Any]:
    """A results cache of about `size` bytes of JSON: per metric, per variant, the usual statistics.

    Mixpanel's results caches are unpublished; real ones run to a few kilobytes per
    experiment, which is what makes a large workspace's list tens of megabytes.
    """
    metrics: list[dict[str, Any]] = []
    used = 40
    while used < size:
        lift = round(rng.uniform(-0.1, 0.1), 4)
        metric = {
            "name": f"Metric {len(metrics) + 1}",
            "variants": {
                key: {
                    "lift": lift if key == "treatment" else 0.0,
                    "p_value": round(rng.random(), 4),
                    "confidence_interval": [round(lift - 0.02, 4), round(lift + 0.02, 4)],
                    "mean": round(rng.uniform(0, 50), 3),
                    "users": rng.randint(100, 50_000),
                }
                for key in ("control", "treatment")
            },
        }
        metrics.append(metric)
        used += 330  # about what one metric serialises to
    return {"computed_at": "2026-11-26T09:00:00Z", "metrics": metrics}


def build_workspace(
    ws: DemoWorkspace, *, seed: int, count: int, today: dt.datetime, results_bytes: int = 0
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, dict]]]:
    """The first `count` experiments of a demo workspace, and its built-in faults by experiment id.

    `results_bytes` gives every generated experiment a results cache of about that size.
    """
    rng = random.Random(f"{seed}:{ws.mixpanel_workspace_id}")
    rows = _showcase(ws, rng, today)
    faults: dict[str, tuple[str, dict]] = {}
    if ws.mixpanel_workspace_id == DEMO_FAULT_WORKSPACE_ID:
        fault_rows, faults = _fault_rows(rng, today)
        rows.extend(fault_rows)
    rows = rows[:count]
    index = len(rows)
    while len(rows) < count:
        index += 1
        row = _filler(rng, today, index)
        if results_bytes:
            row["results_cache"] = results_of_size(rng, results_bytes)
        rows.append(row)
    kept = {row["id"] for row in rows}
    return rows, {exp_id: fault for exp_id, fault in faults.items() if exp_id in kept}
