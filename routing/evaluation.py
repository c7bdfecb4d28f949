"""Dry-run the routing rules for one described request: the glue shared by
``POST /api/governance/routing-rules/evaluate`` and the admin's "Try routing" page.

Both build the engine from the database (:func:`routing.loading.load_engine`), run it with the
trace on and get back the same JSON-ready dictionary::

    evaluate_request(virtual_key=key, provider="openai", model="gpt-4o",
                     request_type="chat_completion", headers={"x-tier": "premium"},
                     query_params={}, capacity=Capacity(budget_used=85.0))

Capacity percentages are what the caller says they are: the same figures apply at every
chain step (the live status is not looked up). ``None`` means 0 / 0 / 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.models import Provider
from governance.models import VirtualKey
from routing.cel import ENGINE_NAMES
from routing.engine import Capacity, RoutingContext, RoutingDecision, RoutingResult, TraceEntry
from routing.loading import key_identity, load_engine

__all__ = [
    "DEFAULT_REQUEST_TYPE",
    "ENGINE_NAMES",
    "MAX_MAP_ENTRIES",
    "MAX_MAP_KEY_LENGTH",
    "MAX_MAP_VALUE_LENGTH",
    "SCOPE_LABELS",
    "check_string_map",
    "evaluate_request",
    "split_provider_model",
]

DEFAULT_REQUEST_TYPE: Final = "chat_completion"
#: Bounds of the ``headers`` and ``query_params`` objects.
MAX_MAP_ENTRIES: Final = 100
MAX_MAP_KEY_LENGTH: Final = 256
MAX_MAP_VALUE_LENGTH: Final = 8192

SCOPE_LABELS: Final = {"virtual_key": "Virtual key", "team": "Team", "customer": "Customer",
                       "global": "Global"}


def check_string_map(value: object, label: str) -> dict[str, str]:
    """``value`` as a ``{str: str}`` dict within the bounds above, or :class:`ValueError`
    with a message naming ``label`` (and the offending entry)."""
    if not isinstance(value, dict):
        raise ValueError(f"{label} must be a JSON object of strings, got {_json_type(value)}")
    if len(value) > MAX_MAP_ENTRIES:
        raise ValueError(f"{label} has {len(value)} entries; at most {MAX_MAP_ENTRIES} "
                         "are allowed")
    for name, item in value.items():
        if not isinstance(name, str) or len(name) > MAX_MAP_KEY_LENGTH:
            raise ValueError(f"{label}: names must be at most {MAX_MAP_KEY_LENGTH} characters")
        if not isinstance(item, str):
            raise ValueError(f"{label}[{name!r}] must be a string, got {_json_type(item)}")
        if len(item) > MAX_MAP_VALUE_LENGTH:
            raise ValueError(f"{label}[{name!r}] must be at most {MAX_MAP_VALUE_LENGTH} "
                             "characters")
    return dict(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def split_provider_model(provider: str, model: str) -> tuple[str, str]:
    """``("", "openai/gpt-4o")`` → ``("openai", "gpt-4o")`` when ``openai`` is a provider.

    Only without a provider, on the first "/", and only for an existing provider name:
    ``meta-llama/Llama-3`` stays a model name unless ``meta-llama`` is a provider.
    """
    if provider or "/" not in model:
        return provider, model
    prefix, rest = model.split("/", 1)
    if prefix and rest and Provider.objects.filter(name=prefix).exists():
        return prefix, rest
    return provider, model


def _decision(decision: RoutingDecision) -> dict[str, Any]:
    return {
        "provider": decision.provider,
        "model": decision.model,
        "key_id": decision.key_id or None,
        "fallbacks": list(decision.fallbacks),
        "rule_id": decision.rule_id,
        "rule_name": decision.rule_name,
    }


def _trace_entry(entry: TraceEntry) -> dict[str, Any]:
    return {
        "step": entry.step,
        "scope": entry.scope,
        "scope_id": entry.scope_id,
        "rule_id": entry.rule_id,
        "rule_name": entry.rule_name,
        "expression": entry.expression,
        "outcome": entry.outcome.value,
        "detail": entry.detail,
    }


def _scope_chain(virtual_key: VirtualKey | None) -> list[dict[str, str]]:
    if virtual_key is None:
        return [{"scope": "global", "scope_id": "", "name": ""}]
    identity = key_identity(virtual_key)
    names = {"virtual_key": identity.name, "team": identity.team_name,
             "customer": (identity.team_customer_name if identity.team_customer_id
                          else identity.customer_name)}
    return [{"scope": scope, "scope_id": scope_id, "name": names.get(scope, "")}
            for scope, scope_id in identity.scope_chain()]


def evaluate_request(*, virtual_key: VirtualKey | None, provider: str, model: str,
                     request_type: str = DEFAULT_REQUEST_TYPE,
                     headers: Mapping[str, str] | None = None,
                     query_params: Mapping[str, str] | None = None,
                     capacity: Capacity | None = None, engine_name: str | None = None,
                     seed: int | None = None) -> dict[str, Any]:
    """Run every enabled rule against the described request, with the full trace.

    ``decision`` is None when no rule matched: the request would then go to ``provider`` /
    ``model`` as given (default routing), which ``message`` says in words.
    """
    engine = load_engine(engine_name=engine_name, seed=seed)
    fixed = capacity or Capacity()
    context = RoutingContext(
        provider=provider,
        model=model,
        request_type=request_type,
        key=key_identity(virtual_key) if virtual_key is not None else None,
        headers=dict(headers or {}),
        query_params=dict(query_params or {}),
        capacity=lambda _provider, _model: fixed,
    )
    result: RoutingResult = engine.evaluate(context, trace=True)
    decision = result.decision
    if decision is None:
        message = (f"No routing rule matched: default routing applies "
                   f"(provider={provider or '(none)'}, model={model}).")
    else:
        message = (f"Rule '{decision.rule_name}' matched: provider={decision.provider}, "
                   f"model={decision.model}.")
    return {
        "decision": _decision(decision) if decision is not None else None,
        "matched": decision is not None,
        "message": message,
        "steps": result.steps,
        "trace": [_trace_entry(entry) for entry in result.trace],
        "log": list(result.log),
        "scope_chain": _scope_chain(virtual_key),
        "engine": engine.table.engine_name,
        "request": {
            "virtual_key_id": str(virtual_key.pk) if virtual_key is not None else None,
            "provider": provider,
            "model": model,
            "request_type": request_type,
            "headers": dict(headers or {}),
            "query_params": dict(query_params or {}),
            "capacity": {"budget_used": fixed.budget_used, "tokens_used": fixed.tokens_used,
                         "request": fixed.request},
            "seed": seed,
        },
    }
