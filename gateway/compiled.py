"""The request-time modules compiled with Cython, used only while they match their source.

    python manage.py compiled build      # make run / make test do it; needs Cython and gcc
    python manage.py compiled status     # which modules load compiled, and why not

What is compiled: :data:`REQUEST_TIME_MODULES`, the modules that serve an inference request
(the import-linter contract keeps them free of Django; a test keeps the two lists equal).
They are compiled as the Python they are: annotations are not turned into C types, so a
compiled module behaves as its source does, and the whole test suite runs against the
compiled build in CI. What it saves is the interpreter's dispatch: about 6% of the event
loop's instructions per request (``python -m bench.instructions``, docs/inference.md).

Why it can never run stale code: the build goes to ``.compiled/`` at the project's root,
never beside the sources, with a manifest of the SHA-256 of every source it compiled and of
the interpreter it was built for. :func:`install` (run when any of the four apps is first
imported) puts :class:`CompiledFinder` in front of the import system; it loads a module from
the build only if the source on disk now has the hash the build was made from. A module
edited since the build is imported from its source; no build, a build for another
interpreter, an unreadable manifest, or ``GATEWAY_COMPILED=0`` in the environment: every
module is imported from source, as if nothing had been built.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The project's root (where manage.py is) and where builds go.
ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".compiled"
MANIFEST = "manifest.json"
ENVIRONMENT_SWITCH = "GATEWAY_COMPILED"

REQUEST_TIME_MODULES = (
    "gateway.errors",
    "gateway.proxy.adapters",
    "gateway.proxy.app",
    "gateway.proxy.breaker",
    "gateway.proxy.http",
    "gateway.proxy.resolve",
    "gateway.proxy.sse",
    "gateway.proxy.translation",
    "governance.durations",
    "governance.engine",
    "governance.ledger.base",
    "governance.ledger.memory",
    "governance.ledger.redis",
    "governance.ledger.windows",
    "governance.sink",
    "pricing.catalog",
    "pricing.cost",
    "pricing.resolution",
    "pricing.vocabulary",
    "routing.cel",
    "routing.engine",
    "routing.memo",
)

# Compiled as plain Python: a ``x: int`` annotation stays a hint (Cython would otherwise
# check and convert such arguments), functions stay introspectable and bind as methods.
COMPILER_DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}


def extension_suffix() -> str:
    """The file suffix of this interpreter's extension modules (ABI and platform)."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def source_path(root: Path, name: str) -> Path:
    return root.joinpath(*name.split(".")).with_suffix(".py")


def binary_path(build_dir: Path, name: str) -> Path:
    parts = name.split(".")
    return build_dir.joinpath(*parts[:-1], parts[-1] + extension_suffix())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(build_dir: Path) -> dict[str, str] | None:
    """Module name -> SHA-256 of the source it was built from; None when there is no build
    for this interpreter (none at all, another interpreter's, or an unreadable manifest)."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("extension_suffix") != extension_suffix():
        return None
    modules = manifest.get("modules")
    if not isinstance(modules, dict):
        return None
    return {str(name): str(value) for name, value in modules.items()}


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of a build whose sources have not changed since it was made;
    returns None (the usual import of the source follows) for every other module."""

    def __init__(self, root: Path, build_dir: Path, built: dict[str, str]) -> None:
        self.root = root
        self.build_dir = build_dir
        self.built = built
        # why a built module was imported from its source (name -> reason)
        self.from_source: dict[str, str] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        expected = self.built.get(fullname)
        if expected is None:
            return None
        reason = self.why_not(fullname, expected)
        if reason:
            self.from_source[fullname] = reason
            return None
        binary = binary_path(self.build_dir, fullname)
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(binary))
        return importlib.util.spec_from_file_location(fullname, binary, loader=loader)

    def why_not(self, name: str, expected: str) -> str:
        """Empty when ``name`` can load from the build, else why it cannot."""
        try:
            current = digest(source_path(self.root, name))
        except OSError:
            return "its source is missing"
        if current != expected:
            return "its source changed after the build"
        if not binary_path(self.build_dir, name).is_file():
            return "its compiled file is missing"
        return ""


def install(root: Path = ROOT, build_dir: Path = BUILD_DIR) -> CompiledFinder | None:
    """Put a :class:`CompiledFinder` for the build in ``build_dir`` first on
    ``sys.meta_path`` (once); None when nothing is to be loaded compiled."""
    for finder in sys.meta_path:
        if isinstance(finder, CompiledFinder) and finder.build_dir == build_dir:
            return finder
    if os.environ.get(ENVIRONMENT_SWITCH, "1") == "0":
        return None
    built = read_manifest(build_dir)
    if not built:
        return None
    finder = CompiledFinder(root, build_dir, built)
    sys.meta_path.insert(0, finder)
    return finder


