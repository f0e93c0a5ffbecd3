"""The usage hand-off: durable before the answer, written once, recovered after crashes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from metering import ingest
from metering.models import UsageEvent, UsageRollup
from metering.records import UsageRecord
from metering.spool import LEGACY_SPOOL_SUFFIX, SPOOL_SUFFIX, SpoolSink, decode, encode
from tests.conftest import Tenants


def _record(org_id: str, request_id: str, **overrides: object) -> UsageRecord:
    fields = {
        "request_id": request_id,
        "organization_id": org_id,
        "at": datetime(2026, 11, 28, 10, 30, tzinfo=UTC),
        "key_id": "key_x",
        "endpoint": "chat/completions",
        "model": "m",
        "route": "m",
        "target": "provider:p/m",
        "deployment_id": "",
        "region": "us-east",
        "status": 200,
        "error_code": "",
        "streamed": False,
        "attempts": 1,
        "input_tokens": 10,
        "output_tokens": 20,
        "latency_ms": 12.5,
        "ttft_ms": None,
        "cost": Decimal("0.000000123456"),
    }
    return UsageRecord(**{**fields, **overrides})  # type: ignore[arg-type]


def test_replaying_events_changes_nothing(tenants: Tenants) -> None:
    records = [_record(tenants.org_a.pk, f"req_{i}") for i in range(50)] + [_record(tenants.org_b.pk, "req_b")]
    ingest.write_batch(records)
    ingest.write_batch(records)
    ingest.write_batch(records[10:20] + [_record(tenants.org_a.pk, "req_new")])
    assert UsageEvent.objects.for_org(tenants.org_a).count() == 51
    assert UsageEvent.objects.for_org(tenants.org_b).count() == 1
    event = UsageEvent.objects.for_org(tenants.org_a).get(request_id="req_3")
    assert event.cost == Decimal("0.000000123456") and event.at == datetime(2026, 11, 28, 10, 30, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)  # foreign keys are checked at commit, as in production
def test_events_of_a_deleted_organization_do_not_block_the_others(tenants: Tenants) -> None:
    ingest.write_batch([_record(tenants.org_a.pk, "req_a"), _record("org_gone", "req_gone")])
    assert list(UsageEvent.objects.unscoped_across_tenants().values_list("request_id", flat=True)) == ["req_a"]


def _spool_with(directory: Path, records: list[UsageRecord]) -> SpoolSink:
    import asyncio

    sink = SpoolSink(directory)

    async def write() -> None:
        for record in records:
            await sink.append(record)

    asyncio.run(write())
    return sink


def test_the_spool_is_read_once_and_an_ingester_crash_before_the_ack_writes_nothing_twice(tenants: Tenants, tmp_path: Path) -> None:
    import asyncio

    sink = _spool_with(tmp_path, [_record(tenants.org_a.pk, f"req_{i}") for i in range(30)])
    source = ingest.SpoolSource(tmp_path)
    batch = source.read()
    assert batch is not None and batch.events == 30
    ingest.write_payloads(batch.payloads)  # written, then the ingester "dies" before acknowledging
    assert ingest.ingest_available([source]) == 30  # read again from the last acknowledged offset
    assert UsageEvent.objects.for_org(tenants.org_a).count() == 30
    assert ingest.ingest_available([source]) == 0
    # The writer is alive: its file stays. Once it closes (or dies), the file goes.
    assert list(tmp_path.glob("*" + SPOOL_SUFFIX))
    asyncio.run(sink.aclose())
    ingest.ingest_available([source])
    assert not list(tmp_path.iterdir())


def test_a_line_cut_by_a_crash_is_not_an_event(tenants: Tenants, tmp_path: Path) -> None:
    path = tmp_path / f"host-1-1{SPOOL_SUFFIX}"
    path.write_bytes(encode(_record(tenants.org_a.pk, "req_whole")) + b"\n" + encode(_record(tenants.org_a.pk, "req_cut"))[:40])
    assert ingest.ingest_available([ingest.SpoolSource(tmp_path)]) == 1
    assert list(UsageEvent.objects.for_org(tenants.org_a).values_list("request_id", flat=True)) == ["req_whole"]
    assert not path.exists()


def test_spool_lines_and_stream_entries_are_written_alike_and_an_unreadable_one_is_skipped(tenants: Tenants) -> None:
    line = encode(_record(tenants.org_a.pk, "req_line"))
    entry = b"\n".join(encode(_record(tenants.org_a.pk, f"req_entry_{i}", input_tokens=i)) for i in range(3))
    ingest.write_payloads([line, entry, b"req_broken\t" + tenants.org_a.pk.encode() + b"\tnot a time", line])
    assert sorted(UsageEvent.objects.for_org(tenants.org_a).values_list("request_id", "input_tokens")) == [
        ("req_entry_0", 0),
        ("req_entry_1", 1),
        ("req_entry_2", 2),
        ("req_line", 10),
    ]
    assert UsageRollup.objects.for_org(tenants.org_a).get(granularity="day", breakdown="none").requests == 4


def test_json_events_spooled_by_an_earlier_version_are_still_written(tenants: Tenants, tmp_path: Path) -> None:
    def legacy(record: UsageRecord) -> bytes:
        fields = asdict(record)
        del fields["served_model"]  # an earlier version did not keep it
        return orjson.dumps(fields, default=str)

    (tmp_path / f"host-1-1{LEGACY_SPOOL_SUFFIX}").write_bytes(legacy(_record(tenants.org_a.pk, "req_old_line")) + b"\n")
    assert ingest.ingest_available([ingest.SpoolSource(tmp_path)]) == 1
    entry = b"[" + b",".join(legacy(_record(tenants.org_b.pk, f"req_old_{i}")) for i in range(2)) + b"]"
    ingest.write_payloads([entry, b'{"request_id": "req_broken", "organi', legacy(_record(tenants.org_a.pk, "req_old_line"))])
    assert sorted(UsageEvent.objects.unscoped_across_tenants().values_list("request_id", flat=True)) == [
        "req_old_0",
        "req_old_1",
        "req_old_line",
    ]
    assert UsageRollup.objects.for_org(tenants.org_b).get(granularity="day", breakdown="none").requests == 2


def test_lines_spooled_before_the_served_model_was_kept_are_still_written(tenants: Tenants, tmp_path: Path) -> None:
    def legacy(record: UsageRecord) -> bytes:
        return encode(record).rsplit(b"\t", 2)[0]  # the 19 fields, without the last two (served_model, charge)

    old = _record(tenants.org_a.pk, "req_old_text", model="assistant")
    (tmp_path / f"host-1-1{SPOOL_SUFFIX}").write_bytes(legacy(old) + b"\n")
    assert ingest.ingest_available([ingest.SpoolSource(tmp_path)]) == 1
    # A stream entry of several such lines, and a current line beside them.
    entry = b"\n".join(legacy(_record(tenants.org_b.pk, f"req_old_text_{i}")) for i in range(3))
    current = _record(tenants.org_b.pk, "req_new_text", model="assistant", served_model="gpt-x")
    ingest.write_payloads([entry, encode(current)])
    served = dict(UsageEvent.objects.unscoped_across_tenants().values_list("request_id", "served_model"))
    assert served == {"req_old_text": "", "req_old_text_0": "", "req_old_text_1": "", "req_old_text_2": "", "req_new_text": "gpt-x"}
    by_served = UsageRollup.objects.for_org(tenants.org_b).filter(granularity="day", breakdown="all")
    assert sorted(by_served.values_list("served_model", "requests")) == [("", 3), ("gpt-x", 1)]


def test_lines_spooled_before_charges_were_kept_show_their_cost_as_their_charge(tenants: Tenants, tmp_path: Path) -> None:
    def without_charge(record: UsageRecord) -> bytes:
        return encode(record).rsplit(b"\t", 1)[0]  # the 20 fields, without the last (charge)

    old = _record(tenants.org_a.pk, "req_no_charge", served_model="gpt-x", cost=Decimal("0.000002"))
    (tmp_path / f"host-1-1{SPOOL_SUFFIX}").write_bytes(without_charge(old) + b"\n")
    assert ingest.ingest_available([ingest.SpoolSource(tmp_path)]) == 1
    entry = b"\n".join(without_charge(_record(tenants.org_b.pk, f"req_no_charge_{i}", cost=Decimal("0.000001"))) for i in range(2))
    current = _record(tenants.org_b.pk, "req_charged", cost=Decimal("0.000001"), charge=Decimal("0.000005"))
    ingest.write_payloads([entry, encode(current)])
    stored = dict(UsageEvent.objects.unscoped_across_tenants().values_list("request_id", "charge"))
    assert stored == {"req_no_charge": None, "req_no_charge_0": None, "req_no_charge_1": None, "req_charged": Decimal("0.000005")}
    assert UsageEvent.objects.for_org(tenants.org_a).get().served_model == "gpt-x"
    rollup = UsageRollup.objects.for_org(tenants.org_b).get(granularity="day", breakdown="none")
    assert (rollup.cost, rollup.charge) == (Decimal("0.000003"), Decimal("0.000007"))  # two earlier events' cost, one charge


def test_text_with_tabs_newlines_and_backslashes_survives_the_wire(tenants: Tenants) -> None:
    odd = "we\tird\\N\nmodel\r\\"
    record = _record(tenants.org_a.pk, "req_odd", model=odd, route=odd, ttft_ms=None, cost=Decimal("1.5E-9"), charge=Decimal("2E-9"))
    assert decode(encode(record)) == record
    ingest.write_payloads([encode(record)])
    event = UsageEvent.objects.for_org(tenants.org_a).get(request_id="req_odd")
    assert (event.model, event.route, event.ttft_ms, event.cost, event.charge) == (odd, odd, None, Decimal("0.0000000015"), Decimal("2E-9"))
