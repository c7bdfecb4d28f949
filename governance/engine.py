"""The governance evaluator (pure: no Django, no ORM): who is calling, may they use this
provider and model, and do every applicable limit admit one more request.

Order (spec model-provider-governance 1.2, bifrost-reference 1.4): identity first, so a
revoked key on an over-budget team gets 403, not 402.

1. No key → 401 ``virtual_key_required`` (unless keys are optional); unknown → 401
   ``virtual_key_not_found``.
2. Inactive or expired → 403 ``virtual_key_blocked``; provider not in the key's provider
   configs → 403 ``provider_blocked``; model not allowed there → 403 ``model_blocked``.
   A key with no provider configs may use nothing (deny by default, as upstream Bifrost).
3. Every applicable limit (provider, model configs for this provider and for any provider,
   the key's provider config, the key, its team, its customer), de-duplicated, goes to the
   ledger in one ``admit``.
4. A denial becomes 429 ``request_limited`` / ``token_limited`` / ``rate_limited`` (both) /
   ``concurrency_limited`` or 402 ``budget_exceeded``, with ``retry-after`` and a message
   naming owner, window and usage, e.g. ``team "research" budget 1d: $50.02 of $50.00``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from gateway.errors import (
    BudgetExceeded,
    ConcurrencyLimited,
    GovernanceUnavailable,
    LimitExceeded,
    ModelBlocked,
    ProviderBlocked,
    RateLimited,
    RequestLimited,
    TokenLimited,
    VirtualKeyBlocked,
    VirtualKeyNotFound,
    VirtualKeyRequired,
)
from gateway.secrets import digest
from governance.ledger import (
    Admitted,
    Denied,
    Ledger,
    LedgerUnavailable,
    Limit,
    Metric,
    Reservation,
    Usage,
)
from governance.ledger.base import (
    COST,
    NANOS_PER_DOLLAR,
    REQUESTS,
    TOKENS,
    IdentityCache,
    dedupe_limits,
    retry_after_seconds,
)
from governance.ledger.windows import window_bounds
from governance.lograte import RateLimitedLog
from pricing.cost import Pricer
from routing.engine import Capacity

logger = logging.getLogger(__name__)

REQUEST_HEADER_NAMES = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                        b"x-ratelimit-reset-requests")
TOKEN_HEADER_NAMES = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens",
                      b"x-ratelimit-reset-tokens")
LIMITS_CACHE_MAX = 50_000  # (key, provider, model) combinations kept per snapshot

# Headers that may carry a virtual key, in the order they are looked at.
KEY_HEADERS = ("x-bf-vk", "authorization", "x-api-key", "api-key", "x-goog-api-key")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The virtual key a client sent (``headers`` has lower-case names), or None."""
    for name in KEY_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer":
                continue
            value = token
        value = value.strip()
        if value:
            return value
    return None


def format_dollars(nanos: int) -> str:
    """``$50.02`` for amounts of a cent or more, up to nine decimals below that."""
    dollars = Decimal(nanos) / NANOS_PER_DOLLAR
    if abs(dollars) >= 1 or dollars == dollars.quantize(Decimal("0.01")):
        return f"${dollars:.2f}"
    text = f"{dollars:.9f}".rstrip("0")
    return f"${text}"


UNITS = {Metric.TOKENS: " tokens", Metric.REQUESTS: " requests",
         Metric.CONCURRENT: " requests in flight"}


def describe(limit: Limit, used: int) -> str:
    """``team "research" budget 1d: $50.02 of $50.00``; ``...: 10 of 10 requests``."""
    label = limit.owner_label or limit.id
    if limit.metric is Metric.COST:
        return f"{label}: {format_dollars(used)} of {format_dollars(limit.maximum)}"
    return f"{label}: {used} of {limit.maximum}{UNITS[limit.metric]}"


