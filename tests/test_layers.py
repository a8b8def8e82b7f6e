"""The package's layers (docs/architecture.md), read from the source with `ast`: nothing here
imports groklm, so a broken module cannot hide a broken rule.

    imports run downwards   a module imports its own package and lower layers, never a higher one
    every module is placed  a new top-level module or package must be given a layer below
    no dynamic imports      importlib and __import__ only in groklm/cli/
    imports at the top      except in groklm/cli/, the root's `load`, and optional dependencies
    no lazy loaders         no module-level __getattr__ in a package's __init__.py
    no cycles               no two modules import each other, directly or around a loop
    the docs agree          docs/architecture.md's table lists these layers in this order
    tests stand alone       no test module imports another (shared code: tests/helpers/)

Each test lists every violation it finds, with file, line and both layers, not just the first.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "groklm"

# Bottom to top. A module may import its own layer and any lower one, never a higher one.
LAYERS = [
    ("base", {"errors", "rundir", "calculator", "jsonl"}),
    ("tokenizer", {"tokenizer"}),
    ("model", {"model"}),
    ("runs", {"runs"}),
    ("interop", {"interop"}),
    ("infer", {"infer"}),
    ("tasks", {"tasks"}),
    ("data", {"data"}),
    ("train", {"train"}),
    ("eval", {"eval"}),
    ("serve", {"serve"}),
    ("apps", {"apps"}),
    ("experiments", {"experiments"}),
    ("cli", {"cli", "__main__"}),
]
LAYER_OF = {name: level for level, (_, names) in enumerate(LAYERS) for name in names}
TOP = len(LAYERS) - 1  # groklm/cli/: the only place for imports inside functions and importlib

# Imported inside the one function that needs them, never at a module's top, so that a plain
# `pip install groklm` imports every module; each function says which extra to install.
OPTIONAL = {
    "transformers": "the hf: backend (apps/backends/hf.py) loads any Hugging Face checkpoint; dev extra",
    "faiss": "approximate vector search for big RAG indexes; exact numpy search needs nothing; dev extra",
    "opentelemetry": "traces are mirrored to OTLP only where the SDK is installed; dev extra",
    "jsonschema": "apps/evals.py's schema check, for a JSON-schema dict (a Pydantic model needs nothing); dev extra",
}


@dataclass(frozen=True)
class Module:
    path: Path
    name: str  # "groklm.infer.engine"; a package's __init__.py is the package, "groklm.infer"

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def is_root(self) -> bool:
        return self.name == "groklm"

    @property
    def layer(self) -> int | None:
        return layer_of(self.name)

    @property
    def where(self) -> str:
        return str(self.path.relative_to(PACKAGE.parent))


@dataclass(frozen=True)
class Import:
    module: Module
    line: int
    target: str  # absolute: "groklm.model.gpt", "torch.nn", "json"
    in_function: str | None  # the name of the innermost enclosing function, if any
    type_checking: bool  # under `if TYPE_CHECKING:`


def layer_of(name: str) -> int | None:
    """The layer of a groklm module name; None for the root package and for unplaced modules."""
    parts = name.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


def layer_name(level: int | None) -> str:
    return "root" if level is None else f"{level} {LAYERS[level][0]}"


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append(Module(path, ".".join(parts)))
    return tuple(found)


def is_groklm_module(name: str) -> bool:
    relative = PACKAGE.parent.joinpath(*name.split("."))
    return relative.with_suffix(".py").is_file() or (relative / "__init__.py").is_file()


def resolve(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom reads from (relative imports included)."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def targets(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """What an import statement loads: `from groklm.infer import engine` loads groklm.infer.engine,
    `from groklm.infer import Engine` loads groklm.infer."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = resolve(module, node)
    out = []
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        out.append(sub if source.split(".")[0] == "groklm" and is_groklm_module(sub) else source)
    return list(dict.fromkeys(out))


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def tree(module: Module) -> ast.Module:
    return ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))


def imports_in(module: Module, source: ast.Module) -> list[Import]:
    """Every import in `source`, with the function it sits in and whether it is for type checkers only."""
    found = []

    def visit(node: ast.AST, function: str | None, type_checking: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(Import(module, node.lineno, t, function, type_checking) for t in targets(module, node))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, getattr(child, "name", "<lambda>"), type_checking)
            elif isinstance(node, ast.If) and is_type_checking(node.test) and child in node.body:
                visit(child, function, True)
            else:
                visit(child, function, type_checking)

    visit(source, None, False)
    return found


@cache
def imports(module: Module) -> tuple[Import, ...]:
    return tuple(imports_in(module, tree(module)))


def report(title: str, violations: list[str]) -> str:
    return f"{len(violations)} {title} (see docs/architecture.md):\n  " + "\n  ".join(violations)


# ---- the tests ----------------------------------------------------------------------------------


def test_every_module_belongs_to_a_layer():
    unplaced = [f"{m.where}: top-level '{m.name.split('.')[1]}' is in no layer: add it to LAYERS here and "
                "to docs/architecture.md" for m in modules() if not m.is_root and m.layer is None]
    assert not unplaced, report("modules without a layer", unplaced)


