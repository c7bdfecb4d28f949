"""Concurrency behaviour that only a real PostgreSQL shows (row locks, unique races)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from governance.models import Budget, ModelConfig
from tests.conftest import make_token
from tests.factories import VirtualKeyFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")
    return client


def _in_thread(function):
    def run(*args):
        try:
            return function(*args)
        finally:
            connection.close()
    return run


def test_racing_creates_of_one_model_config_give_one_200_and_409s(staff_user):
    clients = [_client(staff_user) for _ in range(8)]

    @_in_thread
    def create(client):
        return client.post("/api/governance/model-configs", {"model_name": "gpt-4o"},
                           format="json").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(create, clients))
    assert statuses.count(200) == 1
    assert set(statuses) <= {200, 409}
    assert ModelConfig.objects.count() == 1


def test_concurrent_budget_updates_of_one_key_serialize(staff_user):
    key = VirtualKeyFactory()
    clients = [_client(staff_user) for _ in range(6)]

    @_in_thread
    def update(args):
        client, amount = args
        return client.put(f"/api/governance/virtual-keys/{key.id}", {"budgets": [
            {"max_limit": amount, "reset_duration": "1d"},
            {"max_limit": amount * 10, "reset_duration": "1M"}]}, format="json").status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(update, zip(clients, range(1, 7), strict=True)))
    assert statuses == [200] * 6
    budgets = Budget.objects.filter(virtual_key=key)
    # the row lock serializes the read-modify-write: exactly one budget per duration survives
    assert sorted(budget.reset_duration for budget in budgets) == ["1M", "1d"]
    daily = budgets.get(reset_duration="1d").max_limit
    assert budgets.get(reset_duration="1M").max_limit == daily * 10
