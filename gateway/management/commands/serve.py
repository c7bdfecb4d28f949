"""``manage.py serve``: run the whole app (admin, API, inference) under uvicorn."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.conf import gateway_settings


class Command(BaseCommand):
    help = "Serve the gateway with uvicorn on HOST:PORT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        gateway_settings.validate()
        if options["workers"] > 1 and not settings.REDIS_URL:
            raise CommandError(
                "--workers above 1 needs REDIS_URL: in the embedded mode limits and usage "
                "are counted in one process, and several would each count their own.")
        self.stdout.write(f"Serving on http://{options['host']}:{options['port']}/ "
                          f"(admin at /admin/, API docs at /api/docs/)")
        config = {"host": options["host"], "port": options["port"],
                  "workers": options["workers"], "loop": "auto", "http": "auto",
                  "lifespan": "on", "log_level": "info", "access_log": settings.ACCESS_LOG,
                  "timeout_graceful_shutdown": 30}
        if options["workers"] == 1:
            uvicorn.run("gateway.asgi:application", **config)
            return
        from uvicorn.supervisors import Multiprocess

        class Supervisor(Multiprocess):
            """uvicorn's worker supervisor, but on a stop it closes its own copy of the
            listening socket before the workers drain: the workers close theirs at once, and
            with the parent's copy open the kernel went on accepting connections nobody
            would serve (they hung for the whole drain instead of being refused, so a load
            balancer could not move them elsewhere)."""

            def terminate_all(self) -> None:
                for sock in self.sockets:
                    sock.close()
                super().terminate_all()

        server_config = uvicorn.Config("gateway.asgi:application", **config)
        Supervisor(server_config, sockets=[server_config.bind_socket()]).run()
