"""The code's layering, checked rather than claimed:

- the layers docs/architecture.md lists, in its order: each module imports only its own layer
  and those above it (read from the document, so the document cannot drift from the code);
- the engine (`steering.engine`), the scheduler (`steering.inference`) and the vLLM scheduler
  (`steering.vllm_inference`) import no Django, and nothing of the platform that does
  (`steering.models`, `steering.serving`): they run in a bare interpreter, as the benches and
  the few-lines API use them;
- the project's modules import one another without a cycle, counting imports made inside
  functions too. An in-function import that only dodged a cycle would show up here as one;
  those that remain are there for another reason (an app's `ready()`, a heavy or optional
  dependency, Django's app registry) and could be hoisted without a cycle.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("accounts", "ops", "steering", "steerlab_site")

# The vLLM scheduler's modules that import vLLM itself.
VLLM_MODULES = ("steering.vllm_inference.engine", "steering.vllm_inference.model_runner",
                "steering.vllm_inference.workers.cpu", "steering.vllm_inference.workers.gpu")

IMPORT_ALL = f"VLLM_MODULES = {VLLM_MODULES!r}\n" + """
import importlib, json, pkgutil, sys
import steering.engine, steering.inference, steering.vllm_inference
names = []
for package in (steering.engine, steering.inference, steering.vllm_inference):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name in VLLM_MODULES:
            continue  # they import vLLM, absent from this virtualenv; checked by the source below
        importlib.import_module(info.name)
        names.append(info.name)
bound = sorted(m for m in sys.modules
               if m.split(".")[0] == "django" or m.startswith(("steering.models", "steering.serving")))
print(json.dumps({"imported": names, "bound": bound}))
"""


def test_the_engine_and_the_schedulers_import_no_django():
    # A fresh interpreter: this one has Django loaded already. No settings module either, so
    # an import that touched Django's settings would fail rather than pass quietly.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"steering.engine.generation", "steering.inference.scheduler", "steering.vllm_inference.weights"} <= set(
        report["imported"]
    )
    assert report["bound"] == []
    # The vLLM modules that need vLLM to import: their source names no Django either.
    modules = _modules()
    for name in VLLM_MODULES:
        bound = {m for m in _imports(name, modules[name], modules) if m.startswith(("steering.models", "steering.serving"))}
        assert not bound and "django" not in modules[name].read_text(), name


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `name` imports, anywhere in the file (functions included),
    except under `if TYPE_CHECKING:`, which never runs."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    targets = set()

    def add(module: str) -> None:
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: those count, unless the
        # importer is inside them (its own package is already being imported).
        parts = module.split(".")
        for n in range(1, len(parts) + 1):
            prefix = ".".join(parts[:n])
            if prefix in modules and not (name == prefix or name.startswith(prefix + ".")):
                targets.add(prefix)

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            ):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node):
            for alias in node.names:
                add(alias.name)

        def visit_ImportFrom(self, node):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            add(module)
            for alias in node.names:
                if f"{module}.{alias.name}" in modules:
                    add(f"{module}.{alias.name}")

    Visitor().visit(ast.parse(path.read_text(), filename=str(path)))
    targets.discard(name)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_project_modules_import_each_other_without_a_cycle_even_inside_functions():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["steering.serving.backends"] >= {"steering.serving.runtime", "steering.inference"}  # the parser sees imports
    assert _cycles(graph) == []


def test_ops_imports_nothing_of_steering():
    # ops is the cross-cutting infrastructure (logs, metrics, throttling): steering uses it,
    # never the other way round; steering registers what ops should measure of it.
    modules = _modules()
    for name, path in modules.items():
        if name == "ops" or name.startswith("ops."):
            assert not {m for m in _imports(name, path, modules) if m.split(".")[0] == "steering"}, name


def documented_layers() -> list[list[str]]:
    """The numbered list under "### Layers" in docs/architecture.md: each item's paths
    (`steering/engine/`, `steering/models.py`, …) as module prefixes, in order."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("### Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for item in re.findall(r"^\d+\. (.*)$", section, flags=re.M):
        lead = item.split(":", 1)[0]  # the paths come before the item's first colon
        paths = re.findall(r"`(steering/[\w/]*(?:\.py)?)`", lead)
        layers.append([p.removesuffix(".py").removesuffix("/").replace("/", ".") for p in paths])
    return layers


def _layer_of(name: str, layers: list[list[str]]) -> int:
    """The index of the layer whose path is the longest prefix of module `name`."""
    best, length = None, -1
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best is not None, f"{name} is in no documented layer"
    return best


def test_the_documented_layers_are_the_ones_checked():
    layers = documented_layers()
    assert layers[0] == ["steering.engine", "steering.data", "steering.modes"]
    assert layers[-1] == ["steering"]
    assert ["steering.serving"] in layers and ["steering.models", "steering.files"] in layers
    assert _layer_of("steering.serving.runtime", layers) < _layer_of("steering.selectors", layers)


def test_each_layer_imports_only_itself_and_the_layers_above_it():
    layers = documented_layers()
    modules = _modules()
    upward = []
    for name, path in modules.items():
        if not (name == "steering" or name.startswith("steering.")):
            continue
        mine = _layer_of(name, layers)
        for target in _imports(name, path, modules):
            if target.startswith("steering.") and _layer_of(target, layers) > mine:
                upward.append(f"{name} (layer {mine + 1}) imports {target} (layer {_layer_of(target, layers) + 1})")
    assert upward == []
