"""The routing engine: which provider, model and key a request goes to (spec A5-A12).

Fed an immutable :class:`RoutingTable` (built from the database elsewhere, compiled once per
rule version) and a :class:`RoutingContext` per request::

    table = RoutingTable.build(rules, engine=get_engine("cel-expr-python"))
    result = RoutingEngine(table).evaluate(context)
    result.decision          # RoutingDecision or None (no rule matched: default routing)

Scopes are searched from the most specific (virtual key, team, customer) to global; within a
scope by ``priority``, then creation time, then id. The first matching rule with a usable
target wins. A ``chain_rule`` re-runs the search with the new provider and model until no
rule matches, a terminal rule matches, a provider/model pair repeats, or the depth limit is
reached; the last match wins for every field. A rule that fails to compile or evaluate is
skipped and logged: one bad rule never breaks routing.

A plain module: no Django import.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from routing.cel import CelCompileError, CelEngine, CelMissingKey, CompiledExpression
from routing.memo import memo_key, reads

logger = logging.getLogger(__name__)

GLOBAL = ("global", "")
_GLOBAL_CHAIN = (GLOBAL,)


@dataclass(frozen=True, slots=True)
class Target:
    provider: str | None
    model: str | None
    key_id: str | None
    weight: float


@dataclass(frozen=True, slots=True)
class Rule:
    """A routing rule as the engine needs it; ``program`` is None when it did not compile."""

    id: str
    name: str
    expression: str
    program: CompiledExpression | None
    compile_error: str | None
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...]
    chain_rule: bool
    scope: str
    scope_id: str
    priority: int
    created_at: datetime | None = None
    # what the expression reads (routing/memo.py); None: not memoisable
    reads: tuple[tuple[str, str | None], ...] | None = None


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who is calling: the virtual key and its resolved team and customer."""

    id: str
    name: str
    team_id: str = ""
    team_name: str = ""
    team_customer_id: str = ""
    team_customer_name: str = ""
    customer_id: str = ""
    customer_name: str = ""
    # scope_chain(), built on first use and kept (the identity is immutable): the engine
    # looks its plan up by it on every request
    _scope_chain: tuple[tuple[str, str], ...] | None = field(
        default=None, init=False, repr=False, compare=False)

    def scope_chain(self) -> tuple[tuple[str, str], ...]:
        """The scopes searched for this key, most specific first."""
        chain = self._scope_chain
        if chain is None:
            scopes: list[tuple[str, str]] = [("virtual_key", self.id)]
            if self.team_id:
                scopes.append(("team", self.team_id))
                if self.team_customer_id:
                    scopes.append(("customer", self.team_customer_id))
            elif self.customer_id:
                scopes.append(("customer", self.customer_id))
            scopes.append(GLOBAL)
            chain = tuple(scopes)
            object.__setattr__(self, "_scope_chain", chain)
        return chain

    @property
    def effective_customer(self) -> tuple[str, str]:
        if self.team_customer_id:
            return self.team_customer_id, self.team_customer_name
        return self.customer_id, self.customer_name


@dataclass(frozen=True, slots=True)
class Capacity:
    """Percentages (0-100, may exceed 100) of the tightest limits for a provider/model."""

    budget_used: float = 0.0
    tokens_used: float = 0.0
    request: float = 0.0


class CapacityView(Protocol):
    def __call__(self, provider: str, model: str) -> Capacity: ...


def no_capacity(provider: str, model: str) -> Capacity:
    return Capacity()


@dataclass(slots=True)  # built once per request: a frozen one sets each field through
class RoutingContext:    # object.__setattr__, twice the cost, and it is never hashed (dicts)
    provider: str
    model: str
    request_type: str = ""
    key: KeyIdentity | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    query_params: Mapping[str, str] = field(default_factory=dict)
    capacity: CapacityView = no_capacity
    # True when ``headers`` has lower-case names already (ASGI's): not copied to lower them
    headers_lowercase: bool = False


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    provider: str
    model: str
    key_id: str
    fallbacks: tuple[str, ...]
    rule_id: str
    rule_name: str


