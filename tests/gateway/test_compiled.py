"""The compiled build of the request-time modules (gateway/compiled.py): loaded only while it
matches the source on disk, for this interpreter, and never required."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway import compiled

TOY_SOURCE = 'def answer(value):\n    return {"answer": value * 2, "file": __file__}\n'
LOAD_TOY = """
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root))
from gateway.compiled import install
install(root, root / ".compiled")
import toypkg.toy as toy
print(json.dumps([type(toy.__loader__).__name__, toy.answer(21)["answer"]]))
"""


def manage_compiled(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "compiled", *args], cwd=compiled.ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


def load_toy(root: Path, **environment: str) -> list[object]:
    """(loader class name, toy.answer(21)) as a fresh interpreter sees them."""
    result = subprocess.run([sys.executable, "-c", LOAD_TOY, str(root)], cwd=compiled.ROOT,
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, **environment})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def toy_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with one module, ``toypkg.toy``, built once for the whole module."""
    root = tmp_path_factory.mktemp("toy-project")
    (root / "toypkg").mkdir()
    (root / "toypkg" / "__init__.py").write_text("")
    (root / "toypkg" / "toy.py").write_text(TOY_SOURCE)
    result = manage_compiled("build", "--root", str(root), "--modules", "toypkg.toy")
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def toy(toy_build: Path, tmp_path: Path) -> Path:
    """A copy of the built toy project that a test may change."""
    root = tmp_path / "project"
    shutil.copytree(toy_build, root)
    return root


def finder_for(root: Path) -> compiled.CompiledFinder:
    built = compiled.read_manifest(root / ".compiled")
    assert built is not None
    return compiled.CompiledFinder(root, root / ".compiled", built)


def test_a_module_built_from_its_current_source_loads_compiled(toy: Path) -> None:
    spec = finder_for(toy).find_spec("toypkg.toy")
    assert spec is not None
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert load_toy(toy) == ["ExtensionFileLoader", 42]


def test_a_module_edited_after_the_build_loads_from_its_source(toy: Path) -> None:
    (toy / "toypkg" / "toy.py").write_text(TOY_SOURCE.replace("value * 2", "value * 3"))
    finder = finder_for(toy)
    assert finder.find_spec("toypkg.toy") is None
    assert finder.from_source == {"toypkg.toy": "its source changed after the build"}
    assert load_toy(toy) == ["SourceFileLoader", 63]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda root: compiled.binary_path(root / ".compiled", "toypkg.toy").unlink(),
     "its compiled file is missing"),
    (lambda root: (root / "toypkg" / "toy.py").unlink(), "its source is missing"),
])
def test_a_module_that_cannot_load_compiled_says_why(toy: Path, damage: object,
                                                      reason: str) -> None:
    finder = finder_for(toy)
    damage(toy)  # type: ignore[operator]
    assert finder.find_spec("toypkg.toy") is None
    assert finder.from_source["toypkg.toy"] == reason


def test_modules_outside_the_build_are_left_to_the_usual_import(toy: Path) -> None:
    assert finder_for(toy).find_spec("json") is None
    assert finder_for(toy).find_spec("toypkg") is None


@pytest.mark.parametrize("manifest", [
    "not json",
    "[]",
    json.dumps({"extension_suffix": ".cpython-27-other.so", "modules": {}}),
    json.dumps({"extension_suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
                "modules": ["toypkg.toy"]}),
])
def test_a_manifest_for_another_interpreter_or_unreadable_means_no_build(
        toy: Path, manifest: str) -> None:
    (toy / ".compiled" / compiled.MANIFEST).write_text(manifest)
    assert compiled.read_manifest(toy / ".compiled") is None
    assert compiled.install(toy, toy / ".compiled") is None
    assert load_toy(toy) == ["SourceFileLoader", 42]


def test_the_environment_switch_turns_the_build_off(toy: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compiled.ENVIRONMENT_SWITCH, "0")
    before = list(sys.meta_path)
    assert compiled.install(toy, toy / ".compiled") is None
    assert sys.meta_path == before
    assert load_toy(toy, **{compiled.ENVIRONMENT_SWITCH: "0"}) == ["SourceFileLoader", 42]
    assert compiled.status(toy, toy / ".compiled", ["toypkg.toy"]) == [
        ("toypkg.toy", "source (GATEWAY_COMPILED=0)")]


def test_install_adds_one_finder_per_build(toy: Path) -> None:
    before = list(sys.meta_path)
    try:
        finder = compiled.install(toy, toy / ".compiled")
        assert finder is not None
        assert sys.meta_path[0] is finder
        assert compiled.install(toy, toy / ".compiled") is finder
        assert len(sys.meta_path) == len(before) + 1
    finally:
        sys.meta_path[:] = before


def test_a_build_that_matches_the_sources_is_not_redone(toy: Path) -> None:
    manifest = (toy / ".compiled" / compiled.MANIFEST).read_text()
    result = manage_compiled("build", "--root", str(toy), "--modules", "toypkg.toy")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert (toy / ".compiled" / compiled.MANIFEST).read_text() == manifest


def test_a_failed_build_keeps_the_previous_one(toy: Path) -> None:
    manifest = (toy / ".compiled" / compiled.MANIFEST).read_text()
    (toy / "toypkg" / "toy.py").write_text("def answer(value:\n")
    result = manage_compiled("build", "--root", str(toy), "--modules", "toypkg.toy")
    assert result.returncode != 0
    assert "runs those modules from source" in result.stderr
    assert (toy / ".compiled" / compiled.MANIFEST).read_text() == manifest
    assert not list(toy.glob(".compiled-build-*"))
    (toy / "toypkg" / "toy.py").write_text(TOY_SOURCE)  # the built source again
    assert load_toy(toy) == ["ExtensionFileLoader", 42]


def test_status_lists_each_module_and_why(toy: Path) -> None:
    result = manage_compiled("status", "--root", str(toy), "--modules", "toypkg.toy,toypkg.nope")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["toypkg.toy", "compiled"]
    assert lines[1].startswith("toypkg.nope") and lines[1].endswith("source (not in the build)")
    assert lines[-1] == "1 of 2 request-time modules compiled"
    shutil.rmtree(toy / ".compiled")
    assert compiled.status(toy, toy / ".compiled", ["toypkg.toy"]) == [
        ("toypkg.toy", "source (no build for this interpreter)")]


def test_the_compiled_modules_are_those_the_import_contract_keeps_free_of_django() -> None:
    config = tomllib.loads((compiled.ROOT / "pyproject.toml").read_text())
    contract = next(contract for contract in config["tool"]["importlinter"]["contracts"]
                    if "django" in contract.get("forbidden_modules", ()))
    expected = set()
    for name in contract["source_modules"]:
        path = compiled.ROOT.joinpath(*name.split("."))
        if path.is_dir():  # a package: its modules (its __init__ only re-exports)
            expected |= {f"{name}.{child.stem}" for child in path.glob("*.py")
                         if child.name != "__init__.py"}
        else:
            expected.add(name)
    assert set(compiled.REQUEST_TIME_MODULES) == expected


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="the build is checked in CI")
def test_in_ci_every_request_time_module_runs_compiled() -> None:
    for name in compiled.REQUEST_TIME_MODULES:
        importlib.import_module(name)
    assert compiled.loaded_compiled() == list(compiled.REQUEST_TIME_MODULES), (
        compiled.status())
