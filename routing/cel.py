"""CEL compile, type-check and evaluate for routing rules.

Spec: ``routing-and-proxy.md`` A3 (declared variables), A7 (normalization, compile errors),
A9 (outcome of an evaluation) and A15 (notes on the Python CEL libraries).

Two engines behind one small interface, both built lazily and cached by :func:`get_engine`:

- ``cel-expr-python`` (default): Google's wrapper of cel-cpp. It type-checks at compile time.
- ``cel-python`` (``celpy``): pure Python and much slower. It only parses at compile time, so
  compilation ends with a dry run against zero values to catch undeclared variables, type
  errors and non-boolean results.

Usage::

    program = get_engine("cel-expr-python").compile('headers["X-Tier"] == "premium"')
    program.evaluate(variables)  # -> bool; raises CelMissingKey / CelEvaluationError

A plain Python module with no Django import: the data plane uses it.
"""

from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

__all__ = [
    "DECLARED_VARIABLES",
    "DEFAULT_ENGINE",
    "DOUBLE",
    "ENGINE_NAMES",
    "NON_BOOLEAN_MESSAGE",
    "STRING",
    "STRING_MAP",
    "CelCompileError",
    "CelEngine",
    "CelError",
    "CelEvaluationError",
    "CelExprPythonEngine",
    "CelMissingKey",
    "CelPythonEngine",
    "CompiledExpression",
    "PreparedVariables",
    "check_expression",
    "get_engine",
    "normalize_expression",
    "zero_activation",
]

DEFAULT_ENGINE: Final = "cel-expr-python"
ENGINE_NAMES: Final = ("cel-expr-python", "cel-python")

STRING: Final = "string"
STRING_MAP: Final = "map(string, string)"
DOUBLE: Final = "double"

#: The CEL variables of a routing rule and the type of the value callers pass (spec A3).
#: The three capacity percentages are doubles; the cel-expr-python engine declares them as
#: ``dyn`` so that ``budget_used > 80`` (an int literal) type-checks and compares correctly.
DECLARED_VARIABLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "model": STRING,
        "provider": STRING,
        "request_type": STRING,
        "headers": STRING_MAP,
        "params": STRING_MAP,
        "virtual_key_id": STRING,
        "virtual_key_name": STRING,
        "team_id": STRING,
        "team_name": STRING,
        "customer_id": STRING,
        "customer_name": STRING,
        "tokens_used": DOUBLE,
        "request": DOUBLE,
        "budget_used": DOUBLE,
    }
)

NON_BOOLEAN_MESSAGE: Final = "CEL expression did not return boolean, got: {}"

# Spec A7.3: header and param keys written in an expression are lower-cased (whole match).
_KEY_PATTERNS: Final = tuple(
    re.compile(pattern)
    for pattern in (
        r"""headers\[["']([^"']+)["']\]""",
        r"""params\[["']([^"']+)["']\]""",
        r"""["']([^"']+)["']\s+in\s+headers""",
        r"""["']([^"']+)["']\s+in\s+params""",
    )
)


def zero_activation() -> dict[str, object]:
    """Return a fresh activation with the zero value of every declared variable."""
    zero: dict[str, object] = {}
    for name, type_name in DECLARED_VARIABLES.items():
        if type_name == STRING_MAP:
            zero[name] = {}
        elif type_name == DOUBLE:
            zero[name] = 0.0
        else:
            zero[name] = ""
    return zero


def _lower_match(match: re.Match[str]) -> str:
    return match.group(0).lower()


def normalize_expression(expression: str) -> str:
    """Apply spec A7.2 (blank means ``true``) and A7.3 (lower-case map keys)."""
    source = expression.strip()
    if not source:
        return "true"
    for pattern in _KEY_PATTERNS:
        source = pattern.sub(_lower_match, source)
    return source


class CelError(Exception):
    """Base class of every error raised by this module."""