class Outcome(enum.Enum):
    MATCHED = "matched"
    NO_MATCH = "no match"
    MISSING_KEY = "no match (missing header or param)"
    NO_TARGETS = "matched but no valid targets"
    EVAL_ERROR = "skipped: evaluation error"
    COMPILE_ERROR = "skipped: compile error"


@dataclass(frozen=True, slots=True)
class TraceEntry:
    step: int
    scope: str
    scope_id: str
    rule_id: str
    rule_name: str
    expression: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RoutingResult:
    decision: RoutingDecision | None
    trace: tuple[TraceEntry, ...]
    log: tuple[str, ...]
    steps: int


class RoutingTable:
    """Enabled rules per scope, in evaluation order. Immutable once built."""

    __slots__ = ("_by_scope", "engine_name", "rule_count")

    def __init__(self, by_scope: Mapping[tuple[str, str], tuple[Rule, ...]], engine_name: str):
        self._by_scope = dict(by_scope)
        self.engine_name = engine_name
        self.rule_count = sum(len(rules) for rules in self._by_scope.values())

    @classmethod
    def build(cls, rules: Iterable[Mapping[str, Any]], *, engine: CelEngine) -> RoutingTable:
        """Compile enabled rules given as plain mappings (see :func:`make_rule`)."""
        grouped: dict[tuple[str, str], list[Rule]] = {}
        for data in rules:
            if not data.get("enabled", True):
                continue
            rule = make_rule(data, engine)
            grouped.setdefault((rule.scope, rule.scope_id), []).append(rule)
        ordered = {
            scope: tuple(sorted(items, key=lambda r: (r.priority, r.created_at or datetime.min,
                                                      r.id)))
            for scope, items in grouped.items()
        }
        return cls(ordered, engine.name)

    def rules_for(self, scope: tuple[str, str]) -> tuple[Rule, ...]:
        return self._by_scope.get(scope, ())


def make_rule(data: Mapping[str, Any], engine: CelEngine) -> Rule:
    expression = data.get("cel_expression") or ""
    try:
        program: CompiledExpression | None = engine.compile(expression)
        error = None
    except CelCompileError as exc:
        program, error = None, str(exc)
    scope = data.get("scope") or "global"
    return Rule(
        id=str(data["id"]),
        name=data["name"],
        expression=expression,
        program=program,
        compile_error=error,
        targets=tuple(
            Target(target.get("provider") or None, target.get("model") or None,
                   str(target["key_id"]) if target.get("key_id") else None,
                   float(target.get("weight", 0.0)))
            for target in data.get("targets", ())
        ),
        fallbacks=tuple(data.get("fallbacks") or ()),
        chain_rule=bool(data.get("chain_rule")),
        scope=scope,
        scope_id="" if scope == "global" else str(data.get("scope_id") or ""),
        priority=int(data.get("priority", 0)),
        created_at=data.get("created_at"),
        reads=reads(expression) if program is not None else None,
    )


def select_weighted_target(targets: tuple[Target, ...], rng: random.Random) -> Target | None:
    """Spec A10: negative weights are dropped; all-zero weights pick uniformly."""
    usable = [target for target in targets if target.weight >= 0]
    if not usable:
        return None
    if len(usable) == 1:
        return usable[0]
    total = sum(target.weight for target in usable)
    if total == 0:
        return rng.choice(usable)
    draw = rng.random() * total
    cumulative = 0.0
    for target in usable:
        cumulative += target.weight
        if draw < cumulative:
            return target
    return usable[-1]


def _lowered(values: Mapping[str, str], lowercase: bool) -> Mapping[str, str]:
    return values if lowercase else {name.lower(): value for name, value in values.items()}


