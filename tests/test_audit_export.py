"""Audit export: streamed CSV and NDJSON of exactly the current filter, safe in spreadsheets."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse

from experiments.models import AttemptState
from experiments.views.audit import neutralise_cell
from tests.factories import make_attempt

LIST = reverse("experiments:audit-list")
CSV_URL = reverse("experiments:audit-export", args=["csv"])
NDJSON_URL = reverse("experiments:audit-export", args=["ndjson"])


def body_of(response) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode("utf-8")


def csv_rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body_of(response), newline="")))


def shown_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/audit/(\d+)/"', response.content.decode())]


@pytest.mark.django_db
def test_csv_is_a_streamed_dated_attachment(client, auditor, workspace, pm):
    make_attempt(workspace=workspace, actor=pm)
    client.force_login(auditor)
    response = client.get(CSV_URL)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="conclusion-audit-\d{8}-\d{6}\.csv"', response["Content-Disposition"])
    assert "no-store" in response["Cache-Control"]
    rows = csv_rows(response)
    assert len(rows) == 1
    assert rows[0]["actor_name"] == "Pat (pat)"
    assert rows[0]["outcome"] == "succeeded"
    assert rows[0]["http_status"] == "200"
    assert rows[0]["workspace"] == "Growth"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "evil",
    [
        '=HYPERLINK("http://evil.example","x")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)",
        "\t=1+1",
        "\r=1+1",
        "\uff1d1+1",
        "\n=1+1",
        " =1+1",
        "   +cmd|' /C calc'!A0",
        "\u00a0@SUM(1+1)",
        " \t-2+3",
        "\nplain text after a line feed",
    ],
)
def test_csv_neutralises_formula_injection_in_every_text_cell(client, auditor, workspace, pm, evil):
    # An id with a control character never gets past the Mixpanel client, so ids are tried
    # with the printable payloads only.
    evil_id = evil.isprintable()
    make_attempt(
        workspace=workspace,
        actor=pm,
        experiment_id=evil if evil_id else "exp-1",
        experiment_name=evil,
        reason_text=evil,
        outcome=AttemptState.FAILED,
        error=evil,
    )
    client.force_login(auditor)
    (row,) = csv_rows(client.get(CSV_URL))
    for column in ("experiment_id", "experiment_name", "reason_text", "failure_reason"):
        if column != "experiment_id" or evil_id:
            assert row[column] == "'" + evil, column
    # Numbers stay numbers; safe text is left alone.
    assert row["http_status"] == "200"
    assert row["actor_name"] == "Pat (pat)"


def test_neutralise_leaves_ordinary_text_alone():
    assert neutralise_cell("Checkout = better") == "Checkout = better"
    assert neutralise_cell("") == ""
    assert neutralise_cell("-") == "'-"
    assert neutralise_cell(" a leading space") == " a leading space"
    assert neutralise_cell("a = b\n=c") == "a = b\n=c"


@pytest.mark.django_db
@pytest.mark.parametrize("microsecond", [0, 123456])
def test_dates_are_iso_8601_utc(client, auditor, workspace, pm, microsecond):
    when = dt.datetime(2026, 3, 1, 12, 30, 5, microsecond, tzinfo=dt.UTC)
    attempt = make_attempt(workspace=workspace, actor=pm, created_at=when, end_date=when - dt.timedelta(hours=1))
    client.force_login(auditor)
    (row,) = csv_rows(client.get(CSV_URL))
    (record,) = [json.loads(line) for line in body_of(client.get(NDJSON_URL)).splitlines()]
    for exported in (row, record):
        assert exported["created_at"].startswith("2026-03-01T12:30:05")
        assert exported["created_at"].endswith("Z")
        assert dt.datetime.fromisoformat(exported["created_at"]) == when
        assert dt.datetime.fromisoformat(exported["end_date_sent"]) == when - dt.timedelta(hours=1)
        assert dt.datetime.fromisoformat(exported["finished_at"]) == attempt.finished_at


@pytest.mark.django_db
def test_json_columns_are_json_text_not_python_reprs(client, auditor, workspace, pm):
    make_attempt(workspace=workspace, actor=pm)
    client.force_login(auditor)
    (row,) = csv_rows(client.get(CSV_URL))
    body = json.loads(row["request_body"])
    assert set(body) == {"end_date"}
    assert body["end_date"].endswith("Z")
    (line,) = body_of(client.get(NDJSON_URL)).splitlines()
    record = json.loads(line)
    assert record["request_body"] == body  # a nested object, not a string
    assert record["created_at"].endswith("Z")


@pytest.mark.django_db
def test_ndjson_is_one_json_object_per_line(client, auditor, workspace, other_workspace, pm, outsider):
    for i in range(5):
        make_attempt(workspace=workspace if i % 2 else other_workspace, actor=pm if i % 2 else outsider)
    client.force_login(auditor)
    response = client.get(NDJSON_URL)
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].endswith('.ndjson"')
    text = body_of(response)
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 5
    assert all(isinstance(r, dict) for r in records)
    assert [r["attempt_id"] for r in records] == sorted((r["attempt_id"] for r in records), reverse=True)
    assert {r["workspace"] for r in records} == {"Growth", "Payments"}


@pytest.fixture
def mixed(workspace, other_workspace, pm, ws_admin, outsider):
    made = []
    for i in range(30):
        made.append(
            make_attempt(
                workspace=other_workspace if i % 5 == 0 else workspace,
                actor=outsider if i % 5 == 0 else (pm if i % 2 else ws_admin),
                experiment_id=f"exp-{i}",
                experiment_name=f"Test {i} {'pricing' if i % 3 == 0 else 'copy'}",
                outcome=AttemptState.FAILED if i % 4 == 0 else AttemptState.SUCCEEDED,
            )
        )
    return made


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"outcome": "failed"},
        {"q": "pricing"},
        {"person": "pat", "outcome": "succeeded"},
        {"date_from": "2000-01-01", "date_to": "2999-12-31", "q": "copy"},
    ],
)
@pytest.mark.parametrize("persona", ["auditor", "pm"])
def test_export_equals_the_filtered_list(client, request, mixed, persona, params):
    client.force_login(request.getfixturevalue(persona))
    listed = shown_ids(client.get(LIST, {**params, "size": 200}))
    assert listed  # the filter matches something, so the comparison means something
    csv_ids = [int(row["attempt_id"]) for row in csv_rows(client.get(CSV_URL, params))]
    ndjson_ids = [json.loads(line)["attempt_id"] for line in body_of(client.get(NDJSON_URL, params)).splitlines()]
    assert csv_ids == listed
    assert ndjson_ids == listed


@pytest.mark.django_db
def test_list_export_links_carry_the_filter(client, auditor, mixed, workspace):
    client.force_login(auditor)
    text = client.get(LIST, {"outcome": "failed", "workspace": workspace.pk, "size": 10}).content.decode()
    link = re.search(r'href="(/audit/export\.csv\?[^"]*)"', text).group(1).replace("&amp;", "&")
    ids = [int(row["attempt_id"]) for row in csv_rows(client.get(link))]
    expected = [a.pk for a in reversed(mixed) if a.workspace_id == workspace.pk and a.state == "failed"]
    assert ids == expected


@pytest.mark.django_db
def test_member_export_is_limited_to_their_workspaces(client, outsider, mixed, other_workspace):
    client.force_login(outsider)
    rows = csv_rows(client.get(CSV_URL))
    assert rows
    assert {row["workspace_id"] for row in rows} == {str(other_workspace.pk)}


@pytest.mark.django_db
def test_unknown_format_is_404_and_bad_filter_is_a_readable_400(client, auditor):
    client.force_login(auditor)
    assert client.get(reverse("experiments:audit-export", args=["xlsx"])).status_code == 404
    response = client.get(CSV_URL, {"date_from": "31/12/2026"})
    assert response.status_code == 400
    assert "Enter the From date as YYYY-MM-DD." in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"date_from": "0001-01-01"}, "Enter a date between 1900-01-01 and 2999-12-31."),
        ({"date_to": "9999-12-31"}, "Enter a date between 1900-01-01 and 2999-12-31."),
        ({"workspace": "9223372036854775808"}, "Choose a workspace."),
        ({"person": "9223372036854775808"}, "No one has that user id."),
    ],
)
def test_an_out_of_range_filter_is_a_400_before_the_first_byte(client, auditor, workspace, pm, params, message):
    make_attempt(workspace=workspace, actor=pm)
    client.force_login(auditor)
    for url in (CSV_URL, NDJSON_URL):
        response = client.get(url, params)
        assert response.status_code == 400
        assert not response.streaming
        assert message in response.content.decode()


@pytest.mark.django_db
def test_a_person_written_with_other_digits_is_a_username_not_an_id(client, auditor, workspace, pm):
    make_attempt(workspace=workspace, actor=pm)
    client.force_login(auditor)
    response = client.get(CSV_URL, {"person": "²"})
    assert response.status_code == 200
    assert csv_rows(response) == []  # no user is called "²"


@pytest.mark.django_db
def test_both_exports_carry_the_seq_and_hash_of_each_attempts_latest_entry(client, auditor, workspace, pm):
    """A row can be found in the hash chain: the seq and hash of the attempt's latest entry."""
    from experiments.models import AuditEntry

    done = make_attempt(workspace=workspace, actor=pm, experiment_id="exp-done")
    open_one = make_attempt(workspace=workspace, actor=pm, experiment_id="exp-open", outcome=None)
    reconciled = make_attempt(
        workspace=workspace, actor=pm, experiment_id="exp-rec", outcome=AttemptState.UNKNOWN, reconciled="applied"
    )
    latest = {a.pk: AuditEntry.objects.filter(attempt=a).order_by("-seq").first() for a in (done, open_one, reconciled)}
    assert AuditEntry.objects.filter(attempt=reconciled).count() == 3
    client.force_login(auditor)

    rows = csv_rows(client.get(CSV_URL))
    assert list(rows[0])[-2:] == ["seq", "hash"]
    assert {int(r["attempt_id"]): (int(r["seq"]), r["hash"]) for r in rows} == {
        pk: (entry.seq, entry.hash) for pk, entry in latest.items()
    }
    records = [json.loads(line) for line in body_of(client.get(NDJSON_URL)).splitlines()]
    assert {r["attempt_id"]: (r["seq"], r["hash"]) for r in records} == {
        pk: (entry.seq, entry.hash) for pk, entry in latest.items()
    }
    assert all(isinstance(r["seq"], int) and re.fullmatch(r"[0-9a-f]{64}", r["hash"]) for r in records)


