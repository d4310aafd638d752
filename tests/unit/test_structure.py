"""The shape of the deployed package: what ships is the product only, and it stays readable.

- Nothing in `imagegw` (the Lambda layer) imports the local tools (`imagegw_dev`) or a local-only library.
- The layer `sam build` made holds the `imagegw` package and nothing of `imagegw_dev`.
- No import cycle between the deployed modules, nor between its folders; no deployed function over 60 lines.
- Every document a docstring or comment names (`docs/*.md`) exists.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "imagegw" / "imagegw"
LOCAL_ONLY_IMPORTS = ("imagegw_dev", "moto", "argparse", "http.server", "socketserver", "yaml")
MAX_FUNCTION_LINES = 60


def deployed_modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return modules


def imported_names(module_name: str, tree: ast.Module) -> set[str]:
    """Absolute names of every module imported anywhere in the file (also inside functions)."""
    package = module_name.split(".") if module_name.endswith("__init__") else module_name.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            names.add(name)
            names.update(f"{name}.{alias.name}" for alias in node.names)
    return names


MODULES = deployed_modules()
PACKAGES = {".".join(path.relative_to(PACKAGE.parent).parent.parts) for path in PACKAGE.rglob("__init__.py")}


def test_the_deployed_package_imports_no_local_tool():
    offenders = {
        module: sorted(
            n
            for n in imported_names(module, tree)
            if n.split(".")[0] in LOCAL_ONLY_IMPORTS or n in LOCAL_ONLY_IMPORTS
        )
        for module, tree in MODULES.items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_the_local_tools_are_not_inside_the_deployed_package():
    assert not list(PACKAGE.rglob("imagegw_dev*"))
    for name in ("devstack", "local_stack", "emulator", "cli", "admin", "template"):
        assert f"imagegw.{name}" not in MODULES


def test_the_built_layer_holds_the_product_only():
    layer = ROOT / ".aws-sam" / "build" / "ImagegwLayer" / "python"
    if not layer.is_dir():
        pytest.skip("no `sam build` output here (make test builds the layer before pytest runs)")
    shipped = {p.relative_to(layer).as_posix() for p in (layer / "imagegw").rglob("*.py")}
    source = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")}
    assert shipped == source
    assert not (layer / "imagegw_dev").exists()


def module_level_edges(module: str, tree: ast.Module) -> set[str]:
    """Deployed modules this one imports when it is loaded. `from a.b import c` depends on `a.b.c` where
    that is a module, else on `a.b`. Imports inside functions run later: they are how deployed code defers
    heavy libraries, and are not edges here."""
    package = module.split(".") if module in PACKAGES else module.split(".")[:-1]
    edges: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                edges.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
    return {edge for edge in edges if edge in MODULES and edge != module}


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_between_deployed_modules():
    assert cycles_of({module: module_level_edges(module, tree) for module, tree in MODULES.items()}) == []


def room(module: str) -> str:
    """The folder (`jobs`) or top-level module (`service`) of the package a module is in."""
    return module.split(".")[1] if "." in module else module


def test_no_two_rooms_of_the_package_depend_on_each_other():
    """Folders and top-level modules form layers: counting every import (deferred ones and those for type
    checking too), no room reaches back to one that imports it. The jobs worker runs the pipeline, so the
    pipeline (service) may not import the jobs folder."""
    graph: dict[str, set[str]] = {}
    for module, tree in MODULES.items():
        targets = {room(name) for name in imported_names(module, tree) if name.startswith("imagegw.")}
        graph.setdefault(room(module), set()).update(
            t for t in targets if t != room(module) and f"imagegw.{t}" in MODULES
        )
    assert cycles_of(graph) == []
    assert "jobs" not in graph["service"]


def test_no_deployed_function_is_longer_than_60_lines():
    too_long = [
        f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for module, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert too_long == []


def test_every_document_the_code_names_exists():
    named = set()
    for base in (PACKAGE, ROOT / "devtools", ROOT / "functions"):
        for path in base.rglob("*.py"):
            named.update(re.findall(r"\bdocs/[\w./-]+\.md\b", path.read_text(encoding="utf-8")))
    for path in (ROOT / "template.yaml", ROOT / "samconfig.toml", ROOT / "README.md"):
        named.update(re.findall(r"\bdocs/[\w./-]+\.md\b", path.read_text(encoding="utf-8")))
    missing = sorted(doc for doc in named if not (ROOT / doc).is_file())
    assert missing == []


def test_no_docstring_points_outside_the_repository():
    """'the seed' and sibling folders are not shipped with the code: a reference must resolve here."""
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "devtools").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bthe seed\b|\.\./shared/", text, re.IGNORECASE):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []


def test_each_handler_file_names_the_endpoint_the_template_routes_to_it():
    from imagegw.api import ENDPOINTS, paths_of
    from imagegw_dev.template import load_template, resources

    functions = resources(load_template(ROOT / "template.yaml"), "AWS::Serverless::Function")
    checked = 0
    for function in functions.values():
        props = function
        api_events = [e["Properties"] for e in props.get("Events", {}).values() if e["Type"] == "Api"]
        if not api_events:
            continue
        handler = (ROOT / props["CodeUri"] / "app.py").read_text(encoding="utf-8")
        named = re.findall(r'make_api_handler\("(\w+)"\)', handler)
        assert len(named) == 1, props["CodeUri"]
        served = {(e["Method"].upper(), e["Path"]) for e in api_events}
        for method, path in paths_of(named[0]):
            assert (method, re.sub(r"<(\w+)>", r"{\1}", path)) in served, props["CodeUri"]
        checked += 1
    assert checked == len(ENDPOINTS)


def test_the_openapi_document_describes_every_route_the_api_serves():
    import yaml

    from imagegw.api import ENDPOINTS, paths_of

    doc = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    documented = {(method.upper(), "/v1" + path) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (method, re.sub(r"<(\w+)>", r"{\1}", path)) for name in ENDPOINTS for method, path in paths_of(name)
    }
    assert documented == served
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
