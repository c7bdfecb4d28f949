import json
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from gateway.conf import gateway_settings
from gateway.env import database_from_url, env_bool, first_run_secret


@pytest.mark.parametrize(
    ("url", "engine", "name"),
    [
        ("sqlite:///var/db.sqlite3", "django.db.backends.sqlite3", "/project/var/db.sqlite3"),
        ("sqlite:////tmp/db.sqlite3", "django.db.backends.sqlite3", "/tmp/db.sqlite3"),
        ("postgres://u:p@h:5433/gw", "django.db.backends.postgresql", "gw"),
        ("postgresql://h/gw", "django.db.backends.postgresql", "gw"),
    ],
)
def test_database_urls(url, engine, name):
    config = database_from_url(url, base_dir=Path("/project"))
    assert (config["ENGINE"], config["NAME"]) == (engine, name)


@pytest.mark.parametrize("url", ["mysql://h/db", "postgres://h/", "sqlite://", "nonsense"])
def test_bad_database_urls_name_the_problem(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        database_from_url(url, base_dir=Path("/project"))


def test_password_is_unquoted_and_never_in_errors():
    config = database_from_url("postgres://u:p%40ss@h/db", base_dir=Path("/p"))
    assert config["PASSWORD"] == "p@ss"
    with pytest.raises(ImproperlyConfigured) as error:
        database_from_url("postgres://u:secret@h/", base_dir=Path("/p"))
    assert "secret" not in str(error.value)


def test_env_bool(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG"):
        env_bool("FLAG", False)


def test_first_run_secret_is_generated_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("SOME_SECRET", raising=False)
    first = first_run_secret("SOME_SECRET", tmp_path, generate=lambda: "generated-1")
    second = first_run_secret("SOME_SECRET", tmp_path, generate=lambda: "generated-2")
    assert first == second == "generated-1"
    assert json.loads((tmp_path / "secrets.json").read_text()) == {"SOME_SECRET": "generated-1"}
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("SOME_SECRET", "from-env")
    assert first_run_secret("SOME_SECRET", tmp_path, generate=lambda: "x") == "from-env"


def test_gateway_settings_coerce_and_validate():
    with override_settings(GATEWAY_ROUTING_MAX_DEPTH="7", GATEWAY_REQUIRE_VIRTUAL_KEY="false"):
        assert gateway_settings.ROUTING_MAX_DEPTH == 7
        assert gateway_settings.REQUIRE_VIRTUAL_KEY is False
    assert gateway_settings.ROUTING_MAX_DEPTH == 10
    for name, value in [("GATEWAY_CEL_ENGINE", "lua"), ("GATEWAY_ROUTING_MAX_DEPTH", "0"),
                        ("GATEWAY_CONFIG_POLL_MS", "soon")]:
        with override_settings(**{name: value}), pytest.raises(ImproperlyConfigured, match=name):
            gateway_settings.validate()
    with pytest.raises(AttributeError):
        gateway_settings.NOT_A_SETTING  # noqa: B018


def test_root_redirects_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