class _Step:
    """One chain step's CEL variables (:data:`_VARIABLES`), computed only as far as they are
    needed: memo keys read single values straight from the request (:meth:`read`); only a
    rule that has to run gets them all (:attr:`plain`, :meth:`prepared`)."""

    __slots__ = ("_capacity", "_engine", "_headers", "_params", "_plain", "_prepared",
                 "context", "model", "provider")

    def __init__(self, engine: CelEngine, context: RoutingContext, provider: str,
                 model: str) -> None:
        self._engine = engine
        self.context = context
        self.provider = provider
        self.model = model
        self._capacity: Capacity | None = None
        self._headers: Mapping[str, str] | None = None
        self._params: Mapping[str, str] | None = None
        self._plain: dict[str, object] | None = None
        self._prepared: Any = None

    def capacity(self) -> Capacity:
        if self._capacity is None:
            self._capacity = self.context.capacity(self.provider, self.model)
        return self._capacity

    def headers(self) -> Mapping[str, str]:
        """The request's headers, names lower-cased (once per step, only if read)."""
        if self._headers is None:
            self._headers = _lowered(self.context.headers, self.context.headers_lowercase)
        return self._headers

    def params(self) -> Mapping[str, str]:
        if self._params is None:
            self._params = _lowered(self.context.query_params, False)
        return self._params

    def read(self, name: str, key: str | None) -> Any:
        """The value of one read of routing/memo.py: a variable, or one key of a map."""
        value = _VARIABLES[name](self)
        return value if key is None else value.get(key)

    @property
    def plain(self) -> dict[str, object]:
        if self._plain is None:
            self._plain = {name: read(self) for name, read in _VARIABLES.items()}
        return self._plain

    def prepared(self) -> Any:
        if self._prepared is None:
            self._prepared = self._engine.prepare(self.plain)
        return self._prepared


def _key_field(name: str) -> Callable[[_Step], object]:
    def read(step: _Step) -> object:
        key = step.context.key
        return getattr(key, name) if key is not None else ""
    return read


# The CEL variables (routing/cel.py's DECLARED_VARIABLES, which gives their types) and how
# a step reads each one. The only list: a rule that runs gets every one (_Step.plain), a
# memo key the ones it reads (_Step.read, _reader).
_VARIABLES: dict[str, Callable[[_Step], Any]] = {
    "model": lambda step: step.model,
    "provider": lambda step: step.provider,
    "request_type": lambda step: step.context.request_type,
    "headers": _Step.headers,
    "params": _Step.params,
    "virtual_key_id": _key_field("id"),
    "virtual_key_name": _key_field("name"),
    "team_id": _key_field("team_id"),
    "team_name": _key_field("team_name"),
    "customer_id": lambda step: (step.context.key.effective_customer[0]
                                 if step.context.key is not None else ""),
    "customer_name": lambda step: (step.context.key.effective_customer[1]
                                   if step.context.key is not None else ""),
    "budget_used": lambda step: float(step.capacity().budget_used),
    "tokens_used": lambda step: float(step.capacity().tokens_used),
    "request": lambda step: float(step.capacity().request),
}


MEMO_MAX = 4096
_MISS = object()


class _ChainPlan:
    """A scope chain with what its rules read, as one reader per value (None when a rule
    is not memoisable), and its memo: those values -> the winning rule (or None)."""

    __slots__ = ("chain", "memo", "readers")

    def __init__(self, chain: tuple[tuple[str, str], ...],
                 reads: tuple[tuple[str, str | None], ...] | None) -> None:
        self.chain = chain
        self.readers = None if reads is None else tuple(_reader(name, key)
                                                        for name, key in reads)
        self.memo: dict[tuple[Any, ...], Rule | None] = {}

    def values(self, step: _Step) -> tuple[Any, ...]:
        return tuple([read(step) for read in self.readers])  # type: ignore[union-attr]


def _decision(rule: Rule, target: Any, provider: str, model: str) -> RoutingDecision:
    """Where ``rule``'s chosen ``target`` sends a request for ``provider``/``model``."""
    return RoutingDecision(provider=target.provider or provider, model=target.model or model,
                           key_id=target.key_id or "", fallbacks=rule.fallbacks,
                           rule_id=rule.id, rule_name=rule.name)