def loaded_compiled(modules: Sequence[str] = REQUEST_TIME_MODULES) -> list[str]:
    """Those of ``modules`` already imported that run compiled."""
    return [name for name in modules if isinstance(
        getattr(sys.modules.get(name), "__loader__", None),
        importlib.machinery.ExtensionFileLoader)]


# -- the build ------------------------------------------------------------------------------

_SETUP_SCRIPT = """
import json, sys
from Cython.Build import cythonize
from setuptools import Extension, setup

names, directives, jobs = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
extensions = [Extension(name, [name.replace(".", "/") + ".py"]) for name in names]
setup(name="gateway-compiled", packages=[], py_modules=[],
      ext_modules=cythonize(extensions, compiler_directives=directives, nthreads=jobs,
                            quiet=True),
      script_args=["-q", "build_ext", "--build-lib", "out", "--build-temp", "tmp",
                   "-j", str(jobs)])
"""


def up_to_date(root: Path, build_dir: Path, modules: Sequence[str]) -> bool:
    built = read_manifest(build_dir)
    if built is None or set(built) != set(modules):
        return False
    finder = CompiledFinder(root, build_dir, built)
    return not any(finder.why_not(name, built[name]) for name in modules)


def build(root: Path = ROOT, build_dir: Path = BUILD_DIR,
          modules: Sequence[str] = REQUEST_TIME_MODULES, jobs: int | None = None) -> bool:
    """Compile ``modules`` into ``build_dir`` unless it already holds them as they are now.

    The sources are copied, and hashed from those copies, into a scratch directory which is
    compiled there and then replaces ``build_dir`` whole: a module edited during the build
    is recorded with the hash of what was compiled, and a failed build leaves the previous
    one as it was. Returns False (with the compiler's output on stderr) when it fails."""
    if up_to_date(root, build_dir, modules):
        print(f"compiled modules are up to date ({len(modules)} in {build_dir})")
        return True
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".compiled-build-", dir=build_dir.parent))
    try:
        hashes = {}
        for name in modules:
            copy = source_path(scratch, name)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source_path(root, name).read_bytes())
            hashes[name] = digest(copy)
        jobs = jobs or os.cpu_count() or 1
        result = subprocess.run(
            [sys.executable, "-c", _SETUP_SCRIPT, json.dumps(list(modules)),
             json.dumps(COMPILER_DIRECTIVES), str(jobs)],
            cwd=scratch, capture_output=True, text=True, check=False)
        out = scratch / "out"
        missing = [name for name in modules if not binary_path(out, name).is_file()]
        if result.returncode != 0 or missing:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-8000:])
            print(f"compiling failed ({len(missing)} of {len(modules)} modules not built); "
                  "the gateway runs them from source", file=sys.stderr)
            return False
        (out / MANIFEST).write_text(json.dumps(
            {"extension_suffix": extension_suffix(), "modules": hashes}, indent=1) + "\n")
        old = None
        if build_dir.exists():
            old = build_dir.with_name(f"{scratch.name}-old")
            build_dir.rename(old)
        out.rename(build_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"compiled {len(modules)} modules into {build_dir}")
    return True


def status(root: Path = ROOT, build_dir: Path = BUILD_DIR,
           modules: Sequence[str] = REQUEST_TIME_MODULES) -> list[tuple[str, str]]:
    """(module, "compiled" or why it runs from source) for each of ``modules``."""
    if os.environ.get(ENVIRONMENT_SWITCH, "1") == "0":
        return [(name, f"source ({ENVIRONMENT_SWITCH}=0)") for name in modules]
    built = read_manifest(build_dir)
    if built is None:
        return [(name, "source (no build for this interpreter)") for name in modules]
    finder = CompiledFinder(root, build_dir, built)
    rows = []
    for name in modules:
        if name not in built:
            rows.append((name, "source (not in the build)"))
            continue
        reason = finder.why_not(name, built[name])
        rows.append((name, f"source ({reason})" if reason else "compiled"))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``manage.py compiled``'s arguments (the hidden ones are for the tests)."""
    parser.add_argument("command", choices=("build", "status"))
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--build-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--modules", default=None, help=argparse.SUPPRESS)


def run(command: str, root: Path = ROOT, build_dir: Path | None = None,
        modules: str | None = None) -> int:
    """``manage.py compiled build|status``; the exit status."""
    root = root.resolve()
    build_dir = build_dir or root / BUILD_DIR.name
    names = tuple(modules.split(",")) if modules else REQUEST_TIME_MODULES
    if command == "build":
        return 0 if build(root, build_dir, names) else 1
    rows = status(root, build_dir, names)
    width = max(len(name) for name, _ in rows)
    for name, state in rows:
        print(f"{name:<{width}}  {state}")
    compiled = sum(state == "compiled" for _, state in rows)
    print(f"{compiled} of {len(rows)} request-time modules compiled")
    return 0
