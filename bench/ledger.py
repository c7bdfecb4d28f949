"""Ledger benchmark: median µs of ``admit`` + ``settle`` per request on each backend.

    python -m bench.ledger

Five limits per request (two budgets, a request limit, a token limit, a concurrency limit),
as a key in a team with provider limits would have. Baselines of the same run: an empty
``await`` for the memory backend, one Redis ``PING`` round trip for the Redis backend (the
Redis ledger needs two round trips per request: one script for admit, one for settle).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from governance.durations import parse_duration
from governance.ledger import Limit, Metric, Reservation, Usage, Window, ledger_from_url

REDIS_URL = "redis://127.0.0.1:6379/0"


def _limits() -> list[Limit]:
    day = Window(parse_duration("1d"), calendar_aligned=True)
    minute = Window(parse_duration("1m"), anchor=0.0)
    return [
        Limit("budget:key:1d", Metric.COST, 10**15, day, "key budget 1d"),
        Limit("budget:team:1d", Metric.COST, 10**15, day, "team budget 1d"),
        Limit("rate:key:requests", Metric.REQUESTS, 10**12, minute, "key requests 1m"),
        Limit("rate:key:tokens", Metric.TOKENS, 10**15, minute, "key tokens 1m"),
        Limit("concurrency:key", Metric.CONCURRENT, 10**6, None, "key concurrency"),
    ]


async def _median_us(step, count: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(50):
        await step()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await step()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


async def figures() -> list[tuple[str, float]]:
    results: list[tuple[str, float]] = []
    limits = _limits()
    reservation = Reservation(cost_nanos=50_000, tokens=800)
    actual = Usage(cost_nanos=42_000, tokens=650)

    async def noop() -> None:
        await asyncio.sleep(0)

    for name, url in (("memory", "memory://"), ("redis", REDIS_URL)):
        prefix = f"bench-{uuid.uuid4().hex}"
        try:
            ledger = ledger_from_url(url, key_prefix=prefix)
        except Exception as exc:  # pragma: no cover - Redis absent
            print(f"  {name}: skipped ({exc})")
            continue

        async def request(ledger=ledger) -> None:  # type: ignore[no-untyped-def]
            request_id = uuid.uuid4().hex
            await ledger.admit(request_id, limits, reservation)
            await ledger.settle(request_id, actual)

        try:
            if name == "redis":
                client = ledger.client  # type: ignore[attr-defined]
                results.append(("redis: baseline (one PING round trip)",
                                await _median_us(client.ping, 500)))
            else:
                results.append(("memory: baseline (empty await)", await _median_us(noop, 2000)))
            results.append((f"{name}: admit + settle, 5 limits",
                            await _median_us(request, 2000 if name == "memory" else 500)))
        except Exception as exc:  # pragma: no cover - Redis down
            print(f"  {name}: skipped ({exc})")
        finally:
            client = getattr(ledger, "client", None)
            if client is not None:
                async for key in client.scan_iter(match=f"{{{prefix}}}*"):
                    await client.delete(key)
            await ledger.aclose()
    return results


def main() -> None:
    print("Ledger (median µs per request)")
    rows = asyncio.run(figures())
    for label, value in rows:
        backend = label.split(":")[0]
        base = next((other for other_label, other in rows
                     if "baseline" in other_label and other_label.startswith(backend)), None)
        ratio = f"x{value / base:8.2f} of baseline" if base else ""
        print(f"  {label:<52} {value:10.2f}  {ratio}")


if __name__ == "__main__":
    main()
