"""Every ``GATEWAY_*`` setting, its default, and one accessor.

    from gateway.conf import gateway_settings
    gateway_settings.CEL_ENGINE        # "cel-expr-python"

Values come from Django settings (``GATEWAY_CEL_ENGINE = ...``) or the environment; they are
coerced to the type of their default and validated, and a bad value raises
``ImproperlyConfigured`` naming the setting and the value. The accessor reloads on Django's
``setting_changed`` signal, so ``override_settings`` works in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # routing
    "CEL_ENGINE": "cel-expr-python",
    "ROUTING_MAX_DEPTH": 10,
    # control plane
    "CONFIG_POLL_MS": 500,
    "PAGE_SIZE_DEFAULT": 25,
    "PAGE_SIZE_MAX": 100,
    # data plane
    "REQUIRE_VIRTUAL_KEY": True,
    "LEDGER_FAIL_MODE": "closed",
    "MAX_BODY_MB": 10,
    "CORS_ORIGINS": [],
    # output tokens reserved when a request sets no max_tokens (budget estimates)
    "DEFAULT_MAX_TOKENS": 4096,
    # usage records older than this are deleted by the retention job; 0 keeps them forever
    "USAGE_RETENTION_DAYS": 0,
}

CHOICES: dict[str, tuple[str, ...]] = {
    "CEL_ENGINE": ("cel-expr-python", "cel-python"),
    "LEDGER_FAIL_MODE": ("closed", "open"),
}

MINIMUMS: dict[str, int] = {
    "ROUTING_MAX_DEPTH": 1,
    "CONFIG_POLL_MS": 10,
    "PAGE_SIZE_DEFAULT": 1,
    "PAGE_SIZE_MAX": 1,
    "MAX_BODY_MB": 1,
    "DEFAULT_MAX_TOKENS": 1,
    "USAGE_RETENTION_DAYS": 0,
}


def _coerce(name: str, raw: Any) -> Any:
    default = DEFAULTS[name]
    setting = f"GATEWAY_{name}"
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ImproperlyConfigured(f"{setting}={raw!r} is not a boolean: use true or false")
    if isinstance(default, int):
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ImproperlyConfigured(f"{setting}={raw!r} is not an integer") from None
        minimum = MINIMUMS.get(name)
        if minimum is not None and value < minimum:
            raise ImproperlyConfigured(f"{setting}={raw!r} must be at least {minimum}")
        return value
    if isinstance(default, list):
        if isinstance(raw, str):
            return [item.strip() for item in raw.split(",") if item.strip()]
        return list(raw)
    value = str(raw)
    allowed = CHOICES.get(name)
    if allowed and value not in allowed:
        raise ImproperlyConfigured(
            f"{setting}={raw!r} is not valid: use one of {', '.join(allowed)}"
        )
    return value


class GatewaySettings:
    """``gateway_settings.NAME``: the ``GATEWAY_NAME`` setting, checked and coerced once.

    A value read once is kept as an instance attribute, so later reads are plain attribute
    reads (the data plane reads some on every request) and never reach ``__getattr__``;
    :meth:`reload` (on Django's ``setting_changed``) forgets them all."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Invalid gateway setting: {name!r}")
        value = _coerce(name, getattr(settings, f"GATEWAY_{name}", DEFAULTS[name]))
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        self.__dict__.clear()

    def validate(self) -> None:
        """Read every setting once, so a bad value fails at startup rather than mid-request."""
        for name in DEFAULTS:
            getattr(self, name)
        if self.PAGE_SIZE_DEFAULT > self.PAGE_SIZE_MAX:
            raise ImproperlyConfigured(
                "GATEWAY_PAGE_SIZE_DEFAULT must not exceed GATEWAY_PAGE_SIZE_MAX"
            )


gateway_settings = GatewaySettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("GATEWAY_"):
        gateway_settings.reload()


setting_changed.connect(_reload)
