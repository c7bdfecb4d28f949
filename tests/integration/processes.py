"""Real gateway processes for the integration tests: ``manage.py serve`` (uvicorn), Celery
worker + beat and ``redis-server``, each in its own process group so a test's teardown can
kill it (and anything it forked) even when the test fails.

Nothing here imports Django: the processes configure themselves from the environment
built by :func:`child_env`, exactly as a deployment would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CELERY = str(Path(sys.executable).with_name("celery"))
SECRET_KEY = "integration-processes-secret-key-not-for-production"
ENCRYPTION_KEY = "x0uy3a5Z8Zf-vGJ6T5i3g2Zr8S3mnF9XWnUH7K2M1Hw="
PROVIDER = "mock"
MODEL = "gpt-4o-mini"
# Variables of the parent (the test run, CI) that must not leak into a gateway process.
_SCRUBBED = frozenset({"REDIS_URL", "DATABASE_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE",
                       "HOST", "PORT", "LOG_LEVEL", "DEBUG", "ALLOWED_HOSTS"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(state: Path, database_url: str, *, redis_url: str | None = None,
              **settings: str) -> dict[str, str]:
    """The environment of one gateway process: embedded without ``redis_url``."""
    env = {name: value for name, value in os.environ.items()
           if name not in _SCRUBBED and not name.startswith("GATEWAY_")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "GATEWAY_STATE_DIR": str(state),
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET_KEY,
        "GATEWAY_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "GATEWAY_CONFIG_POLL_MS": "100",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(settings)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """Run ``manage.py`` to completion; its stdout, or a failure with its output."""
    result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def prepare_database(env: dict[str, str]) -> str:
    """Migrate the database of ``env`` and return a new admin token, in one Django start."""
    code = ("from django.core.management import call_command\n"
            "call_command('migrate', interactive=False, verbosity=0)\n"
            "call_command('create_admin_token', 'ops')\n")
    return manage(env, "shell", "-c", code, timeout=120).strip().splitlines()[-1]


# -- databases -------------------------------------------------------------------------------


def postgres_url() -> str | None:
    """The PostgreSQL server of the test run (``DATABASE_URL``), if it is one."""
    url = os.environ.get("DATABASE_URL", "")
    return url if urlsplit(url).scheme in ("postgres", "postgresql", "pgsql") else None


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _postgres_admin(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(url, "postgres"), autocommit=True,
                         connect_timeout=5) as connection:
        for statement in statements:
            connection.execute(statement)


class Databases:
    """A migrated template database (with an admin token) and cheap per-test copies of it:
    SQLite files, or PostgreSQL databases ``gateway_proc_<random>_<n>`` (created from a
    template database and dropped afterwards) when the run uses PostgreSQL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = postgres_url()
        self.template_name = f"gateway_proc_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []
        self.token = ""

    def _template_url(self) -> str:
        if self.server:
            return _with_database(self.server, self.template_name)
        return f"sqlite:///{self.root / 'template.sqlite3'}"

    def prepare(self) -> Databases:
        if self.server:
            _postgres_admin(self.server, f'CREATE DATABASE "{self.template_name}"')
            self.created.append(self.template_name)
        self.token = prepare_database(child_env(self.root, self._template_url()))
        return self

    def sqlite_copy(self, state: Path) -> str:
        """A copy of the template as ``state/gateway.sqlite3`` (the embedded default)."""
        target = state / "gateway.sqlite3"
        if self.server:  # the template lives in PostgreSQL: build a SQLite one on demand
            sqlite_template = self.root / "template.sqlite3"
            if not sqlite_template.exists():
                token = prepare_database(child_env(self.root, f"sqlite:///{sqlite_template}"))
                (self.root / "sqlite-token").write_text(token)
        shutil.copyfile(self.root / "template.sqlite3", target)
        return f"sqlite:///{target}"

    def sqlite_token(self) -> str:
        if self.server:
            return (self.root / "sqlite-token").read_text()
        return self.token

    def copy(self, state: Path) -> str:
        """A fresh database for one test: PostgreSQL when the run uses it, else SQLite."""
        if not self.server:
            return self.sqlite_copy(state)
        name = f"{self.template_name}_{len(self.created)}"
        _postgres_admin(self.server,
                        f'CREATE DATABASE "{name}" TEMPLATE "{self.template_name}"')
        self.created.append(name)
        return _with_database(self.server, name)

    def drop_all(self) -> None:
        if not self.server:
            return
        for name in reversed(self.created):
            with contextlib.suppress(Exception):
                _postgres_admin(self.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


# -- processes -------------------------------------------------------------------------------


class Process:
    """One child process in its own session (process group), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process itself (not its group)."""
        if self.alive():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (the process and whatever it forked)."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, wait, then SIGKILL the group; the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGCONT)  # in case a test stopped it
                os.kill(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        status = self.popen.poll()
        self.kill()  # leftovers of the group (e.g. celery's embedded beat)
        return status


class Gateway(Process):
    """``manage.py serve --port P``: admin, management API and inference on one port."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path,
                 port: int | None = None, workers: int = 1) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, [PYTHON, "manage.py", "serve", "--host", "127.0.0.1",
                                "--port", str(self.port), "--workers", str(workers)],
                         env, log_dir / f"{name}.log")

    def wait_ready(self, timeout: float = 40) -> Gateway:
        """Until the port answers HTTP (uvicorn binds after the lifespan startup)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/v1/models", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name} did not start within {timeout} s:\n{self.log()}")


class CeleryWorker(Process):
    """``celery -A gateway worker --beat --pool=solo``: the production background jobs."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(name, [
            CELERY, "-A", "gateway", "worker", "--beat", "--pool=solo", "--loglevel=info",
            "--without-mingle", "--without-gossip", "-n", f"{name}-{uuid.uuid4().hex[:8]}@%h",
            "--schedule-filename", str(log_dir / f"{name}-beat-schedule")],
            env, log_dir / f"{name}.log")

    def wait_ready(self, timeout: float = 40) -> CeleryWorker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            if " ready." in self.log(tail=1_000_000):
                return self
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout} s:\n{self.log()}")


class RedisServer(Process):
    """A private ``redis-server`` without persistence, restartable on the same port."""

    def __init__(self, name: str, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        super().__init__(name, ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(log_dir)],
                         dict(os.environ), log_dir / f"{name}.log")

    def wait_ready(self, timeout: float = 10) -> RedisServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not start:\n{self.log()}")


class Processes:
    """Every process a test started; :meth:`close` kills them all (the fixture's teardown)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Process] = []

    def add(self, process: Process) -> Any:
        self.started.append(process)
        return process.start()

    def gateway(self, name: str, env: dict[str, str], port: int | None = None,
                workers: int = 1) -> Gateway:
        return self.add(Gateway(name, env, self.log_dir, port, workers))

    def celery(self, name: str, env: dict[str, str]) -> CeleryWorker:
        return self.add(CeleryWorker(name, env, self.log_dir))

    def redis(self, name: str, port: int | None = None) -> RedisServer:
        return self.add(RedisServer(name, self.log_dir, port))

    def logs(self) -> str:
        return "\n".join(f"----- {process.name} (pid {process.popen.pid if process.popen else '-'})"
                         f" -----\n{process.log()}" for process in self.started)

    def close(self, timeout: float = 5) -> None:
        """SIGTERM every live process at once, give them ``timeout`` seconds, then SIGKILL
        every process group."""
        for process in self.started:
            if process.alive():
                with contextlib.suppress(ProcessLookupError):
                    process.signal(signal.SIGCONT)  # in case a test stopped it
                    process.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.started:
            if process.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(max(deadline - time.monotonic(), 0.01))
        for process in self.started:
            process.kill()


@contextlib.contextmanager
def processes(log_dir: Path) -> Iterator[Processes]:
    group = Processes(log_dir)
    try:
        yield group
    finally:
        group.close()
        print(group.logs())  # shown by pytest when the test failed


# -- the management API ----------------------------------------------------------------------


@dataclass
class VirtualKey:
    id: str
    value: str


class Admin:
    """The management API of one gateway, authenticated with an admin token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=15,
                                   headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def post(self, path: str, body: dict[str, Any], *, expect: int = 200) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        assert response.status_code == expect, f"POST {path}: {response.status_code} " \
                                                f"{response.text}"
        return response.json()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def mock_provider(self, mock_url: str) -> None:
        """An OpenAI-kind provider named ``mock`` in front of the mock upstream."""
        self.post("/api/providers", {
            "name": PROVIDER, "kind": "openai", "base_url": f"{mock_url}/v1",
            "max_retries": 0, "keys": [{"name": "main", "value": "mock-ok"}]}, expect=201)

    def virtual_key(self, name: str, **fields: Any) -> VirtualKey:
        body = {"name": name, "provider_configs": [
            {"provider": PROVIDER, "allowed_models": ["*"], "key_ids": ["*"]}], **fields}
        created = self.post("/api/governance/virtual-keys", body)["virtual_key"]
        assert created["value"].startswith("sk-gw-")
        return VirtualKey(created["id"], created["value"])

    def records(self, virtual_key_id: str) -> list[dict[str, Any]]:
        page = self.get("/api/usage/records", virtual_key_id=virtual_key_id, limit=100)
        assert page["total_count"] == page["count"], "more records than one page"
        return page["usage_records"]


def chat_body(*, stream: bool = False, **mock: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": f"{PROVIDER}/{MODEL}",
                            "messages": [{"role": "user", "content": "Say something."}]}
    if stream:
        body["stream"] = True
    if mock:
        body["mock"] = mock
    return body


def wait_for_key(gateway_url: str, key: VirtualKey, timeout: float = 10,
                 consecutive: int = 1) -> None:
    """Until ``gateway_url`` knows the key (``GET /v1/models`` stops answering 401): its
    snapshot was built after the key was committed. Touches no limit. With several workers
    behind one port, ask for ``consecutive`` answers in a row on new connections (any
    worker may take each)."""
    deadline = time.monotonic() + timeout
    status = None
    streak = 0
    while time.monotonic() < deadline:
        status = httpx.get(f"{gateway_url}/v1/models", timeout=5,
                           headers={"Authorization": f"Bearer {key.value}"}).status_code
        if status == 200:
            streak += 1
            if streak >= consecutive:
                return
            continue
        streak = 0
        assert status in (401, 404), f"unexpected {status} while waiting for the key"
        time.sleep(0.05)
    raise AssertionError(f"{gateway_url} did not see the key within {timeout} s ({status})")


def quota(gateway_url: str, key: VirtualKey) -> dict[str, Any]:
    response = httpx.get(f"{gateway_url}/api/governance/virtual-keys/quota", timeout=10,
                         headers={"Authorization": f"Bearer {key.value}"})
    assert response.status_code == 200, response.text
    return response.json()