class CelCompileError(CelError):
    """The expression is not a valid boolean routing rule. ``detail`` is the engine's message."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"CEL compile error: {detail}")
        self.detail = detail


class CelEvaluationError(CelError):
    """Evaluation failed or did not produce a boolean (spec A9: the rule is skipped)."""


class CelMissingKey(CelEvaluationError):
    """A map key was missing, e.g. a header that was not sent (spec A9: no match)."""


class _NonBooleanResult(CelEvaluationError):
    def __init__(self, type_name: str) -> None:
        super().__init__(NON_BOOLEAN_MESSAGE.format(type_name))
        self.type_name = type_name


class PreparedVariables:
    """Variables converted once by :meth:`CelEngine.prepare`, reusable by many expressions
    of the same engine (the routing engine evaluates several rules per request)."""

    __slots__ = ("engine", "payload")

    def __init__(self, engine: CelEngine, payload: object) -> None:
        self.engine = engine
        self.payload = payload


class CompiledExpression(ABC):
    """A compiled and checked routing expression of one engine. Immutable and reusable."""

    __slots__ = ("source",)

    engine_name: ClassVar[str]

    def __init__(self, source: str) -> None:
        self.source = source  # the normalized expression text

    @abstractmethod
    def evaluate(self, variables: Mapping[str, object] | PreparedVariables) -> bool:
        """Evaluate against ``variables`` (see :data:`DECLARED_VARIABLES`).

        Raises :class:`CelMissingKey` for a missing map key and :class:`CelEvaluationError`
        for any other error or a non-boolean result.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.source!r}>"