@pytest.mark.django_db
def test_a_withdrawal_is_exported_as_its_own_outcome_with_no_reviewer(client, auditor, approving, pm, second):
    from experiments.services import approvals
    from tests.fake_mixpanel import FakeMixpanel
    from tests.test_services_force_conclude import conclude

    fake = FakeMixpanel()
    withdrawn = conclude(approving, pm, fake).attempt
    approvals.attempt_review(attempt=withdrawn, user=pm, decision=approvals.REJECT, note="", client=None)
    rejected = conclude(approving, pm, fake).attempt
    approvals.attempt_review(attempt=rejected, user=second, decision=approvals.REJECT, note="Not yet.", client=None)
    client.force_login(auditor)
    rows = {int(row["attempt_id"]): row for row in csv_rows(client.get(CSV_URL))}
    assert rows[withdrawn.pk]["outcome"] == "withdrawn"
    # Nobody reviewed it: it must not read as the requester reviewing their own request.
    assert rows[withdrawn.pk]["reviewer_id"] == rows[withdrawn.pk]["reviewer_name"] == ""
    assert rows[withdrawn.pk]["reviewed_at"] == ""
    assert rows[rejected.pk]["outcome"] == "rejected"
    assert rows[rejected.pk]["reviewer_name"] == "Quinn (quinn)"
    lines = [json.loads(line) for line in body_of(client.get(NDJSON_URL, {"outcome": "withdrawn"})).splitlines()]
    assert [(line["attempt_id"], line["outcome"], line["reviewer_id"]) for line in lines] == [
        (withdrawn.pk, "withdrawn", None)
    ]