def _reader(name: str, key: str | None) -> Callable[[_Step], Any]:
    """:meth:`_Step.read` of ``name`` and ``key`` as one call."""
    read = _VARIABLES[name]
    if key is None:
        return read
    return lambda step: read(step).get(key)


class RoutingEngine:
    """Evaluates a :class:`RoutingTable`. ``max_depth`` is read at every chain step, so a
    callable that reads live settings takes effect at once."""

    def __init__(self, table: RoutingTable, *, engine: CelEngine,
                 max_depth: int | Callable[[], int] = 10,
                 rng: random.Random | None = None) -> None:
        self.table = table
        self.engine = engine
        self._max_depth = max_depth if callable(max_depth) else (lambda: max_depth)
        self.rng = rng or random.Random()
        # rule id -> {values read: outcome}; lives with the engine, never on the table. The
        # chain memo (_ChainPlan.memo) answers a repeated request in one lookup; this one keeps
        # its misses cheap (only rules whose own inputs changed, e.g. a capacity figure, run
        # CEL) and serves chains that have a rule the chain memo cannot key.
        self._memo: dict[str, dict[tuple[Any, ...], tuple[Outcome, str]]] = {}
        # scope chain -> its plan (and chain memo); keys of the same chain share it
        self._plans: dict[tuple[tuple[str, str], ...], _ChainPlan] = {}

    def evaluate(self, context: RoutingContext, *, trace: bool = False) -> RoutingResult:
        """The decision for ``context``. With ``trace``, every rule looked at is reported
        (``entries``) with a readable ``log``; without it the log is empty and memoised
        outcomes are used."""
        provider, model = context.provider, context.model
        plan = self._plan_for(context.key)
        chain = plan.chain
        visited: set[tuple[str, str]] | None = None
        final: RoutingDecision | None = None
        entries: list[TraceEntry] = []
        log: list[str] | None = None
        if trace:
            log = ["Scope chain: [" + " ".join(f"{name}({scope_id})" if scope_id else name
                                               for name, scope_id in chain) + "]"]
        step = 0
        while True:
            max_depth = self._max_depth()
            if step >= max_depth:
                if log is not None:
                    log.append(f"Chain exceeded max depth ({max_depth}) at step {step}, "
                               f"stopping. Final resolved: provider={provider}, model={model}")
                logger.warning("routing chain exceeded max depth %s", max_depth)
                break
            if step > 0 and log is not None:
                log.append(f"Chain step {step}: re-evaluating with provider={provider}, "
                           f"model={model}")
            variables = _Step(self.engine, context, provider, model)
            matched = self._first_match(plan, variables, provider, model, step,
                                        entries if trace else None, log)
            if matched is None:
                break
            rule, decision = matched
            final = decision
            if not rule.chain_rule:
                break
            if visited is None:
                visited = {(context.provider, context.model)}
            state = (decision.provider, decision.model)
            if state in visited:
                if log is not None:
                    log.append(f"Chain cycle detected at step {step} (provider="
                               f"{decision.provider}, model={decision.model} already visited), "
                               f"stopping. Final resolved: provider={decision.provider}, "
                               f"model={decision.model}")
                break
            visited.add(state)
            provider, model = decision.provider, decision.model
            step += 1
        if final is None and log is not None:
            log.append("No routing rule matched, using default routing")
        return RoutingResult(final, tuple(entries), tuple(log or ()), step + 1)

    def _plan_for(self, key: KeyIdentity | None) -> _ChainPlan:
        """The plan of the key's scope chain (the global scope alone without a key)."""
        chain = key.scope_chain() if key is not None else _GLOBAL_CHAIN
        plan = self._plans.get(chain)
        if plan is None:
            rules = [rule for scope in chain for rule in self.table.rules_for(scope)]
            reads: tuple[tuple[str, str | None], ...] | None = None
            if all(rule.reads is not None for rule in rules):
                union = {read for rule in rules for read in rule.reads or ()}
                reads = tuple(sorted(union, key=lambda item: (item[0], item[1] or "")))
            if len(self._plans) >= MEMO_MAX:
                self._plans.clear()
            plan = self._plans[chain] = _ChainPlan(chain, reads)
        return plan

    def _first_match(self, plan: _ChainPlan, variables: _Step, provider: str, model: str,
                     step: int, entries: list[TraceEntry] | None,
                     log: list[str] | None) -> tuple[Rule, RoutingDecision] | None:
        """The first rule of the chain that matches and has a usable target, and its
        decision. Without a trace, the winning rule is memoised per chain under the values
        all of the chain's rules read: one lookup instead of one per rule."""
        chain = plan.chain
        if entries is None and plan.readers is not None:
            values = plan.values(variables)
            winner = plan.memo.get(values, _MISS)
            if winner is _MISS:
                found = self._scan(chain, variables, provider, model, step, None, log)
                if len(plan.memo) >= MEMO_MAX:
                    plan.memo.clear()
                plan.memo[values] = found[0] if found is not None else None
                return found
            if winner is None:
                return None
            target = select_weighted_target(winner.targets, self.rng)
            assert target is not None  # the memoised winner had a usable target
            return winner, _decision(winner, target, provider, model)
        return self._scan(chain, variables, provider, model, step, entries, log)

    def _scan(self, chain: tuple[tuple[str, str], ...], variables: Any, provider: str,
              model: str, step: int, entries: list[TraceEntry] | None,
              log: list[str] | None) -> tuple[Rule, RoutingDecision] | None:
        for scope in chain:
            for rule in self.table.rules_for(scope):
                outcome, detail = self._outcome(rule, variables)
                decision = None
                if outcome is Outcome.MATCHED:
                    target = select_weighted_target(rule.targets, self.rng)
                    if target is None:
                        outcome, detail = Outcome.NO_TARGETS, "empty or all-negative weights"
                    else:
                        decision = _decision(rule, target, provider, model)
                        detail = (f"selected target (weight={target.weight:.2f}): "
                                  f"provider={decision.provider}, model={decision.model}"
                                  + (f", key={decision.key_id}" if decision.key_id else "")
                                  + (f", fallbacks=[{' '.join(rule.fallbacks)}]"
                                     if rule.fallbacks else "")
                                  + (" [chain_rule=true, continuing]" if rule.chain_rule
                                     else ""))
                if entries is not None:
                    entries.append(TraceEntry(step, scope[0], scope[1], rule.id, rule.name,
                                              rule.expression, outcome, detail))
                if outcome in (Outcome.COMPILE_ERROR, Outcome.EVAL_ERROR):
                    if log is not None:
                        log.append(f"Rule '{rule.name}' {outcome.value}: {detail}")
                    logger.warning("routing rule %s (%s) %s: %s", rule.name, rule.id,
                                   outcome.value, detail)
                if decision is not None:
                    if log is not None:
                        log.append(f"Rule '{rule.name}' [{rule.expression}] → matched, "
                                   f"{detail}")
                    return rule, decision
        return None

    def _outcome(self, rule: Rule, variables: _Step) -> tuple[Outcome, str]:
        """The rule's outcome, from the memo when the same values were seen before
        (exact: a CEL program is a pure function of what it reads)."""
        rule_reads = rule.reads
        if rule_reads is None:
            return self._run(rule, variables.prepared())
        memo = self._memo.get(rule.id)
        if memo is None:
            memo = self._memo[rule.id] = {}
        key = memo_key(rule_reads, variables.read)
        outcome = memo.get(key)
        if outcome is None:
            outcome = self._run(rule, variables.prepared())
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[key] = outcome
        return outcome

    @staticmethod
    def _run(rule: Rule, variables: Any) -> tuple[Outcome, str]:
        if rule.program is None:
            return Outcome.COMPILE_ERROR, rule.compile_error or "not compiled"
        try:
            matched = rule.program.evaluate(variables)
        except CelMissingKey as exc:
            return Outcome.MISSING_KEY, str(exc)
        except Exception as exc:  # any evaluation failure skips this rule only
            return Outcome.EVAL_ERROR, str(exc)
        return (Outcome.MATCHED, "") if matched else (Outcome.NO_MATCH, "")
