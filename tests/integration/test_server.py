"""The real server process: what `make run` starts, exercised over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    port = _free_port()
    env = {**os.environ, "GATEWAY_STATE_DIR": str(state), "PORT": str(port),
           "DATABASE_URL": f"sqlite:///{state / 'gateway.sqlite3'}",
           "DJANGO_SETTINGS_MODULE": "gateway.settings"}
    for name in ("SECRET_KEY", "GATEWAY_ENCRYPTION_KEY", "REDIS_URL"):
        env.pop(name, None)
    _manage(env, "migrate", "--noinput")
    first = _manage(env, "ensure_admin")
    token = _manage(env, "create_admin_token", "ops").strip().splitlines()[-1]
    log_path = state / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "manage.py", "serve"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/admin/login/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        process.wait()
        log.close()
        pytest.fail(f"server did not start: {log_path.read_text()[-2000:]}")
    yield {"base": base, "token": token, "state": state, "first_run": first}
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_first_run_generates_secrets_and_admin(server):
    assert "username: admin" in server["first_run"]
    secrets_file = server["state"] / "secrets.json"
    assert {"SECRET_KEY", "GATEWAY_ENCRYPTION_KEY"} <= set(json.loads(secrets_file.read_text()))
    assert secrets_file.stat().st_mode & 0o777 == 0o600


def test_admin_and_static_files_are_served(server):
    login = httpx.get(f"{server['base']}/admin/login/")
    assert login.status_code == 200
    assert "LLM Gateway" in login.text or "Django" in login.text
    assert httpx.get(f"{server['base']}/static/admin/css/base.css").status_code == 200
    assert httpx.get(f"{server['base']}/admin/", follow_redirects=False).status_code == 302


def test_the_curl_walkthrough(server):
    headers = {"Authorization": f"Bearer {server['token']}"}
    with httpx.Client(base_url=server["base"], headers=headers, timeout=10) as client:
        customer = client.post("/api/governance/customers", json={"name": "acme"}).json()
        team = client.post("/api/governance/teams", json={
            "name": "research", "customer_id": customer["customer"]["id"]}).json()["team"]
        provider = client.post("/api/providers", json={
            "name": "openai", "kind": "openai", "keys": [
            {"name": "a", "value": "sk-aaaaaaaaaaaaaaaaaaaa"},
            {"name": "b", "value": "sk-bbbbbbbbbbbbbbbbbbbb"}]})
        assert provider.status_code == 201
        key = client.post("/api/governance/virtual-keys", json={
            "name": "prod", "team_id": team["id"],
            "budgets": [{"max_limit": 10, "reset_duration": "1d"},
                        {"max_limit": 100, "reset_duration": "1M"}],
            "rate_limit": {"request_max_limit": 60, "request_reset_duration": "1m"},
            "provider_configs": [{"provider": "openai", "allowed_models": ["*"],
                                  "key_ids": ["*"]}]})
        assert key.status_code == 200, key.text
        key_id = key.json()["virtual_key"]["id"]
        read = client.get(f"/api/governance/virtual-keys/{key_id}").json()["virtual_key"]
        assert sorted(b["reset_duration"] for b in read["budgets"]) == ["1M", "1d"]
        assert read["rate_limit"]["request_max_limit"] == 60
        assert "sk-aaaaaaaaaaaaaaaaaaaa" not in client.get("/api/providers").text
        rule = client.post("/api/governance/routing-rules", json={
            "name": "premium", "cel_expression": 'headers["x-tier"] == "premium"',
            "targets": [{"provider": "openai", "model": "gpt-4o", "weight": 1}],
            "scope": "team", "scope_id": team["id"]})
        assert rule.status_code == 200, rule.text
        rule_id = rule.json()["rule"]["id"]
        assert client.get(f"/api/governance/routing-rules/{rule_id}").json()["rule"][
            "targets"][0]["model"] == "gpt-4o"
        bad_rule = client.post("/api/governance/routing-rules", json={
            "name": "broken", "cel_expression": "model ==",
            "targets": [{"provider": "openai", "model": "gpt-4o", "weight": 1}]})
        assert bad_rule.status_code == 400
        assert "CEL compile error" in bad_rule.json()["error"]["message"]
        override = client.post("/api/governance/pricing-overrides", json={
            "name": "negotiated", "scope_kind": "provider", "provider_id": "openai",
            "match_type": "wildcard", "pattern": "gpt-4o*",
            "request_types": ["chat_completion"], "patch": {"input_cost_per_token": 2e-6}})
        assert override.status_code == 201, override.text
        override_id = override.json()["pricing_override"]["id"]
        assert client.get(f"/api/governance/pricing-overrides/{override_id}").json()[
            "pricing_override"]["patch"] == {"input_cost_per_token": 2e-6}
        events = client.get("/api/audit-events?actor=ops&limit=100").json()
        written = {event["object_type"] for event in events["audit_events"]}
        assert {"customer", "team", "virtualkey", "provider", "providerkey", "budget",
                "ratelimit", "routingrule", "pricingoverride"} <= written
        assert client.get("/api/governance/teams", headers={"Authorization": "Bearer nope"}
                          ).status_code == 401