def denial_error(denied: Denied) -> LimitExceeded:
    """The HTTP error for a ledger denial. Rate limits win over budgets (checked first in
    Bifrost); token and request limits both violated give ``rate_limited``."""
    violations = denied.violations or ((denied.limit, denied.used),)
    metrics = {limit.metric for limit, _used in violations}
    message = "; ".join(describe(limit, used) for limit, used in violations)
    retry_after = denied.retry_after_seconds
    if Metric.TOKENS in metrics and Metric.REQUESTS in metrics:
        error: type[LimitExceeded] = RateLimited
    elif Metric.TOKENS in metrics:
        error = TokenLimited
    elif Metric.REQUESTS in metrics:
        error = RequestLimited
    elif Metric.CONCURRENT in metrics:
        error = ConcurrencyLimited
    else:
        error = BudgetExceeded
    denied_error = error(message, retry_after_seconds=retry_after)
    # OpenAI's x-ratelimit-* for the request and token limits that refused, as a 429 from
    # OpenAI carries them: nothing remains until the window resets.
    headers: list[tuple[bytes, bytes]] = []
    for metric, names in ((Metric.REQUESTS, REQUEST_HEADER_NAMES),
                          (Metric.TOKENS, TOKEN_HEADER_NAMES)):
        refused = [limit for limit, _used in violations if limit.metric is metric]
        if refused:
            headers += [(names[0], b"%d" % min(limit.maximum for limit in refused)),
                        (names[1], b"0"), (names[2], b"%ds" % max(math.ceil(retry_after), 1))]
    denied_error.rate_limit_headers = headers
    return denied_error


# (limit id, metric, maximum) of the limits that take part in capacity.
CapacityPlan = tuple[tuple[str, Metric, int], ...]


