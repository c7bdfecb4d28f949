"""Shared fixtures: users, API clients, factories and service markers."""

from __future__ import annotations

import os
import socket

import pytest
from django.test import Client
from rest_framework.test import APIClient

from gateway.models import AdminToken
from gateway.secrets import digest, new_admin_token

IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip service-bound tests when the service is absent, except in CI where they must run."""
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    redis_up = _reachable("127.0.0.1", 6379)
    for item in items:
        if item.get_closest_marker("postgres") and not on_postgres:
            if IN_CI:
                raise pytest.UsageError("CI=true but the suite is not running on PostgreSQL")
            item.add_marker(pytest.mark.skip(reason="needs DATABASE_URL=postgres://..."))
        if item.get_closest_marker("redis") and not redis_up:
            if IN_CI:
                raise pytest.UsageError("CI=true but Redis is not reachable on 127.0.0.1:6379")
            item.add_marker(pytest.mark.skip(reason="needs Redis on 127.0.0.1:6379"))


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        "operator", "operator@example.com", "pw-operator-1", is_staff=True, is_superuser=True
    )


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user("visitor", "visitor@example.com", "pw-visitor-1")


def make_token(user) -> str:
    token = new_admin_token()
    AdminToken.objects.create(user=user, token_hash=digest(token), prefix=token[:10])
    return token


@pytest.fixture
def api(staff_user) -> APIClient:
    """An API client authenticated with a staff user's admin token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(staff_user)}")
    return client


@pytest.fixture
def anonymous_api() -> APIClient:
    return APIClient()


@pytest.fixture
def non_staff_api(plain_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(plain_user)}")
    return client


@pytest.fixture
def admin_client_logged_in(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
async def close_async_connections():
    """For async tests that reach the ORM through ``sync_to_async``: close the database
    connection of asgiref's worker thread afterwards, or PostgreSQL refuses to drop the
    test database ("being accessed by other users")."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()
