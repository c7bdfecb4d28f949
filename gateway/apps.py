from django.apps import AppConfig


class GatewayConfig(AppConfig):
    verbose_name = "Gateway: providers, tokens and audit"
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"
