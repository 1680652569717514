"""The project's layers, read from the source: every import (function-local ones included) parsed with `ast`.

Units, lowest first:  hil.core  <-  {sim_backend, drivers}  <-  {sim_backend.emulator, hil engine (hil/ but
core/ and cli/)}  <-  calibration  <-  hil.cli. A unit imports only units below it (units side by side may
not import each other: the emulated lab builds on the simulator and on the drivers' lab config and instrument
registry, and the engine never needs it), so there is no cycle between units; hil.core imports nothing else of the project.
Imports inside functions hide cycles and slow imports from the reader: a handful at most, each one a slow or
optional third-party package, with a comment saying why.
The command line's namespace stays in hil.cli: below it, functions take typed settings (config objects, dataclasses).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hil", "sim_backend", "drivers", "calibration")
RANK = {"hil.core": 0, "sim_backend": 1, "drivers": 1, "sim_backend.emulator": 2, "hil-engine": 2, "calibration": 3,
        "hil.cli": 4}
MAX_FUNCTION_LOCAL = 7  # 5 + hil dashboard's dash and hil export's xarray (optional extras, slow imports)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted (absolute)
    path: Path
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str | None:
    """The unit a project module belongs to; None outside the project. `hil` itself (hil/__init__.py, which
    imports nothing of the project) runs whenever hil.core is imported, so it counts as core."""
    top = module.split(".")[0]
    if top not in PACKAGES:
        return None
    if module == "sim_backend.emulator" or module.startswith("sim_backend.emulator."):
        return "sim_backend.emulator"
    if top != "hil":
        return top
    if module == "hil" or module == "hil.core" or module.startswith("hil.core."):
        return "hil.core"
    if module == "hil.cli" or module.startswith("hil.cli."):
        return "hil.cli"
    return "hil-engine"


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _function_lines(tree: ast.AST) -> set[int]:
    """Line numbers of import statements inside a function (at any depth)."""
    lines = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    lines.add(node.lineno)
    return lines


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    local = _function_lines(tree)
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, up level - 1
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import name` imports the module pkg.name when there is one
            targets = [f"{origin}.{a.name}" if _is_module(f"{origin}.{a.name}") else origin for a in node.names]
        for target in targets:
            found.append(Import(module, target, path, node.lineno, node.lineno in local))
    return found


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def all_imports() -> list[Import]:
    return [imp for path in project_files() for imp in imports_of(path)]


def _where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.target}"


def test_every_module_belongs_to_a_unit():
    files = project_files()
    assert len(files) > 30, "the project's modules were not found"
    assert all(unit_of(module_name(p)) in RANK for p in files)


def test_core_imports_nothing_else_of_the_project():
    bad = [_where(i) for i in all_imports()
           if unit_of(i.module) == "hil.core" and unit_of(i.target) not in (None, "hil.core")]
    assert not bad, "hil.core must import nothing else of the project:\n" + "\n".join(bad)


def test_units_import_only_units_below_them():
    """Downward only: hil.core <- {sim_backend, drivers} <- hil engine <- calibration <- hil.cli (so no cycles)."""
    bad = []
    for imp in all_imports():
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if dst is None or src == dst:
            continue
        if RANK[dst] >= RANK[src]:
            bad.append(f"{_where(imp)}: {src} may not import {dst}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_units_are_the_seven_layers():
    """The cycle check below runs over these units: the core, the simulator, the emulator, the drivers, the hil
    engine, calibration and the command line."""
    assert set(RANK) == {"hil.core", "sim_backend", "sim_backend.emulator", "drivers", "hil-engine", "calibration",
                         "hil.cli"}
    assert unit_of("hil.cli") == unit_of("hil.cli.sweep") == "hil.cli"
    assert unit_of("hil.grid_run") == "hil-engine" and unit_of("hil.core.config") == "hil.core"


def test_no_cycle_between_units():
    edges: dict[str, set[str]] = {u: set() for u in RANK}
    for imp in all_imports():
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src is not None and dst is not None and src != dst:
            edges[src].add(dst)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(edges[u]):
            assert state.get(v) != 1, "import cycle between units: " + " -> ".join([*path, u, v])
            if v not in state:
                visit(v, [*path, u])
        state[u] = 2

    for u in RANK:
        if u not in state:
            visit(u, [])


def _heavy_or_project(target: str) -> bool:
    top = target.split(".")[0]
    return top in PACKAGES or top not in sys.stdlib_module_names


def test_few_function_local_imports_each_with_a_reason():
    local = [i for i in all_imports() if i.in_function and _heavy_or_project(i.target)]
    statements = sorted({(i.path, i.line) for i in local})
    listing = "\n".join(sorted({_where(i) for i in local}))
    assert len(statements) <= MAX_FUNCTION_LOCAL, (
        f"{len(statements)} function-local imports of project or third-party modules (at most "
        f"{MAX_FUNCTION_LOCAL}); import at the top of the module unless the package is slow or optional:\n{listing}")
    silent = []
    for path, line in statements:
        lines = path.read_text().splitlines()
        here, before = lines[line - 1], lines[line - 2].strip() if line > 1 else ""
        if "#" not in here and not before.startswith("#"):
            silent.append(f"{path.relative_to(ROOT)}:{line}")
    assert not silent, "function-local imports need a comment saying why (same or previous line):\n" + "\n".join(silent)


def test_the_parser_sees_function_local_and_relative_imports(tmp_path):
    """The checks above rest on this: an import inside a function, and a relative one, are found and resolved."""
    pkg = ROOT / "hil" / "core"
    sample = imports_of(pkg / "ep.py")
    assert any(i.target == "hil.core.backend" and not i.in_function for i in sample)
    src = "def f():\n    # why\n    from . import ep\n    import matplotlib\n"
    tree = ast.parse(src)
    assert _function_lines(tree) == {3, 4}


def namespace_uses(path: Path) -> list[str]:
    """Where a module reads the command line: an argparse import, a Namespace annotation, or a function parameter
    named `args` whose attributes it reads (args.trials: a namespace passed down; a list of SCPI arguments, which
    the emulators call args, is indexed, not read by attribute)."""
    tree = ast.parse(path.read_text(), str(path))
    where = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "argparse" for a in node.names):
            found.append(f"{where}:{node.lineno} imports argparse")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "argparse":
            found.append(f"{where}:{node.lineno} imports from argparse")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            for a in params:
                if a.annotation is not None and "Namespace" in ast.unparse(a.annotation):
                    found.append(f"{where}:{node.lineno} parameter {a.arg}: {ast.unparse(a.annotation)}")
            if any(a.arg == "args" for a in params):
                body = node.body if isinstance(node.body, list) else [node.body]
                read = sorted({n.attr for b in body for n in ast.walk(b) if isinstance(n, ast.Attribute)
                               and isinstance(n.value, ast.Name) and n.value.id == "args"}
                              | {ast.unparse(n.args[1]) for b in body for n in ast.walk(b) if isinstance(n, ast.Call)
                                 and ast.unparse(n.func) == "getattr" and len(n.args) > 1
                                 and ast.unparse(n.args[0]) == "args"})
                if read:
                    found.append(f"{where}:{node.lineno} reads args.{', args.'.join(read)}")
    return found


def test_no_function_outside_the_cli_takes_the_command_line():
    files = [p for p in project_files() if unit_of(module_name(p)) != "hil.cli"]
    bad = [use for p in files for use in namespace_uses(p)]
    assert not bad, "argparse belongs to hil.cli; pass typed settings down instead:\n" + "\n".join(bad)


def test_the_namespace_check_sees_what_it_looks_for(tmp_path):
    """The check above rests on this: each way of taking the command line is found, a SCPI args list is not."""
    sample = tmp_path / "sample.py"
    sample.write_text("import argparse\nfrom argparse import Namespace\n\n\ndef a(x: argparse.Namespace):\n    pass\n\n\n"
                      "def b(args):\n    return args.trials\n\n\ndef c(suffixes, args):\n    return args[0], len(args)\n")
    found = namespace_uses(sample)
    assert len(found) == 4 and "reads args.trials" in found[3] and not any(":13 " in f for f in found), found
