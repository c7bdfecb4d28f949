"""The benchmark report combines interleaved rounds by their median."""

from __future__ import annotations

import pytest

from bench.loadgen import Result
from bench.proxy import Row, Target, combine_rounds


def _row(target: Target, requests_per_s: float | None, note: str = "") -> Row:
    result = None if requests_per_s is None else Result(
        requests_per_s=requests_per_s, p50_ms=1000 / requests_per_s, p99_ms=1.0, errors=0,
        total=1)
    return Row(target, "non-stream", 32, result, note)


def test_rounds_are_combined_by_the_median_run_with_the_spread_noted():
    gateway, passthrough = Target("(c) gateway", "", "", ""), Target("(b) pt", "", "", "")
    rounds = [[_row(passthrough, 3000), _row(gateway, 1500)],
              [_row(passthrough, 2000), _row(gateway, 1800)],
              [_row(passthrough, 2600), _row(gateway, None, "load failed")]]

    combined = combine_rounds(rounds)

    assert [row.result.requests_per_s for row in combined] == [2600, 1500]
    assert combined[0].result.p50_ms == 1000 / 2600  # the median run's own latencies
    assert combined[0].note == "rounds 3: 2000-3000 req/s"
    assert combined[1].note == "rounds 2: 1500-1800 req/s"


def test_a_single_round_is_reported_as_it_is():
    target = Target("(b) pt", "", "", "")
    only = [_row(target, 2500, "probe: slow")]
    assert combine_rounds([only]) == only


@pytest.mark.postgres
@pytest.mark.redis
def test_the_production_run_gets_a_scratch_database_and_an_emptied_redis_database():
    import psycopg
    import redis

    from bench.proxy import scratch_services

    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    # databases 10-15 of the local Redis are the suite's scratch ones (tests/integration)
    scratch = redis.Redis.from_url("redis://127.0.0.1:6379/13")
    scratch.set("left-over", "1")
    try:
        with scratch_services(admin, "redis://127.0.0.1:6379/13") as services:
            assert services["REDIS_URL"] == "redis://127.0.0.1:6379/13"
            assert scratch.dbsize() == 0  # emptied before
            name = services["DATABASE_URL"].rsplit("/", 1)[1]
            assert name.startswith("gateway_bench_")
            with psycopg.connect(services["DATABASE_URL"]) as connection:
                assert connection.execute("SELECT current_database()").fetchone() == (name,)
            scratch.set("written-by-the-run", "1")
        assert scratch.dbsize() == 0  # and after
        with psycopg.connect(admin) as connection:
            assert connection.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                                      (name,)).fetchone() == (0,)
    finally:
        scratch.delete("left-over", "written-by-the-run")
        scratch.close()
