import hashlib
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from gateway.models import AdminToken

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_admin_token_creates_staff_user_and_prints_token_last():
    output = run("create_admin_token", "robot")
    token = output.strip().splitlines()[-1]
    user = get_user_model().objects.get(username="robot")
    assert user.is_staff and not user.has_usable_password()
    record = AdminToken.objects.get(user=user)
    assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/governance/teams").status_code == 200
    second = run("create_admin_token", "robot").strip().splitlines()[-1]
    assert second != token and AdminToken.objects.filter(user=user).count() == 2


def test_expired_token_is_refused():
    token = run("create_admin_token", "robot", "--expires-days", "1").strip().splitlines()[-1]
    AdminToken.objects.update(expires_at="2000-01-01T00:00:00Z")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/governance/teams").status_code == 401


@pytest.mark.parametrize("args", [("   ",), ("robot", "--expires-days", "0")])
def test_create_admin_token_rejects_bad_arguments(args):
    with pytest.raises(CommandError):
        run("create_admin_token", *args)


def test_ensure_admin_runs_once():
    first = run("ensure_admin")
    assert "username: admin" in first
    password = first.split("password: ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert run("ensure_admin") == ""
