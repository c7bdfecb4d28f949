"""The benchmark load generator, against the mock upstream served from a thread."""

from __future__ import annotations

import json
import shutil

import pytest

from bench.loadgen import percentile, run_load, wrk_script
from bench.mock_upstream import MockUpstream

BODY = json.dumps({"model": "gpt-4o-mini", "stream": True,
                   "messages": [{"role": "user", "content": 'Say "hi"\n'}]}).encode()


@pytest.fixture
def mock():
    server = MockUpstream.start_in_thread(record=False)
    yield server
    server.stop()


@pytest.mark.parametrize("tool", [
    "python",
    pytest.param("wrk", marks=pytest.mark.skipif(shutil.which("wrk") is None,
                                                 reason="wrk is not installed")),
])
def test_short_run_counts_requests_and_orders_percentiles(mock, tool):
    result = run_load(f"{mock.url}/v1/chat/completions", method="POST", body=BODY,
                      headers={"authorization": "Bearer mock-ok"}, connections=2,
                      duration_s=1.0, warmup_s=0.0, tool=tool)
    assert result.tool == tool
    assert result.total > 10
    assert result.errors == 0
    assert result.requests_per_s > 10
    assert 0 < result.p50_ms <= result.p99_ms


def test_errors_are_counted_by_status(mock):
    result = run_load(f"{mock.url}/v1/chat/completions", body=BODY,
                      headers={"authorization": "Bearer mock-status-503"}, connections=1,
                      duration_s=0.3, warmup_s=0.0, tool="python")
    assert result.total > 0
    assert result.errors == result.total
    assert result.error_detail["status:503"] == result.total


def test_wrk_script_escapes_every_value():
    script = wrk_script("POST", b'{"a": "x\\"y"}\n', {"x-h": 'q"uote'})
    assert 'wrk.method = "POST"' in script
    assert '"' not in script.split("wrk.body = ")[1].split("\n")[0][1:-1]
    assert "\\034" in script  # the double quote, as a decimal Lua escape


def test_percentile():
    values = [float(number) for number in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0