def test_imports_run_downwards():
    violations = []
    for module in modules():
        for imp in imports(module):
            if imp.target.split(".")[0] != "groklm":
                continue
            here = f"{module.where}:{imp.line}: {module.name} (layer {layer_name(module.layer)}) imports {imp.target}"
            if module.is_root:
                if not (imp.target == "groklm.runs" and imp.in_function == "load"):
                    violations.append(f"{here}: the root package imports nothing but groklm.runs, inside `load` "
                                      "(`import groklm` stays light)")
            elif imp.target == "groklm":
                if module.layer != TOP:
                    violations.append(f"{here} (the root package, for groklm.load): import groklm.runs instead")
            elif layer_of(imp.target) is None:
                violations.append(f"{here}, a module in no layer")
            elif module.layer is not None and layer_of(imp.target) > module.layer:
                violations.append(f"{here} (layer {layer_name(layer_of(imp.target))}): an upward import")
    assert not violations, report("imports against the layer order", violations)


def uses_dynamic_import(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "importlib" for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "importlib"
    return isinstance(node, ast.Name) and node.id in ("importlib", "__import__")


def test_no_dynamic_imports_outside_the_cli():
    violations = sorted({f"{m.where}:{node.lineno}: {m.name} (layer {layer_name(m.layer)}) uses importlib or __import__"
                         for m in modules() if m.layer != TOP
                         for node in ast.walk(tree(m)) if uses_dynamic_import(node)})
    assert not violations, report("dynamic imports outside groklm/cli/", violations)


def test_imports_sit_at_module_tops_and_optional_dependencies_inside_functions():
    violations = []
    for module in modules():
        if module.layer == TOP:
            continue
        for imp in imports(module):
            top = imp.target.split(".")[0]
            here = f"{module.where}:{imp.line}: {module.name} (layer {layer_name(module.layer)})"
            if imp.in_function and top not in OPTIONAL:
                if module.is_root and imp.in_function == "load" and imp.target == "groklm.runs":
                    continue
                violations.append(f"{here} imports {imp.target} inside {imp.in_function}(): move it to the module's top")
            elif not imp.in_function and top in OPTIONAL and not imp.type_checking:
                violations.append(f"{here} imports the optional {imp.target} at its top: import it inside the "
                                  "function that needs it, with an error naming the extra")
    assert not violations, report("imports in the wrong place", violations)


def test_no_lazy_getattr_loaders_in_packages():
    violations = [f"{m.where}:{node.lineno}: {m.name} (layer {layer_name(m.layer)}) defines a module-level __getattr__: "
                  "import the public names at the top instead"
                  for m in modules() if m.is_package
                  for node in tree(m).body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__getattr__"]
    assert not violations, report("lazy loaders", violations)


def test_no_import_cycles():
    """Modules that import each other (at their tops) cannot be read, or loaded, one before the other."""
    graph = {m.name: sorted({i.target for i in imports(m) if not i.in_function and not i.type_checking
                             and i.target.split(".")[0] == "groklm" and i.target != m.name})
             for m in modules()}
    cycles, state = set(), {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for nxt in graph.get(name, []):
            if state.get(nxt) == "open":
                loop = path[path.index(nxt):]
                first = loop.index(min(loop))
                cycles.add(" -> ".join(loop[first:] + loop[:first] + [min(loop)]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    violations = [f"{cycle} (layers {' -> '.join(layer_name(layer_of(n)) for n in cycle.split(' -> '))})"
                  for cycle in sorted(cycles)]
    assert not violations, report("import cycles", violations)


def test_docs_list_the_layers_in_this_order():
    """docs/architecture.md's table is the documented order: it must be the order tested here."""
    rows = [line for line in (PACKAGE.parent / "docs" / "architecture.md").read_text().splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    documented = {int(row.split("|")[1]): row.split("|")[2] for row in rows}
    assert sorted(documented) == list(range(len(LAYERS))), "the table's layer numbers"
    for level, (_, names) in enumerate(LAYERS):
        for name in names - {"__main__"}:
            assert f"`{name}/`" in documented[level] or f"`{name}.py`" in documented[level], (level, name)


def test_no_test_module_imports_another():
    """What tests share lives in tests/helpers/ (modules) and tests/conftest.py (fixtures)."""
    tests = Path(__file__).resolve().parent
    test_modules = {path.stem for path in tests.glob("test_*.py")} | {"conftest"}
    violations = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            violations += [f"{path.relative_to(tests.parent)}:{node.lineno} imports {name}"
                           for name in names if name.split(".")[0] in test_modules]
    assert not violations, report("imports of test modules (move what they share to tests/helpers/)", violations)


# ---- the checker, on a small source ----------------------------------------------------------------


def test_the_checker_reads_relative_imports_functions_and_type_checking_blocks():
    source = ast.parse("from typing import TYPE_CHECKING\n"
                       "from . import sampling\n"
                       "from ..model import gpt\n"
                       "from .sampling import filter_logits\n"
                       "if TYPE_CHECKING:\n    from groklm.serve.api import app\n"
                       "def f():\n    import torch\n    from groklm.train import loop\n")
    engine = Module(PACKAGE / "infer" / "engine.py", "groklm.infer.engine")
    found = {(i.target, i.in_function, i.type_checking) for i in imports_in(engine, source)}
    assert {("groklm.infer.sampling", None, False), ("groklm.model.gpt", None, False),
            ("groklm.serve.api", None, True), ("torch", "f", False), ("groklm.train.loop", "f", False)} <= found
    package = Module(PACKAGE / "infer" / "__init__.py", "groklm.infer")
    assert [i.target for i in imports_in(package, ast.parse("from .engine import Engine"))] == ["groklm.infer.engine"]
    assert layer_of("groklm.serve.api") > layer_of("groklm.infer.engine") > layer_of("groklm.model.gpt") > layer_of("groklm.errors")
    assert layer_of("groklm.nowhere") is None and layer_of("groklm") is None
