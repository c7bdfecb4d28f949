"""Several real gateway processes, Celery and Redis, over real sockets (DESIGN.md sections 4-7).

- two ``manage.py serve`` processes sharing Redis enforce one request limit exactly;
- production usage pipeline: gateway → Redis Stream → Celery ``flush_usage`` → records, live
  counters equal the records, and ``rebuild_counters`` restores lost counters;
- embedded mode: SIGTERM with streams in flight drains them and loses no usage;
- Redis down: fail closed answers 503 fast and recovers by itself, fail open keeps serving.

Production-mode tests use a dedicated Redis database (``gateway:config_version`` and
``gateway:usage`` are fixed key names), flushed before and after; the databases are copies
of one migrated template (PostgreSQL databases when the run uses PostgreSQL, else SQLite).
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.mock_upstream import MockUpstream
from tests.conftest import IN_CI
from tests.integration.processes import (
    Admin,
    Databases,
    Processes,
    VirtualKey,
    chat_body,
    child_env,
    manage,
    processes,
    quota,
    wait_for_key,
)

pytestmark = pytest.mark.timeout(60)

CHAT = "/v1/chat/completions"
STREAM = "gateway:usage"


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    databases = Databases(tmp_path_factory.mktemp("databases"))
    try:
        yield databases.prepare()
    finally:
        databases.drop_all()


@pytest.fixture
def redis_db() -> Iterator[Callable[[int], tuple[str, redis.Redis]]]:
    """``open(n)``: Redis database ``n`` of the shared server, flushed now and at teardown
    (after the processes, which are torn down first when requested after this fixture)."""
    opened: list[redis.Redis] = []

    def open_db(number: int) -> tuple[str, redis.Redis]:
        assert 10 <= number <= 15
        client = redis.Redis(host="127.0.0.1", port=6379, db=number, socket_timeout=5)
        opened.append(client)
        client.flushdb()
        return f"redis://127.0.0.1:6379/{number}", client

    yield open_db
    for client in opened:
        try:
            client.flushdb()
        finally:
            client.close()


@pytest.fixture
def mock() -> Iterator[MockUpstream]:
    upstream = MockUpstream.start_in_thread()
    yield upstream
    upstream.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with processes(tmp_path) as group:
        yield group


def _state(tmp_path: Path, name: str) -> Path:
    state = tmp_path / name
    state.mkdir()
    return state


def _auth(key: VirtualKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.value}"}


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _budget_usage(report: dict[str, Any]) -> Decimal:
    assert report["usage_source"] == "live", report
    (budget,) = report["budgets"]
    return Decimal(budget["current_usage"])


def _cost(records: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(record["cost"]) for record in records), Decimal(0))


# -- 1. one request limit, two processes ---------------------------------------------------


@pytest.mark.redis
def test_two_processes_sharing_redis_enforce_a_request_limit_exactly(
        redis_db: Any, mock: MockUpstream, procs: Processes, databases: Databases,
        tmp_path: Path) -> None:
    redis_url, _client = redis_db(13)
    state = _state(tmp_path, "shared")
    env = child_env(state, databases.copy(state), redis_url=redis_url,
                    GATEWAY_LEDGER_KEY_PREFIX=f"proc-{uuid.uuid4().hex[:8]}")
    first, second = procs.gateway("gw-a", env), procs.gateway("gw-b", env)
    first.wait_ready()
    second.wait_ready()
    with Admin(first.url, databases.token) as admin:
        admin.mock_provider(mock.url)
        key = admin.virtual_key("limited", rate_limit={
            "request_max_limit": 10, "request_reset_duration": "1h"})
    for gateway in (first, second):
        wait_for_key(gateway.url, key)

    barrier = threading.Barrier(40)
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    with httpx.Client(base_url=first.url, timeout=20, limits=limits) as client_a, \
            httpx.Client(base_url=second.url, timeout=20, limits=limits) as client_b:
        def call(index: int) -> tuple[int, int, str | None]:
            client = (client_a, client_b)[index % 2]
            barrier.wait(10)
            response = client.post(CHAT, json=chat_body(delay_ms=200), headers=_auth(key))
            return index % 2, response.status_code, _error_code(response)

        with ThreadPoolExecutor(max_workers=40) as pool:
            results = list(pool.map(call, range(40)))

    statuses = Counter(status for _gateway, status, _code in results)
    assert statuses == {200: 10, 429: 30}, results
    assert {code for _gateway, status, code in results if status == 429} == {"request_limited"}
    assert len(mock.requests) == 10  # denied requests never reached the upstream
    live = quota(second.url, key)
    assert live["usage_source"] == "live"
    assert live["rate_limit"]["request_current_usage"] == 10
    assert live["rate_limit"]["request_remaining"] == 0


# -- 2. production usage pipeline --------------------------------------------------------------


@pytest.mark.redis
def test_usage_flows_through_redis_and_celery_and_counters_rebuild_from_records(
        redis_db: Any, mock: MockUpstream, procs: Processes, databases: Databases,
        tmp_path: Path) -> None:
    redis_url, client = redis_db(14)
    prefix = f"proc-{uuid.uuid4().hex[:8]}"
    state = _state(tmp_path, "production")
    env = child_env(state, databases.copy(state), redis_url=redis_url,
                    GATEWAY_LEDGER_KEY_PREFIX=prefix)
    gateway = procs.gateway("gw", env)
    worker = procs.celery("celery", env)
    gateway.wait_ready()
    with Admin(gateway.url, databases.token) as admin:
        admin.mock_provider(mock.url)
        customer = admin.post("/api/governance/customers", {"name": "acme"})["customer"]
        team = admin.post("/api/governance/teams", {
            "name": "research", "customer_id": customer["id"]})["team"]
        key = admin.virtual_key(
            "pipeline", team_id=team["id"],
            budgets=[{"max_limit": 10, "reset_duration": "1d"}],
            rate_limit={"request_max_limit": 1000, "request_reset_duration": "1h"})
        wait_for_key(gateway.url, key)
        worker.wait_ready()

        request_ids = []
        with httpx.Client(base_url=gateway.url, timeout=20, headers=_auth(key)) as client_:
            for index in range(6):
                response = client_.post(CHAT, json=chat_body(stream=index % 2 == 1))
                assert response.status_code == 200, response.text
                request_ids.append(response.headers["x-request-id"])
        answered = time.monotonic()

        records: list[dict[str, Any]] = []
        while time.monotonic() - answered < 10:
            records = admin.records(key.id)
            if len(records) >= len(request_ids):
                break
            time.sleep(0.2)
        waited = time.monotonic() - answered
        print(f"usage records visible {waited:.2f} s after the last response")
        assert sorted(record["request_id"] for record in records) == sorted(request_ids), \
            f"after {waited:.1f} s"
        assert all(record["status_code"] == 200 and record["team_id"] == team["id"]
                   and record["customer_id"] == customer["id"] for record in records)
        spent = _cost(records)
        assert spent > 0
        assert sum(record["is_stream"] for record in records) == 3

        summary = admin.get("/api/usage/summary", group_by="virtual_key",
                            virtual_key_id=key.id)
        assert summary["totals"]["request_count"] == 6
        assert Decimal(summary["totals"]["cost"]) == spent

        before = quota(gateway.url, key)
        assert _budget_usage(before) == spent
        assert before["rate_limit"]["request_current_usage"] == 6

        # Redis loses the ledger (and only the ledger): the counters read zero ...
        lost = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        assert lost
        client.delete(*lost)
        emptied = quota(gateway.url, key)
        assert _budget_usage(emptied) == 0
        assert emptied["rate_limit"]["request_current_usage"] == 0

        # ... and come back from the usage records.
        output = manage(env, "rebuild_counters")
        assert "Rebuilt" in output
        after = quota(gateway.url, key)
        assert _budget_usage(after) == spent
        assert after["rate_limit"]["request_current_usage"] == 6
        assert after["budgets"] == before["budgets"]


# -- 3. embedded mode: graceful stop ---------------------------------------------------------


def _stream(url: str, key: VirtualKey, body: dict[str, Any],
            finished: list[str]) -> tuple[Any, str | None, bool]:
    """(status or exception name, x-request-id, whether the stream reached [DONE])."""
    try:
        with httpx.Client(timeout=30) as client, \
                client.stream("POST", f"{url}{CHAT}", json=body, headers=_auth(key)) as response:
            text = "".join(response.iter_text())
            return response.status_code, response.headers.get("x-request-id"), \
                text.rstrip().endswith("data: [DONE]")
    except httpx.HTTPError as exc:
        return type(exc).__name__, None, False
    finally:
        finished.append("done")


def test_graceful_stop_in_embedded_mode_loses_no_usage(
        mock: MockUpstream, procs: Processes, databases: Databases, tmp_path: Path) -> None:
    state = _state(tmp_path, "embedded")
    env = child_env(state, databases.sqlite_copy(state))
    token = databases.sqlite_token()
    server = procs.gateway("embedded", env).wait_ready()
    with Admin(server.url, token) as admin:
        admin.mock_provider(mock.url)
        key = admin.virtual_key(
            "streams", budgets=[{"max_limit": 10, "reset_duration": "1d"}],
            rate_limit={"request_max_limit": 1000, "request_reset_duration": "1h"})
    wait_for_key(server.url, key)

    body = chat_body(stream=True, chunks=20, chunk_delay_ms=70)  # ~1.4 s per stream
    finished: list[str] = []
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(_stream, server.url, key, body, finished) for _ in range(20)]
        deadline = time.monotonic() + 5
        while len(mock.requests) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        reached_upstream = len(mock.requests)
        in_flight = 20 - len(finished)
        server.signal(signal.SIGTERM)
        results = [future.result(timeout=40) for future in futures]
    exit_status = server.wait(timeout=30)
    assert exit_status in (0, -signal.SIGTERM), server.log()
    log = server.log(tail=1_000_000)
    assert "shutdown flush:" in log and "shutdown flush failed" not in log, log

    assert reached_upstream == 20 and in_flight > 0, (reached_upstream, in_flight)
    # Everything admitted before the signal was drained to the end.
    assert [(code, done) for code, _rid, done in results] == [(200, True)] * 20, results
    answered = [request_id for _status, request_id, _done in results]
    assert len(set(answered)) == 20

    restarted = procs.gateway("embedded-restarted", env).wait_ready()
    with Admin(restarted.url, token) as admin:
        records = admin.records(key.id)
    assert sorted(record["request_id"] for record in records) == sorted(answered)
    assert all(record["is_stream"] and record["status_code"] == 200 for record in records)
    spent = _cost(records)
    assert spent > 0
    report = quota(restarted.url, key)
    assert _budget_usage(report) == spent
    assert report["rate_limit"]["request_current_usage"] == 20


@pytest.mark.redis
def test_a_stopping_multi_worker_server_refuses_new_connections_and_drains_the_rest(
        redis_db: Any, mock: MockUpstream, procs: Processes, databases: Databases,
        tmp_path: Path) -> None:
    """``serve --workers 2``: after SIGTERM a new connection is refused at once (before, the
    supervisor's copy of the listening socket kept accepting connections nobody served,
    which hung for the whole drain), and the request in flight is answered."""
    redis_url, _client = redis_db(12)
    state = _state(tmp_path, "workers")
    env = child_env(state, databases.copy(state), redis_url=redis_url,
                    GATEWAY_LEDGER_KEY_PREFIX=f"proc-{uuid.uuid4().hex[:8]}")
    server = procs.gateway("two-workers", env, workers=2).wait_ready(timeout=60)
    with Admin(server.url, databases.token) as admin:
        admin.mock_provider(mock.url)
        key = admin.virtual_key("draining")
    wait_for_key(server.url, key, consecutive=12)
    time.sleep(1.0)  # and ten config polls (100 ms): both workers know it

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(httpx.post, f"{server.url}{CHAT}", json=chat_body(delay_ms=3000),
                           headers=_auth(key), timeout=20)
        deadline = time.monotonic() + 10
        while not mock.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mock.requests, "the slow request never reached the upstream"
        server.signal(signal.SIGTERM)
        time.sleep(1.0)  # the workers got the signal and closed their listeners
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/v1/models", timeout=5)
        assert time.monotonic() - started < 1
        answered = slow.result(timeout=20)
    assert answered.status_code == 200, answered.text
    assert server.wait(timeout=30) in (0, -signal.SIGTERM), server.log()


# -- 4. Redis down -------------------------------------------------------------------------------


def _timed_call(url: str, key: VirtualKey) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(f"{url}{CHAT}", json=chat_body(), headers=_auth(key), timeout=10)
    return response, time.monotonic() - started


def _outage(closed: Any, opened: Any, key: VirtualKey, rounds: int) -> list[str]:
    """Requests to both gateways at once: closed refuses fast, open serves fast. The ids
    served."""
    served = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(rounds):
            (refused, refused_s), (answered, answered_s) = pool.map(
                lambda gateway: _timed_call(gateway.url, key), (closed, opened))
            assert refused.status_code == 503, refused.text
            assert _error_code(refused) == "governance_unavailable"
            assert refused_s < 2, refused_s
            assert answered.status_code == 200, answered.text
            assert answered_s < 2, answered_s
            served.append(answered.headers["x-request-id"])
    return served


def _until_served(url: str, key: VirtualKey, timeout: float = 10) -> list[int]:
    """Call until a 200 (each call answered fast, 503 until then); the statuses seen."""
    deadline = time.monotonic() + timeout
    statuses = []
    while True:
        response, elapsed = _timed_call(url, key)
        assert elapsed < 2, elapsed
        statuses.append(response.status_code)
        if response.status_code == 200 or time.monotonic() > deadline:
            return statuses
        assert response.status_code == 503, response.text
        time.sleep(0.1)


def _streamed(port: int, request_ids: list[str], timeout: float = 6) -> set[str]:
    """Which of ``request_ids`` reached the usage stream of the Redis on ``port`` (waiting
    up to ``timeout`` for all: the gateway re-sends buffered events every 2 s)."""
    wanted = set(request_ids)
    found: set[str] = set()
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) as client:
        deadline = time.monotonic() + timeout
        while True:
            found = {json.loads(entry[b"event"])["request_id"]
                     for _id, entry in client.xrange(STREAM)} & wanted
            if found == wanted or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None and not IN_CI,
                    reason="needs the redis-server binary")
def test_redis_outage_fails_closed_quickly_recovers_and_fail_open_keeps_serving(
        mock: MockUpstream, procs: Processes, databases: Databases, tmp_path: Path) -> None:
    store = procs.redis("redis").wait_ready()
    state = _state(tmp_path, "outage")
    database = databases.copy(state)
    closed = procs.gateway("closed", child_env(state, database, redis_url=store.url,
                                               GATEWAY_LEDGER_FAIL_MODE="closed"))
    opened = procs.gateway("open", child_env(state, database, redis_url=store.url,
                                             GATEWAY_LEDGER_FAIL_MODE="open"))
    closed.wait_ready()
    opened.wait_ready()
    with Admin(closed.url, databases.token) as admin:
        admin.mock_provider(mock.url)
        key = admin.virtual_key("outage", budgets=[{"max_limit": 10, "reset_duration": "1d"}])
    for gateway in (closed, opened):
        wait_for_key(gateway.url, key)
        response, _elapsed = _timed_call(gateway.url, key)
        assert response.status_code == 200, response.text

    # Redis hangs (accepts connections, never answers): timeouts, not a hang.
    store.signal(signal.SIGSTOP)
    served = _outage(closed, opened, key, rounds=2)
    store.signal(signal.SIGCONT)
    statuses = _until_served(closed.url, key)
    assert statuses[-1] == 200, statuses
    assert _streamed(store.port, served) == set(served)

    # Redis is gone (connections refused), then comes back empty on the same port.
    store.stop()
    assert not store.alive()
    served_down = _outage(closed, opened, key, rounds=2)
    restarted = procs.redis("redis-restarted", port=store.port).wait_ready()
    statuses = _until_served(closed.url, key)
    assert statuses[-1] == 200, statuses
    assert closed.alive() and opened.alive()  # neither gateway was restarted
    response, _elapsed = _timed_call(opened.url, key)
    assert response.status_code == 200, response.text

    # No usage event of the open gateway was dropped: the ones of the second outage were
    # kept and sent once Redis came back (those of the first one were checked above).
    assert _streamed(restarted.port, served_down) == set(served_down)
