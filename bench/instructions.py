"""Instructions per request, counted by valgrind: a measurement this machine's noise cannot move.

    python -m bench.instructions [--requests 500] [--concurrency 8] [--stream]

``make bench`` measures requests/s, and on a machine whose two cores are shared by the load
generator, the mock and the proxy its rounds move by ten points or more: a change of a few
percent does not show. This tool runs (b) the bare pass-through and (c) the gateway (the
same seed and server as ``bench/proxy.py``'s uvicorn run) under ``valgrind --tool=callgrind``,
sends the same requests to each, and prints the CPU instructions each server executed per
request, by thread, and the ratio of (b) to (c) on the event-loop thread: the thread that
limits a single worker's requests/s. Instruction counts repeat to within a fraction of a
percent from run to run, whatever else the machine is doing; they are not time (cache misses
and system calls are not weighed), so the goals stay stated in ``bench/proxy.py``'s terms.

Needs valgrind (``apt-get install valgrind``). Each server runs about 50 times slower under
it: the defaults take a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.proxy import PY, Processes, Target, free_port, start_gateway

START_TIMEOUT_S = 600  # Django's start-up under valgrind
WARMUP_REQUESTS = 100


async def _send(target: Target, requests: int, concurrency: int, stream: bool) -> int:
    """Send ``requests`` requests, ``concurrency`` at a time; the number that were not 200."""
    body = target.body(stream)
    failures = 0
    async with aiohttp.ClientSession() as session:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            nonlocal failures
            async with gate, session.post(target.url, data=body,
                                          headers=target.headers) as response:
                await response.read()
                failures += response.status != 200

        await asyncio.gather(*(one() for _ in range(requests)))
    return failures


def _dumped_threads(out_dir: Path, pid: int) -> list[int]:
    """Instructions per thread in the dump taken after the measured requests."""
    counts = []
    for path in sorted(out_dir.glob(f"callgrind.{pid}.1*")):
        text = path.read_text(errors="replace")
        if "Trigger: dump" not in text:
            continue
        for line in text.splitlines():
            if line.startswith("summary:"):
                counts.append(int(line.split()[1]))
    return counts


def measure(label: str, target: Target, pid: int, out_dir: Path, requests: int,
            concurrency: int, stream: bool) -> list[float]:
    """Thousands of instructions per request, by thread (the event loop's first)."""
    asyncio.run(_send(target, WARMUP_REQUESTS, concurrency, stream))
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    failures = asyncio.run(_send(target, requests, concurrency, stream))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    threads = _dumped_threads(out_dir, pid)
    while not threads and time.monotonic() < deadline:
        time.sleep(0.5)
        threads = _dumped_threads(out_dir, pid)
    per_thread = [count / requests / 1000 for count in threads if count]
    print(f"{label:<16} {sum(per_thread):8.1f}k instructions/request; by thread: "
          + ", ".join(f"{count:.1f}k" for count in per_thread)
          + (f"  ({failures} not 200)" if failures else ""))
    return per_thread


class _ValgrindProcesses(Processes):
    """Starts the pass-through and the gateway under callgrind (the mock runs as usual)."""

    def __init__(self, log_dir: Path, out_dir: Path) -> None:
        super().__init__(log_dir)
        self.prefix = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                       f"--callgrind-out-file={out_dir}/callgrind.%p"]

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        if name in ("passthrough", "gateway"):
            command = [*self.prefix, *command]
        return super().spawn(name, command, env)

    def wait_ready(self, name: str, process: subprocess.Popen[bytes], port: int,
                   timeout: float = 60.0) -> None:
        super().wait_ready(name, process, port, timeout=max(timeout, START_TIMEOUT_S))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep callgrind's files in DIR, for callgrind_annotate")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.keep:  # absolute: valgrind runs from the project's root
        args.keep = args.keep.resolve()
        args.keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-instructions-", dir=args.keep))
    out_dir = work / "callgrind"
    out_dir.mkdir()
    processes = _ValgrindProcesses(work, out_dir)
    try:
        mock_port = free_port()
        mock = processes.spawn("mock", [PY, "-m", "bench.mock_upstream", "--port",
                                        str(mock_port)])
        processes.wait_ready("mock", mock, mock_port)
        mock_url = f"http://127.0.0.1:{mock_port}"
        port = free_port()
        passthrough = processes.spawn("passthrough", [PY, "-m", "bench.passthrough",
                                                      "--upstream", mock_url,
                                                      "--port", str(port)])
        processes.wait_ready("passthrough", passthrough, port)
        print(f"{args.requests} {'streaming' if args.stream else 'non-streaming'} requests, "
              f"{args.concurrency} at a time, after {WARMUP_REQUESTS} not counted")
        baseline = measure("(b) pass-through", Target("(b)", f"http://127.0.0.1:{port}",
                                                      "gpt-4o-mini", "unused"),
                           passthrough.pid, out_dir, args.requests, args.concurrency,
                           args.stream)
        state_dir = work / "gateway-state"
        state_dir.mkdir()
        gateway = start_gateway(processes, mock_url, state_dir, "uvicorn")
        if gateway.error:
            print(f"(c) could not start: {gateway.error}", file=sys.stderr)
            return 1
        measured = measure("(c) gateway", gateway, processes.children[-1][1].pid, out_dir,
                           args.requests, args.concurrency, args.stream)
        if baseline and measured:
            print(f"event-loop thread, (b) / (c): {baseline[0] / measured[0]:.1%} "
                  f"({measured[0] - baseline[0]:.1f}k instructions added per request)")
    finally:
        processes.stop_all()
        if args.keep:
            print(f"callgrind's files: {out_dir} (callgrind.<pid>.1-<thread> hold the "
                  "measured requests; thread 01 is the event loop)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