class CelEngine(ABC):
    """A CEL implementation with the routing variables declared once."""

    name: ClassVar[str]

    @abstractmethod
    def compile(self, expression: str) -> CompiledExpression:
        """Normalize, parse, type-check and plan ``expression``; raise CelCompileError."""
        raise NotImplementedError("CelEngine.compile() must be implemented")

    def prepare(self, variables: Mapping[str, object]) -> PreparedVariables:
        """Convert ``variables`` once for several evaluations with this engine."""
        return PreparedVariables(self, variables)

    def _unwrap(self, variables: PreparedVariables) -> Any:
        if variables.engine is not self:
            raise CelEvaluationError(
                f"variables prepared by {variables.engine!r} cannot be evaluated by {self!r}"
            )
        return variables.payload

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} at {id(self):#x}>"


# --------------------------------------------------------------------------- cel-expr-python


class CelExprPythonEngine(CelEngine):
    """Google's ``cel-expr-python`` (cel-cpp): type-checked at compile time, ~µs evaluation.

    Missing map keys and other runtime failures come back as error *values*, whose text starts
    with the absl status code (``NOT_FOUND`` for a missing key or field). Compilation also
    dry-runs the program on zero values, which rejects expressions that can never evaluate,
    such as ``budget_used + 1 > 80`` (no ``double + int`` overload; write ``1.0``).
    Map values (``headers``, ``params``) must be ``dict`` instances.
    """

    name = "cel-expr-python"

    def __init__(self) -> None:
        from cel_expr_python import cel

        cel_types = {
            STRING: cel.Type.STRING,
            STRING_MAP: cel.Type.Map(cel.Type.STRING, cel.Type.STRING),
            DOUBLE: cel.Type.DYN,  # spec A15: int literals must compare with these
        }
        self._env = cel.NewEnv(
            variables={name: cel_types[t] for name, t in DECLARED_VARIABLES.items()}
        )
        self._result_types = (cel.Type.BOOL, cel.Type.DYN)
        self._error_type = cel.Type.ERROR
        self._zero = PreparedVariables(self, self._env.Activation(zero_activation()))

    def prepare(self, variables: Mapping[str, object]) -> PreparedVariables:
        try:
            activation = self._env.Activation(variables)
        except Exception as exc:  # not a mapping of str keys
            raise CelEvaluationError(f"CEL evaluation failed: {exc}") from exc
        return PreparedVariables(self, activation)

    def compile(self, expression: str) -> CompiledExpression:
        source = normalize_expression(expression)
        try:
            checked = self._env.compile(source)
        except Exception as exc:  # the binding raises RuntimeError with the checker's report
            raise CelCompileError(_strip_status(str(exc))) from None
        result_type = checked.return_type()
        if result_type not in self._result_types:
            raise CelCompileError(
                f"expression must return a boolean, got: {_cel_type_name(result_type)}"
            )
        program = _CelExprPythonProgram(source, checked, self)
        _dry_run(program, self._zero)
        return program

    def _failure(self, result: Any) -> CelEvaluationError:
        """Turn a non-boolean ``cel.Value`` into the exception to raise."""
        value_type = result.type()
        if value_type == self._error_type:
            message = str(result.value())
            if message.startswith("NOT_FOUND"):
                return CelMissingKey(message)
            return CelEvaluationError(message)
        return _NonBooleanResult(_cel_type_name(value_type))


def _strip_status(message: str) -> str:
    # "INVALID_ARGUMENT: ERROR: <input>:1:7: ... [INVALID_ARGUMENT]" -> "ERROR: <input>:1:7: ..."
    prefix, suffix = "INVALID_ARGUMENT: ", " [INVALID_ARGUMENT]"
    if message.startswith(prefix) and message.endswith(suffix):
        return message[len(prefix) : -len(suffix)]
    return message


def _cel_type_name(cel_type: Any) -> str:
    # "STRING" -> "string", "LIST<DYN>" -> "list", "NULL" -> "null_type"
    name = cel_type.name().split("<", 1)[0].lower()
    return "null_type" if name == "null" else name


class _CelExprPythonProgram(CompiledExpression):
    __slots__ = ("_checked", "_engine")

    engine_name = CelExprPythonEngine.name

    def __init__(self, source: str, checked: Any, engine: CelExprPythonEngine) -> None:
        super().__init__(source)
        self._checked = checked
        self._engine = engine

    def evaluate(self, variables: Mapping[str, object] | PreparedVariables) -> bool:
        try:
            if type(variables) is PreparedVariables:
                result = self._checked.eval(self._engine._unwrap(variables))
            else:
                result = self._checked.eval(data=variables)
            value = result.value()
        except CelError:
            raise
        except Exception as exc:  # e.g. not a mapping, or an unconvertible value
            raise CelEvaluationError(f"CEL evaluation failed: {exc}") from exc
        if value is True or value is False:
            return value
        raise self._engine._failure(result)


# --------------------------------------------------------------------------------- cel-python


class CelPythonEngine(CelEngine):
    """``cel-python`` (``celpy``): pure Python, interpreted, 50 to 150 times slower.

    It has no type checker, so compilation dry-runs the program against zero values: an error
    other than a missing key (undeclared variable, type error) or a non-boolean result is a
    compile error. A second dry run, where ``headers`` and ``params`` hold every key with the
    value ``""``, only checks the result type (so ``headers["x"]`` is rejected). What ``||`` or
    ``&&`` absorb stays invisible: ``foo == 1 || true`` compiles. Mixed int/double comparisons
    (``80 < budget_used``, ``budget_used == 81``) compare numerically, as in cel-cpp and the
    current CEL spec, where celpy alone would raise "no such overload".
    """

    name = "cel-python"

    def __init__(self) -> None:
        import celpy
        from celpy import celtypes, evaluation

        recursion_limit = sys.getrecursionlimit()
        try:
            self._env = celpy.Environment()
        finally:  # celpy.Environment() sets the process-wide recursion limit to 2500: undo it
            sys.setrecursionlimit(recursion_limit)
        self._eval_error = celpy.CELEvalError
        self._parse_error = celpy.CELParseError
        self._bool = celtypes.BoolType
        self._functions = _celpy_functions(celtypes, evaluation)
        by_type = _celpy_converters(celtypes, celpy.json_to_cel)
        self._converters = {name: by_type[t] for name, t in DECLARED_VARIABLES.items()}
        self._type_names: dict[type, str] = {
            celtypes.BoolType: "bool",
            celtypes.IntType: "int",
            celtypes.UintType: "uint",
            celtypes.DoubleType: "double",
            celtypes.StringType: "string",
            celtypes.BytesType: "bytes",
            celtypes.ListType: "list",
            celtypes.MapType: "map",
            celtypes.TimestampType: "timestamp",
            celtypes.DurationType: "duration",
            type(None): "null_type",
        }

        class AnyKeyMap(celtypes.MapType):
            """A dry-run map that has every key, with the value ``""``."""

            def __getitem__(self, key: Any) -> Any:
                return celtypes.StringType("")

        zero = self._activation(zero_activation())
        self._zero = PreparedVariables(self, zero)
        any_key = {n: AnyKeyMap() for n, t in DECLARED_VARIABLES.items() if t == STRING_MAP}
        self._zero_any_key = PreparedVariables(self, {**zero, **any_key})

    def _activation(self, variables: Mapping[str, object]) -> dict[str, Any]:
        converters = self._converters
        activation: dict[str, Any] = {}
        try:
            items = variables.items()
        except AttributeError as exc:
            raise CelEvaluationError(f"CEL evaluation failed: {exc}") from None
        for name, value in items:
            converter = converters.get(name)
            if converter is not None:  # undeclared names are ignored, as cel-cpp does
                try:
                    activation[name] = converter(value)
                except (TypeError, ValueError, AttributeError) as exc:
                    raise CelEvaluationError(
                        f"invalid value for CEL variable {name!r}: {exc}"
                    ) from None
        return activation

    def prepare(self, variables: Mapping[str, object]) -> PreparedVariables:
        return PreparedVariables(self, self._activation(variables))

    def compile(self, expression: str) -> CompiledExpression:
        source = normalize_expression(expression)
        try:
            ast = self._env.compile(source)
        except self._parse_error as exc:
            raise CelCompileError(_celpy_syntax_message(exc)) from None
        except Exception as exc:  # a lark error that celpy does not wrap
            raise CelCompileError(f"Syntax error: {exc}") from None
        try:
            runner = self._env.program(ast, functions=self._functions)
        except Exception as exc:
            raise CelCompileError(f"program creation failed: {exc}") from None
        program = _CelPythonProgram(source, runner, self)
        _dry_run(program, self._zero)
        # Again with every header and param present (value ""), to see the result type of
        # e.g. `headers["x"]`; errors are ignored here since "" is not every key's value.
        _dry_run(program, self._zero_any_key, result_type_only=True)
        return program

    def _failure(self, error: Exception) -> CelEvaluationError:
        """Turn a celpy ``CELEvalError`` (or an unexpected exception) into ours."""
        args = error.args
        if not isinstance(error, self._eval_error) or not args:
            return CelEvaluationError(f"CEL evaluation failed: {error!r}")
        message = str(args[0])
        # celpy appends the whole activation to "undeclared reference to 'x'": cut it.
        message = message.split(" (in activation ", 1)[0]
        detail = args[2] if len(args) > 2 and isinstance(args[2], tuple) else ()
        if args[1:2] == (KeyError,):
            # map["k"] gives "no such key", map.k gives "no such member in mapping: 'k'";
            # an undeclared variable is a KeyError too, but is not a missing key.
            if message == "no such key":
                return CelMissingKey(f"no such key: {str(detail[0])!r}" if detail else message)
            if message.startswith("no such member in mapping"):
                return CelMissingKey(message)
        elif args[1:2] != (TypeError,) and detail:
            reason = detail[0]  # e.g. ("match error", re2.Error, (b"missing ]: [",))
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            message = f"{message}: {reason}"
        return CelEvaluationError(message)

    def _type_name(self, value: object) -> str:
        return self._type_names.get(type(value), type(value).__name__)


def _celpy_functions(celtypes: Any, evaluation: Any) -> dict[str, Callable[..., Any]]:
    """Operator overrides that make celpy behave as cel-cpp and the CEL spec.

    - ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=`` compare int, uint and double numerically
      (celpy raises "no such overload" for ``IntType(80) < DoubleType(80.5)``).
    - ``error || error`` and ``error && error`` give the left error (celpy replaces both with a
      "no matching overload" error whose message embeds both: a chain of ``||`` over missing
      headers grows exponentially, 30 clauses exhaust memory).
    """
    import operator

    numbers: dict[type, type] = {
        celtypes.IntType: int,
        celtypes.UintType: int,
        celtypes.DoubleType: float,
    }
    bool_type, error_type = celtypes.BoolType, evaluation.CELEvalError

    def numeric(op: Callable[[Any, Any], bool], base: Callable[..., Any]) -> Callable[..., Any]:
        def relation(left: Any, right: Any) -> Any:
            left_type, right_type = type(left), type(right)
            if left_type is not right_type and left_type in numbers and right_type in numbers:
                return bool_type(op(numbers[left_type](left), numbers[right_type](right)))
            return base(left, right)

        return relation

    def logical(base: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def connective(left: Any, right: Any) -> Any:
            if not isinstance(left, bool_type) and not isinstance(right, bool_type):
                if isinstance(left, error_type):
                    return left
                if isinstance(right, error_type):
                    return right
            return base(left, right)

        return connective

    return {
        "_<_": numeric(operator.lt, evaluation.bool_lt),
        "_<=_": numeric(operator.le, evaluation.bool_le),
        "_>_": numeric(operator.gt, evaluation.bool_gt),
        "_>=_": numeric(operator.ge, evaluation.bool_ge),
        "_==_": numeric(operator.eq, evaluation.bool_eq),
        "_!=_": numeric(operator.ne, evaluation.bool_ne),
        "_||_": logical(celtypes.logical_or),
        "_&&_": logical(celtypes.logical_and),
    }


def _celpy_converters(
    celtypes: Any, json_to_cel: Callable[[Any], Any]
) -> dict[str, Callable[[Any], Any]]:
    string_type, map_type = celtypes.StringType, celtypes.MapType

    def string(value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        return string_type(value)

    def string_map(value: Any) -> Any:
        return map_type({string(key): string(item) for key, item in value.items()})

    def number(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected float, got {type(value).__name__}")
        return json_to_cel(value)  # float -> DoubleType, int -> IntType (as cel-cpp does)

    return {STRING: string, STRING_MAP: string_map, DOUBLE: number}


def _celpy_syntax_message(error: Exception) -> str:
    # CELParseError carries only the caret picture; the reason is on the lark exception.
    reason = str(error.__context__ or "").split("\n", 1)[0].strip() or "invalid expression"
    line, column = getattr(error, "line", None), getattr(error, "column", None)
    where = f"<input>:{line}:{column}" if line and column else "<input>"
    picture = str(error).rstrip("\n")
    return f"ERROR: {where}: Syntax error: {reason}\n{picture}"


class _CelPythonProgram(CompiledExpression):
    __slots__ = ("_engine", "_runner")

    engine_name = CelPythonEngine.name

    def __init__(self, source: str, runner: Any, engine: CelPythonEngine) -> None:
        super().__init__(source)
        self._runner = runner
        self._engine = engine

    def evaluate(self, variables: Mapping[str, object] | PreparedVariables) -> bool:
        engine = self._engine
        if type(variables) is PreparedVariables:
            activation = engine._unwrap(variables)
        else:
            activation = engine._activation(variables)
        try:
            value = self._runner.evaluate(activation)
        except Exception as exc:  # CELEvalError, or a celpy bug surfacing as anything else
            raise engine._failure(exc) from None
        if type(value) is engine._bool:
            return bool(value)
        raise _NonBooleanResult(engine._type_name(value))


# ------------------------------------------------------------------------------------ helpers


def _dry_run(
    program: CompiledExpression, zero: PreparedVariables, *, result_type_only: bool = False
) -> None:
    """Evaluate on zero values at compile time: a missing key is fine, nothing else is."""
    try:
        program.evaluate(zero)
    except _NonBooleanResult as exc:
        raise CelCompileError(f"expression must return a boolean, got: {exc.type_name}") from None
    except CelMissingKey:
        pass
    except CelEvaluationError as exc:
        if not result_type_only:
            raise CelCompileError(str(exc)) from None


_ENGINE_CLASSES: Final[Mapping[str, type[CelEngine]]] = MappingProxyType(
    {CelExprPythonEngine.name: CelExprPythonEngine, CelPythonEngine.name: CelPythonEngine}
)
_engines: dict[str, CelEngine] = {}  # built lazily, one per name


def get_engine(name: str = DEFAULT_ENGINE) -> CelEngine:
    """Return the shared engine called ``name`` (one of :data:`ENGINE_NAMES`)."""
    engine = _engines.get(name)
    if engine is None:
        engine_class = _ENGINE_CLASSES.get(name)
        if engine_class is None:
            allowed = ", ".join(repr(n) for n in ENGINE_NAMES)
            raise ValueError(f"unknown CEL engine {name!r}; expected one of: {allowed}")
        engine = _engines.setdefault(name, engine_class())
    return engine


def check_expression(expression: str, engine_name: str = DEFAULT_ENGINE) -> None:
    """Raise :class:`CelCompileError` unless ``expression`` is a valid routing rule."""
    get_engine(engine_name).compile(expression)
