"""A small stand-in for the Mixpanel client in view tests of the experiments pages.

Duck-types experiments.mixpanel.MixpanelClient: it parses raw JSON with the real
parse_experiment, counts calls, and fails on demand.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from experiments import mixpanel


def exp_json(n: int, status: str = "active", **extra: Any) -> dict[str, Any]:
    """A plausible experiment; `n` makes id, name and dates distinct and sortable."""
    start = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(days=n)
    data: dict[str, Any] = {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "name": f"Experiment {n:05d}",
        "status": status,
        "start_date": None if status == "draft" else start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_date": (start + dt.timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if status in ("concluded", "success", "fail")
        else None,
        "created": "2025-12-20T10:00:00Z",
        "modified": "2025-12-21T10:00:00Z",
        "creator_name": "Casey Creator",
        "creator_email": "casey@example.com",
        "last_modified_by_name": "Morgan Modifier",
        "tags": ["growth"],
        "hypothesis": "Green buttons convert better",
        "description": "A test of the checkout button",
        "variants": [{"key": "control"}, {"key": "green"}],
        "metrics": [{"name": "Checkout rate"}],
        "exposures_cache": {"control": 100, "green": 110},
        "feature_flag": {"key": "checkout-green"},
    }
    data.update(extra)
    return data


class FakeClient:
    def __init__(self, experiments: list[dict[str, Any]] | None = None) -> None:
        self.raw: list[dict[str, Any]] = list(experiments or [])
        self.list_calls = 0
        self.get_calls: list[str] = []
        self.put_calls: list[tuple[str, dt.datetime]] = []
        self.list_error: BaseException | None = None
        self.get_error: BaseException | None = None
        self.put_error: BaseException | None = None
        # What get_experiment answers; defaults to the list's item.
        self.details: dict[str, dict[str, Any]] = {}

    def list_experiments(self, workspace_id: int) -> list[mixpanel.ExperimentSummary]:
        self.list_calls += 1
        if self.list_error is not None:
            raise self.list_error
        return [mixpanel.summarize_experiment(item) for item in self.raw]

    def _item(self, experiment_id: str) -> dict[str, Any]:
        if experiment_id in self.details:
            return self.details[experiment_id]
        for item in self.raw:
            if item["id"] == experiment_id:
                return item
        raise mixpanel.MixpanelNotFound(http_status=404)

    def get_experiment(self, workspace_id: int, experiment_id: str) -> mixpanel.Experiment:
        self.get_calls.append(experiment_id)
        if self.get_error is not None:
            raise self.get_error
        return mixpanel.parse_experiment(self._item(experiment_id))

    def force_conclude(self, workspace_id: int, experiment_id: str, *, end_date: dt.datetime) -> Any:
        self.put_calls.append((experiment_id, end_date))
        if self.put_error is not None:
            raise self.put_error
        item = self._item(experiment_id)
        item.update(status="concluded", end_date=mixpanel.format_end_date(end_date))
        return mixpanel.ConcludeResult(
            experiment=mixpanel.parse_experiment(item),
            http_status=200,
            duration_ms=5,
            raw_body=json.dumps({"status": "ok", "results": item}),
        )


def install(monkeypatch: Any, client: FakeClient) -> FakeClient:
    """Make experiments.mixpanel.client_for hand out `client` (the views call it by module attribute)."""
    monkeypatch.setattr(mixpanel, "client_for", lambda workspace: client)
    return client