def capacity_plan(limits: Iterable[Limit]) -> CapacityPlan:
    return tuple((limit.id, limit.metric, limit.maximum) for limit in limits
                 if limit.maximum > 0 and limit.metric in (COST, TOKENS, REQUESTS))


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request: what to settle, and whether the ledger was bypassed (fail open)."""

    request_id: str
    limits: tuple[Limit, ...]
    used: Mapping[str, int]
    bypassed: bool = False


DIGESTS_MAX = 10_000
UNFINISHED_MAX = 100_000  # settles and releases kept for a retry during a ledger outage


class Governor:
    """Evaluates requests against one snapshot at a time and one ledger.

    ``snapshot`` objects are duck-typed (``governance.snapshot.Snapshot``): ``keys_by_hash``,
    ``providers`` (each with ``limits``), ``model_limits`` and ``pricer``.
    """

    def __init__(self, ledger: Ledger, *, require_virtual_key: bool = True,
                 fail_open: bool = False, default_max_tokens: int = 4096,
                 clock: Callable[[], float] | None = None) -> None:
        self.ledger = ledger
        self.require_virtual_key = require_virtual_key
        self.fail_open = fail_open
        self.default_max_tokens = default_max_tokens
        self.clock = clock or ledger.clock
        self.usage_view = UsageView()
        # Ledger outages fail every request alike: one line per kind and 10 s, with a count.
        self.outage_log = RateLimitedLog(logger)
        # limits -> (its request limits, its token limits); see _header_limits
        self._header_limits_cache: IdentityCache[tuple[tuple[Limit, ...],
                                                       tuple[Limit, ...]]] = IdentityCache(
            LIMITS_CACHE_MAX)
        self._limits_cache: tuple[object, dict[tuple[str | None, str, str],
                                               tuple[tuple[Limit, ...], CapacityPlan]]] = (
            None, {})
        # (snapshot, presented secret -> its SHA-256) for secrets that named a key in that
        # snapshot (at most DIGESTS_MAX): a client sends the same key with every request.
        # Started over with each snapshot, like _limits_cache: a deleted key's secret is
        # not kept, and a remembered digest is always a key of the snapshot.
        self._digests: tuple[object, dict[str, str]] = (None, {})
        # Settles (with their usage) and releases (None) the ledger could not take, by
        # admission id, oldest first: retried once it answers (retry_unfinished), so an
        # outage does not keep their reservations counted and their concurrency slots
        # taken until the windows and leases end.
        self._unfinished: dict[str, Usage | None] = {}

    # -- identity and access -------------------------------------------------------------

    def authenticate(self, snapshot: object, secret: str | None):  # type: ignore[no-untyped-def]
        """The key record for ``secret``, None when keys are optional and none was sent."""
        if not secret:
            if self.require_virtual_key:
                raise VirtualKeyRequired()
            return None
        keys_by_hash = snapshot.keys_by_hash  # type: ignore[attr-defined]
        owner, digests = self._digests
        if owner is not snapshot:
            digests = {}
            self._digests = (snapshot, digests)  # one assignment: safe across threads
        hashed = digests.get(secret)
        if hashed is None:
            hashed = digest(secret)
            key = keys_by_hash.get(hashed)
            if key is None:  # unknown secrets are not remembered: no cache to flood
                raise VirtualKeyNotFound()
            if len(digests) >= DIGESTS_MAX:
                digests.clear()
            digests[secret] = hashed
        else:
            key = keys_by_hash[hashed]  # remembered from this snapshot, so it has the key
        if not key.is_active:
            raise VirtualKeyBlocked(f'Virtual key "{key.name}" is inactive')
        if key.expires_at is not None and key.expires_at <= self.clock():
            raise VirtualKeyBlocked(f'Virtual key "{key.name}" has expired')
        return key

    @staticmethod
    def authorize(key: object | None, provider: str, model: str):  # type: ignore[no-untyped-def]
        """The key's provider config for ``provider`` (None without a key), or 403."""
        if key is None:
            return None
        config = key.provider_configs.get(provider)  # type: ignore[attr-defined]
        if config is None:
            raise ProviderBlocked(f"Provider '{provider}' is not allowed for this virtual key")
        if model and not config.allows_model(model):
            raise ModelBlocked(f"Model '{model}' is not allowed for this virtual key "
                               f"on provider '{provider}'")
        return config

    def limits_for(self, snapshot: object, key: object | None, provider: str,
                   model: str) -> tuple[Limit, ...]:
        """Every limit that applies to a request, each once, outermost first."""
        return self._limits_entry(snapshot, key, provider, model)[0]

    def _limits_entry(self, snapshot: object, key: object | None, provider: str,
                      model: str) -> tuple[tuple[Limit, ...], CapacityPlan]:
        """The limits and their capacity plan, the same objects for the same key, provider
        and model while the snapshot stays (snapshots are immutable): a request asks twice,
        for routing's capacity and for the ledger."""
        owner, cache = self._limits_cache
        if owner is not snapshot:
            cache = {}
            self._limits_cache = (snapshot, cache)  # one assignment: safe across threads
            self._header_limits_cache.clear()  # the old snapshot's limits are not asked again
        cache_key = (key.id if key is not None else None, provider, model)  # type: ignore[attr-defined]
        entry = cache.get(cache_key)
        if entry is None:
            if len(cache) >= LIMITS_CACHE_MAX:
                cache.clear()
            limits = self._collect_limits(snapshot, key, provider, model)
            entry = cache[cache_key] = (limits, capacity_plan(limits))
        return entry

    @staticmethod
    def _collect_limits(snapshot: object, key: object | None, provider: str,
                        model: str) -> tuple[Limit, ...]:
        groups: list[Iterable[Limit]] = []
        provider_record = snapshot.providers.get(provider)  # type: ignore[attr-defined]
        if provider_record is not None:
            groups.append(provider_record.limits)
        model_limits = snapshot.model_limits  # type: ignore[attr-defined]
        groups.append(model_limits.get((model, provider), ()))
        groups.append(model_limits.get((model, None), ()))
        if key is not None:
            config = key.provider_configs.get(provider)  # type: ignore[attr-defined]
            if config is not None:
                groups.append(config.limits)
            groups += [key.limits, key.team_limits, key.customer_limits]  # type: ignore[attr-defined]
        return dedupe_limits(groups)

    # -- estimates --------------------------------------------------------------------------

    def reservation(self, pricer: Pricer, *, provider: str, model: str, request_type: str,
                    prompt_tokens: int, max_output_tokens: int | None,
                    virtual_key_id: str | None = None) -> Reservation:
        """What to reserve before the call: the prompt plus ``max_tokens`` (or the default)
        at catalog prices, so concurrent requests cannot all take the last dollar."""
        output_tokens = max_output_tokens if max_output_tokens is not None \
            else self.default_max_tokens
        output_tokens = max(output_tokens, 0)
        cost_nanos = pricer.estimate_nanos(provider, model, request_type, virtual_key_id,
                                           prompt_tokens, output_tokens)
        return Reservation(cost_nanos=cost_nanos, tokens=prompt_tokens + output_tokens)

    # -- ledger -----------------------------------------------------------------------------

    async def admit(self, request_id: str, limits: Sequence[Limit],
                    reservation: Reservation) -> Admission:
        """Reserve on every limit at once, or raise the denial (or 503 when closed)."""
        if not limits:
            return Admission(request_id, (), {})
        try:
            result = await self.ledger.admit(request_id, limits, reservation)
        except LedgerUnavailable as exc:
            if self.fail_open:
                self.outage_log.warning(
                    "admit-bypassed", "ledger unavailable, admitting %s without limits "
                    "(fail open): %s", request_id, exc)
                return Admission(request_id, tuple(limits), {}, bypassed=True)
            self.outage_log.error("admit-refused", "ledger unavailable, refusing %s "
                                  "(fail closed): %s", request_id, exc)
            raise GovernanceUnavailable() from exc
        if isinstance(result, Denied):
            raise denial_error(result)
        assert isinstance(result, Admitted)
        self.usage_view.observe(result.used)
        return Admission(request_id, tuple(limits), result.used)

    async def settle(self, admission: Admission, actual: Usage) -> bool:
        """Settle; False (logged) when the ledger is down: the usage record still carries
        the usage and ``rebuild_counters`` restores the counters from it."""
        if not admission.limits or admission.bypassed:
            return True
        try:
            await self.ledger.settle(admission.request_id, actual)
        except LedgerUnavailable as exc:
            self.outage_log.error("settle", "could not settle %s (retried once the ledger "
                                  "answers): %s", admission.request_id, exc)
            self._keep_unfinished(admission.request_id, actual)
            return False
        return True

    async def release(self, admission: Admission) -> None:
        if not admission.limits or admission.bypassed:
            return
        try:
            await self.ledger.release(admission.request_id)
        except LedgerUnavailable as exc:
            self.outage_log.error("release", "could not release %s (retried once the ledger "
                                  "answers): %s", admission.request_id, exc)
            self._keep_unfinished(admission.request_id, None)

    def _keep_unfinished(self, admission_id: str, actual: Usage | None) -> None:
        unfinished = self._unfinished
        if admission_id not in unfinished and len(unfinished) >= UNFINISHED_MAX:
            # the oldest goes: its reservation and lease end with their window or lease
            del unfinished[next(iter(unfinished))]
        unfinished[admission_id] = actual

    def unfinished(self) -> int:
        """Settles and releases waiting for the ledger to answer again."""
        return len(self._unfinished)

    async def retry_unfinished(self) -> int:
        """Settle and release what an outage left unfinished, oldest first, until the ledger
        fails again; returns how many went through. Both are idempotent in the ledger: one
        that went through before its answer was lost finds nothing left to do."""
        done = 0
        while self._unfinished:
            admission_id, actual = next(iter(self._unfinished.items()))
            try:
                if actual is None:
                    await self.ledger.release(admission_id)
                else:
                    await self.ledger.settle(admission_id, actual)
            except LedgerUnavailable:
                break
            self._unfinished.pop(admission_id, None)
            done += 1
        if done:
            logger.info("settled or released %d request(s) the ledger could not take "
                        "during its outage", done)
        return done

    # -- the capacity view routing rules read --------------------------------------------

    def capacity(self, snapshot: object, key: object | None) -> Callable[[str, str], Capacity]:
        """``capacity(provider, model)`` for CEL's ``budget_used``, ``tokens_used`` and
        ``request``: percentages of the tightest limit of each metric, from the usage this
        worker last saw in the ledger (at most one refresh interval old)."""
        view = self.usage_view

        def capacity(provider: str, model: str) -> Capacity:
            return view.capacity(self._limits_entry(snapshot, key, provider, model)[1])

        return capacity

    def rate_limit_headers(self, admission: Admission) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits,
        encoded for ASGI."""
        used = admission.used
        if not used:
            return []
        requests_limits, tokens_limits = self._header_limits(admission.limits)
        headers: list[tuple[bytes, bytes]] = []
        now: float | None = None  # read once, and only when a header needs it
        for limits, names in ((requests_limits, REQUEST_HEADER_NAMES),
                              (tokens_limits, TOKEN_HEADER_NAMES)):
            tightest = None
            least = 0
            for limit in limits:
                counted = used.get(limit.id)
                if counted is not None and (tightest is None or limit.maximum - counted < least):
                    tightest, least = limit, limit.maximum - counted
            if tightest is None:
                continue
            if now is None:
                now = self.clock()
            reset_s = math.ceil(retry_after_seconds(tightest, now))
            headers += [(names[0], b"%d" % tightest.maximum),
                        (names[1], b"%d" % (least if least > 0 else 0)),
                        (names[2], b"%ds" % reset_s)]
        return headers

    def _header_limits(self, limits: tuple[Limit, ...]
                       ) -> tuple[tuple[Limit, ...], tuple[Limit, ...]]:
        """The request limits and the token limits among ``limits``, once per limits object
        (the same one comes back for every request of a key, provider and model)."""
        found = self._header_limits_cache.get(limits)
        if found is None:
            found = self._header_limits_cache.put(limits, (
                tuple(limit for limit in limits if limit.metric is REQUESTS),
                tuple(limit for limit in limits if limit.metric is TOKENS)))
        return found


class UsageView:
    """Last usage seen per limit (from admits and periodic refreshes); read by routing's
    capacity variables. Approximate by design: it never blocks a request on the ledger."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def observe(self, used: Mapping[str, int]) -> None:
        """Usage after an admit, by limit id."""
        self._used.update(used)

    def replace(self, used: Mapping[str, int]) -> None:
        self._used = dict(used)

    def capacity(self, plan: CapacityPlan) -> Capacity:
        """The capacity of the limits of ``plan`` (:func:`capacity_plan`)."""
        used = self._used
        budget = tokens = requests = 0.0
        for limit_id, metric, maximum in plan:
            percent = 100.0 * used.get(limit_id, 0) / maximum
            if metric is COST:
                if percent > budget:
                    budget = percent
            elif metric is TOKENS:
                if percent > tokens:
                    tokens = percent
            elif percent > requests:
                requests = percent
        # Two decimals: the view is up to a second old anyway, and stable values let routing
        # reuse rule outcomes (routing/memo.py) instead of re-evaluating on every request.
        return Capacity(budget_used=round(budget, 2), tokens_used=round(tokens, 2),
                        request=round(requests, 2))



def window_reset_at(limit: Limit, now: float) -> float | None:
    """When the window of ``limit`` containing ``now`` ends (None for concurrency)."""
    if limit.window is None:
        return None
    return window_bounds(limit.window, now)[1]
