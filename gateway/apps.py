from django.apps import AppConfig


class GatewayConfig(AppConfig):
    verbose_name = "Gateway: providers, tokens and audit"
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The Celery app, loaded with Django so that shared tasks bind to it.
        from gateway import celery  # noqa: F401
