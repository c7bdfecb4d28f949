"""Data migrations, run forwards from the state before them on the test database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE_EVENT_IDS = ("governance", "0004_usage_record_fewer_indexes")
EVENT_IDS = ("governance", "0005_usage_record_event_id")


def migrate(target: tuple[str, str]):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return MigrationExecutor(connection).loader.project_state([target]).apps


@pytest.mark.django_db(transaction=True)
def test_records_written_before_event_ids_keep_their_request_id_as_event_id():
    try:
        old = migrate(BEFORE_EVENT_IDS).get_model("governance", "UsageRecord")
        for request_id in ("r1", "r2"):
            old.objects.create(request_id=request_id, created_at=datetime.now(UTC),
                               provider="openai", requested_model="m", resolved_model="m",
                               request_type="chat_completion", status_code=200)
        new = migrate(EVENT_IDS).get_model("governance", "UsageRecord")
        assert sorted(new.objects.values_list("request_id", "event_id")) == [
            ("r1", "r1"), ("r2", "r2")]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
