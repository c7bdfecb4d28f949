"""Tests for routing.cel: both CEL engines share every table (spec A3, A7, A9, A15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.cel import (
    DECLARED_VARIABLES,
    DEFAULT_ENGINE,
    ENGINE_NAMES,
    CelCompileError,
    CelEngine,
    CelError,
    CelEvaluationError,
    CelExprPythonEngine,
    CelMissingKey,
    CelPythonEngine,
    CompiledExpression,
    check_expression,
    get_engine,
    normalize_expression,
    zero_activation,
)

CEL_EXPR_PYTHON = "cel-expr-python"
CEL_PYTHON = "cel-python"
BOTH = ENGINE_NAMES

engine_names = pytest.mark.parametrize("engine_name", ENGINE_NAMES)


def variables(**overrides: object) -> dict[str, object]:
    """A realistic routing context (spec A4), with ``overrides`` applied."""
    values = zero_activation()
    values.update(
        model="gpt-4o",
        provider="openai",
        request_type="chat_completion",
        headers={"x-tier": "premium", "user-agent": "openai-python/1.0"},
        params={"region": "eu"},
        virtual_key_id="vk-1",
        virtual_key_name="prod-backend",
        team_id="t-1",
        team_name="research",
        customer_id="c-1",
        customer_name="acme",
        tokens_used=10.0,
        request=20.0,
        budget_used=85.5,
    )
    values.update(overrides)
    return values


# ------------------------------------------------------------------------ declarations


def test_declared_variables_follow_spec_a3() -> None:
    assert dict(DECLARED_VARIABLES) == {
        "model": "string",
        "provider": "string",
        "request_type": "string",
        "headers": "map(string, string)",
        "params": "map(string, string)",
        "virtual_key_id": "string",
        "virtual_key_name": "string",
        "team_id": "string",
        "team_name": "string",
        "customer_id": "string",
        "customer_name": "string",
        "tokens_used": "double",
        "request": "double",
        "budget_used": "double",
    }
    with pytest.raises(TypeError):
        DECLARED_VARIABLES["model"] = "int"  # type: ignore[index]


def test_zero_activation_has_a_fresh_zero_for_every_variable() -> None:
    first = zero_activation()
    assert set(first) == set(DECLARED_VARIABLES)
    assert first["model"] == ""
    assert first["headers"] == {}
    assert first["params"] == {}
    assert type(first["budget_used"]) is float
    assert first["budget_used"] == 0.0
    first["headers"]["x"] = "y"  # type: ignore[index]
    assert zero_activation()["headers"] == {}


# ---------------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("", "true", id="empty"),
        pytest.param("  \n\t ", "true", id="whitespace-only"),
        pytest.param('headers["X-Tier"] == "Gold"', 'headers["x-tier"] == "Gold"', id="headers-dq"),
        pytest.param("params['Region'] == 'EU'", "params['region'] == 'EU'", id="params-sq"),
        pytest.param('"X-Tier" in headers', '"x-tier" in headers', id="in-headers"),
        pytest.param("'Region'  in  params", "'region'  in  params", id="in-params"),
        pytest.param(
            'headers["A"] == "B" && "C" in headers && model == "GPT"',
            'headers["a"] == "B" && "c" in headers && model == "GPT"',
            id="several-keys-values-untouched",
        ),
        pytest.param('model == "X-Tier"', 'model == "X-Tier"', id="plain-string-untouched"),
        pytest.param('"X" in ["X"]', '"X" in ["X"]', id="in-list-untouched"),
    ],
)
def test_normalize_expression(expression: str, expected: str) -> None:
    assert normalize_expression(expression) == expected


@engine_names
def test_compiled_source_is_the_normalized_text(engine_name: str) -> None:
    program = get_engine(engine_name).compile('  headers["X-Tier"] == "Gold"  ')
    assert isinstance(program, CompiledExpression)
    assert program.source == 'headers["x-tier"] == "Gold"'
    assert get_engine(engine_name).compile("").source == "true"


# -------------------------------------------------------------------- compile: accepted

ACCEPTED = [
    pytest.param('model == "gpt-4o"', id="model-eq"),
    pytest.param('provider in ["openai", "azure"]', id="provider-in-list"),
    pytest.param('headers["x-tier"] == "premium"', id="header-eq"),
    pytest.param('headers["X-Tier"] == "premium"', id="header-eq-mixed-case-key"),
    pytest.param('"x-tier" in headers', id="key-in-headers"),
    pytest.param('model.startsWith("gpt-")', id="startsWith"),
    pytest.param('model.matches("^claude-.*")', id="matches"),
    pytest.param("budget_used > 80", id="double-gt-int-literal"),
    pytest.param("80 < budget_used", id="int-literal-lt-double"),
    pytest.param("budget_used == 81", id="double-eq-int-literal"),
    pytest.param("budget_used > 80.0 && request < 50.5", id="two-doubles-and"),
    pytest.param('tokens_used >= 90.0 || team_name == "research"', id="double-or-string"),
    pytest.param('params["region"] == "eu"', id="param-eq"),
    pytest.param('virtual_key_name.contains("prod")', id="contains"),
    pytest.param('request_type == "chat_completion"', id="request-type"),
    pytest.param('customer_id == "c-1" && team_id != "" && virtual_key_id != ""', id="ids"),
    pytest.param("", id="empty-means-true"),
    pytest.param("true", id="true"),
    pytest.param("false", id="false"),
    pytest.param("size(headers) > 0", id="size-of-map"),
    pytest.param('!("x-debug" in headers)', id="not-in"),
    pytest.param('headers.exists(k, k.startsWith("x-"))', id="exists-macro"),
    pytest.param('headers["missing"] == "a" || true', id="absorbed-missing-key"),
]


@engine_names
@pytest.mark.parametrize("expression", ACCEPTED)
def test_accepted_expressions_compile(engine_name: str, expression: str) -> None:
    program = get_engine(engine_name).compile(expression)
    assert program.source == normalize_expression(expression)
    assert program.engine_name == engine_name
    check_expression(expression, engine_name)  # the validators' entry point agrees


# -------------------------------------------------------------------- compile: rejected

# (expression, engines that reject it, a fragment of the compile error)
REJECTED = [
    pytest.param("model ==", BOTH, "Syntax error", id="dangling-operator"),
    pytest.param("headers[", BOTH, "Syntax error", id="unclosed-index"),
    pytest.param('(model == "a"', BOTH, "Syntax error", id="unbalanced-open-paren"),
    pytest.param('model == "a")', BOTH, "Syntax error", id="unbalanced-close-paren"),
    pytest.param('model = "a"', BOTH, "Syntax error", id="single-equals"),
    pytest.param("gpt", BOTH, "gpt", id="bare-word-undeclared"),
    pytest.param("foo == 1", BOTH, "undeclared reference to 'foo'", id="undeclared-variable"),
    pytest.param("model", BOTH, "must return a boolean, got: string", id="string-result"),
    pytest.param("1 + 2", BOTH, "must return a boolean, got: int", id="int-result"),
    pytest.param('"x"', BOTH, "must return a boolean, got: string", id="string-literal"),
    pytest.param("budget_used", BOTH, "must return a boolean, got: double", id="double-result"),
    pytest.param(
        'headers["x-tier"]', BOTH, "must return a boolean, got: string", id="header-value"
    ),
    pytest.param("model + 1", BOTH, "overload", id="string-plus-int"),
    pytest.param("model == 1", BOTH, "overload", id="string-eq-int"),
    pytest.param('model.matches("[")', BOTH, "missing ]", id="invalid-regex"),
    # Type errors only cel-cpp's checker sees: celpy accepts these.
    pytest.param("foo == 1 || true", (CEL_EXPR_PYTHON,), "undeclared", id="absorbed-undeclared"),
    pytest.param("1 == 1.0", (CEL_EXPR_PYTHON,), "overload", id="int-eq-double-literals"),
    pytest.param(
        'model == 1 && provider == "x"', (CEL_EXPR_PYTHON,), "overload", id="absorbed-type-error"
    ),
    # No double + int overload in cel-cpp: the compile-time dry run turns this rule, which could
    # never match, into an error. celpy adds them.
    pytest.param("budget_used + 1 > 80", (CEL_EXPR_PYTHON,), "_+_", id="double-plus-int"),
]


@engine_names
@pytest.mark.parametrize(("expression", "rejected_by", "message"), REJECTED)
def test_rejected_expressions(
    engine_name: str, expression: str, rejected_by: tuple[str, ...], message: str
) -> None:
    engine = get_engine(engine_name)
    if engine_name not in rejected_by:
        assert isinstance(engine.compile(expression), CompiledExpression)
        return
    with pytest.raises(CelCompileError) as excinfo:
        engine.compile(expression)
    error = excinfo.value
    assert str(error).startswith("CEL compile error: ")
    assert message in str(error)
    assert str(error) == f"CEL compile error: {error.detail}"
    with pytest.raises(CelCompileError):
        check_expression(expression, engine_name)


def test_cel_expr_python_reports_the_checker_message_with_position() -> None:
    with pytest.raises(CelCompileError) as excinfo:
        check_expression("model + 1")
    expected = "ERROR: <input>:1:7: found no matching overload for '_+_' applied to '(string, int)'"
    assert expected in str(excinfo.value)


def test_cel_python_syntax_error_names_the_position_and_the_reason() -> None:
    with pytest.raises(CelCompileError) as excinfo:
        check_expression("model ==", CEL_PYTHON)
    message = str(excinfo.value)
    assert "<input>:1:7: Syntax error: Unexpected token" in message
    assert "model ==\n      ^" in message


def test_cel_python_undeclared_message_does_not_dump_the_activation() -> None:
    with pytest.raises(CelCompileError) as excinfo:
        check_expression("foo == 1", CEL_PYTHON)
    assert str(excinfo.value) == "CEL compile error: undeclared reference to 'foo'"


# ----------------------------------------------------------------------------- evaluate

# celpy alone nests both errors of `error || error` in a new one: 30 clauses exhaust memory.
MANY_MISSING = " || ".join(f'headers["x-h{i}"] == "{i}"' for i in range(40))

# (expression, variable overrides, expected result or the exception class)
EVALUATIONS = [
    pytest.param('model == "gpt-4o"', {}, True, id="model-match"),
    pytest.param('model == "gpt-4o"', {"model": "gpt-4o-mini"}, False, id="model-no-match"),
    pytest.param('provider in ["openai", "azure"]', {"provider": "azure"}, True, id="in-list"),
    pytest.param('provider in ["openai", "azure"]', {"provider": "groq"}, False, id="not-in-list"),
    pytest.param('headers["X-Tier"] == "premium"', {}, True, id="header-normalized-key"),
    pytest.param('headers["x-tier"] == "Premium"', {}, False, id="header-value-case-kept"),
    pytest.param('"X-TIER" in headers', {}, True, id="key-in-headers"),
    pytest.param('"x-tier" in headers', {"headers": {}}, False, id="key-not-in-headers"),
    pytest.param('params["Region"] == "eu"', {}, True, id="param"),
    pytest.param('model.startsWith("gpt-")', {}, True, id="startsWith"),
    pytest.param('model.matches("^claude-.*")', {"model": "claude-3-5-sonnet"}, True, id="matches"),
    pytest.param('model.matches("^claude-.*")', {}, False, id="matches-no"),
    pytest.param('virtual_key_name.contains("prod")', {}, True, id="contains"),
    pytest.param("budget_used > 80", {"budget_used": 80.5}, True, id="gt-int-80.5"),
    pytest.param("budget_used > 80", {"budget_used": 79.0}, False, id="gt-int-79"),
    pytest.param("budget_used > 80", {"budget_used": 80.0}, False, id="gt-int-equal"),
    pytest.param("80 < budget_used", {"budget_used": 80.5}, True, id="int-lt-double"),
    pytest.param("budget_used == 81", {"budget_used": 81.0}, True, id="eq-int-81"),
    pytest.param("budget_used == 81", {"budget_used": 81.5}, False, id="eq-int-81.5"),
    pytest.param("budget_used != 81", {"budget_used": 81.0}, False, id="ne-int"),
    pytest.param("budget_used > 100.0", {"budget_used": 120.0}, True, id="above-100-not-capped"),
    pytest.param("budget_used > 80.0 && request < 50.5", {}, True, id="and"),
    pytest.param("budget_used > 80.0 && request < 50.5", {"request": 60.0}, False, id="and-no"),
    pytest.param('tokens_used >= 90.0 || team_name == "research"', {}, True, id="or"),
    pytest.param(
        'tokens_used >= 90.0 || team_name == "research"', {"team_name": "ops"}, False, id="or-no"
    ),
    pytest.param("size(headers) > 0", {"headers": {}}, False, id="size-empty"),
    pytest.param("", {}, True, id="empty-is-true"),
    # spec A9: a header that was not sent
    pytest.param('headers["x-missing"] == "a"', {}, CelMissingKey, id="missing-header"),
    pytest.param('params["missing"] == "a"', {}, CelMissingKey, id="missing-param"),
    pytest.param("headers.missing == 'a'", {}, CelMissingKey, id="missing-field-select"),
    pytest.param('headers["missing"] == "a" && true', {}, CelMissingKey, id="and-keeps-error"),
    # spec A15: CEL absorbs errors in || and && when the other side decides
    pytest.param('headers["missing"] == "a" || true', {}, True, id="or-absorbs-missing"),
    pytest.param('headers["missing"] == "a" && false', {}, False, id="and-absorbs-missing"),
    pytest.param('true || headers["missing"] == "a"', {}, True, id="or-short-circuit"),
    pytest.param(
        'headers["a"] == "x" || headers["b"] == "y"', {}, CelMissingKey, id="or-2-missing"
    ),
    pytest.param(MANY_MISSING, {}, CelMissingKey, id="or-40-missing"),
    pytest.param(MANY_MISSING + ' || model == "gpt-4o"', {}, True, id="or-40-missing-then-true"),
    # error || error gives the left error, as cel-cpp does
    pytest.param(
        'headers["a"] == "x" || int(headers["n"]) > 1',
        {"headers": {"n": "z"}},
        CelMissingKey,
        id="or-left-error-missing",
    ),
    pytest.param(
        'int(headers["n"]) > 1 || headers["a"] == "x"',
        {"headers": {"n": "z"}},
        CelEvaluationError,
        id="or-left-error-conversion",
    ),
    # non-boolean at run time: the dry run (budget_used 0.0) took the boolean branch
    pytest.param(
        "budget_used > 50.0 ? budget_used : true", {"budget_used": 10.0}, True, id="dyn-branch-bool"
    ),
    pytest.param(
        "budget_used > 50.0 ? budget_used : true",
        {"budget_used": 60.0},
        CelEvaluationError,
        id="dyn-branch-double",
    ),
]


@engine_names
@pytest.mark.parametrize(("expression", "overrides", "expected"), EVALUATIONS)
def test_evaluate(
    engine_name: str, expression: str, overrides: dict[str, object], expected: object
) -> None:
    engine = get_engine(engine_name)
    program = engine.compile(expression)
    values = variables(**overrides)
    if isinstance(expected, bool):
        assert program.evaluate(values) is expected
        assert program.evaluate(engine.prepare(values)) is expected
        return
    assert isinstance(expected, type)
    assert issubclass(expected, CelError)
    for given_values in (values, engine.prepare(values)):
        with pytest.raises(expected) as excinfo:
            program.evaluate(given_values)
        if expected is CelEvaluationError:
            assert not isinstance(excinfo.value, CelMissingKey)


@engine_names
def test_non_boolean_result_message(engine_name: str) -> None:
    program = get_engine(engine_name).compile("budget_used > 50.0 ? budget_used : true")
    with pytest.raises(CelEvaluationError) as excinfo:
        program.evaluate(variables(budget_used=60.0))
    assert str(excinfo.value) == "CEL expression did not return boolean, got: double"


@engine_names
def test_missing_key_message_names_the_key(engine_name: str) -> None:
    program = get_engine(engine_name).compile('headers["x-absent"] == "a"')
    with pytest.raises(CelMissingKey) as excinfo:
        program.evaluate(variables())
    assert "x-absent" in str(excinfo.value)


@engine_names
def test_other_runtime_errors_are_not_missing_keys(engine_name: str) -> None:
    # The dry run cannot see a header's real value: "abc" is not an int at run time.
    program = get_engine(engine_name).compile('int(headers["x-n"]) > 3')
    assert program.evaluate(variables(headers={"x-n": "7"})) is True
    with pytest.raises(CelEvaluationError) as excinfo:
        program.evaluate(variables(headers={"x-n": "abc"}))
    assert not isinstance(excinfo.value, CelMissingKey)
    with pytest.raises(CelMissingKey):
        program.evaluate(variables(headers={}))


@engine_names
def test_a_variable_missing_from_the_activation_is_an_error(engine_name: str) -> None:
    program = get_engine(engine_name).compile('model == "gpt-4o"')
    values = variables()
    del values["model"]
    with pytest.raises(CelEvaluationError) as excinfo:
        program.evaluate(values)
    assert not isinstance(excinfo.value, CelMissingKey)


@engine_names
def test_a_value_of_the_wrong_type_is_an_error(engine_name: str) -> None:
    program = get_engine(engine_name).compile('model == "gpt-4o"')
    with pytest.raises(CelEvaluationError):
        program.evaluate(variables(model=4))


@engine_names
def test_undeclared_extra_variables_are_ignored(engine_name: str) -> None:
    program = get_engine(engine_name).compile('model == "gpt-4o"')
    assert program.evaluate({**variables(), "not_declared": object()}) is True


@engine_names
def test_prepared_variables_are_reusable_and_bound_to_their_engine(engine_name: str) -> None:
    engine = get_engine(engine_name)
    prepared = engine.prepare(variables())
    rules = ['model == "gpt-4o"', 'provider == "azure"', 'headers["x-tier"] == "premium"']
    assert [engine.compile(rule).evaluate(prepared) for rule in rules] == [True, False, True]
    other = get_engine(next(name for name in ENGINE_NAMES if name != engine_name))
    with pytest.raises(CelEvaluationError, match="prepared by"):
        other.compile("true").evaluate(prepared)


@engine_names
def test_prepare_rejects_what_it_cannot_convert(engine_name: str) -> None:
    engine = get_engine(engine_name)
    with pytest.raises(CelEvaluationError):
        engine.compile("true").evaluate(engine.prepare([("model", "x")]))  # type: ignore[arg-type]


# ------------------------------------------------------------------------- the engines


def test_get_engine_returns_one_cached_instance_per_name() -> None:
    assert DEFAULT_ENGINE == CEL_EXPR_PYTHON
    assert ENGINE_NAMES == (CEL_EXPR_PYTHON, CEL_PYTHON)
    assert isinstance(get_engine(CEL_EXPR_PYTHON), CelExprPythonEngine)
    assert isinstance(get_engine(CEL_PYTHON), CelPythonEngine)
    assert get_engine(CEL_PYTHON) is get_engine(CEL_PYTHON)
    assert get_engine() is get_engine(DEFAULT_ENGINE)
    assert [get_engine(name).name for name in ENGINE_NAMES] == list(ENGINE_NAMES)


def test_get_engine_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError) as excinfo:
        get_engine("cel-go")
    message = str(excinfo.value)
    assert "'cel-go'" in message
    assert "'cel-expr-python'" in message
    assert "'cel-python'" in message
    with pytest.raises(ValueError, match="cel-go"):
        check_expression("true", "cel-go")


def test_cel_engine_is_abstract_with_one_compile_hook() -> None:
    assert CelEngine.__abstractmethods__ == frozenset({"compile"})
    with pytest.raises(TypeError):
        CelEngine()  # type: ignore[abstract]

    class Incomplete(CelEngine):
        name = "incomplete"

        def compile(self, expression: str) -> CompiledExpression:
            return super().compile(expression)  # type: ignore[safe-super]

    with pytest.raises(NotImplementedError, match=r"CelEngine\.compile\(\) must be implemented"):
        Incomplete().compile("true")


def test_error_hierarchy() -> None:
    assert issubclass(CelCompileError, CelError)
    assert issubclass(CelEvaluationError, CelError)
    assert issubclass(CelMissingKey, CelEvaluationError)
    assert not issubclass(CelCompileError, CelEvaluationError)


@pytest.mark.parametrize("limit", [1000, 5000])
def test_cel_python_engine_leaves_the_recursion_limit_alone(limit: int) -> None:
    # celpy.Environment() calls sys.setrecursionlimit(2500) unconditionally.
    original = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(limit)
        CelPythonEngine()
        assert sys.getrecursionlimit() == limit
    finally:
        sys.setrecursionlimit(original)


@engine_names
def test_nesting_within_the_cel_minimums_compiles(engine_name: str) -> None:
    # The CEL spec asks implementations for at least 12 nested parentheses and 32 terms.
    engine = get_engine(engine_name)
    nested = "(" * 12 + 'model == "gpt-4o"' + ")" * 12
    assert engine.compile(nested).evaluate(variables()) is True
    chained = " && ".join(['model != "x"'] * 32)
    assert engine.compile(chained).evaluate(variables()) is True


def test_module_imports_neither_django_nor_an_engine() -> None:
    code = (
        "import sys, routing.cel\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'rest_framework', 'cel_expr_python', 'celpy'})\n"
        "assert not bad, bad\n"
    )
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------- property


def cel_string(value: str) -> str:
    """A double-quoted CEL string literal for ``value``."""
    out = ['"']
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif not char.isprintable() and ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")  # lower-case hex survives key normalization
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


# cel-cpp truncates a Python string passed as a variable at its first NUL: HTTP cannot carry
# one anyway. Header names are tokens of letters, digits and a few symbols; values may be any
# text.
header_names = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd"), codec="utf-8")
    | st.sampled_from("!#$%&*+-.^_`|~"),
    min_size=1,
    max_size=20,
)
header_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30
)


@settings(max_examples=75, deadline=None)
@given(name=header_names, value=header_values, other=header_values)
def test_header_equality_property_both_engines_agree(name: str, value: str, other: str) -> None:
    equal = f"headers[{cel_string(name)}] == {cel_string(value)}"
    present = f"{cel_string(name)} in headers"
    with_header = variables(headers={name.lower(): value})
    with_other = variables(headers={name.lower(): other})
    for engine_name in ENGINE_NAMES:
        engine = get_engine(engine_name)
        assert engine.compile(equal).evaluate(with_header) is True, engine_name
        assert engine.compile(present).evaluate(with_header) is True, engine_name
        assert engine.compile(equal).evaluate(with_other) is (other == value), engine_name
        with pytest.raises(CelMissingKey):
            engine.compile(equal).evaluate(variables(headers={}))
