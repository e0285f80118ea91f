"""The house plan, checked: layers, one settings loader, one S3 client factory, documented modules.

Each layer of ``plugins/llmops`` imports only the layers below it (lazy imports inside functions
count too: they run in the same process), pipelines never import each other, nothing imports
the embedded platform, and the model maker stays self-contained. Every environment variable is
read through :mod:`llmops.config.settings`, and every S3 client comes from :mod:`llmops.io.s3`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.config import settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "llmops"

# Lowest first. A module may import its own layer's package and any layer below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("config",),
    ("core",),
    ("io",),
    ("serving",),
    ("evals",),
    ("canary",),
    ("refresh", "corpus", "drift", "benchmarks"),
    ("jobs", "launch", "reproduce"),
    ("embedded",),
)
PIPELINES = ("refresh", "corpus", "drift", "benchmarks")
# Self-contained: runs in the vLLM environment and imports nothing else of the project; the
# weekly eval set is generated from its task code (drift.make_evalset), which may import it.
SELF_CONTAINED = "modelmaker"
SETTINGS_MODULE = "llmops.config.settings"
S3_FACTORY_MODULE = "llmops.io.s3"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


MODULES = _modules()
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every llmops import in ``path``, module-level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "llmops":
                for alias in node.names:
                    yield node.lineno, f"llmops.{alias.name}"
            elif node.module.startswith("llmops."):
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("llmops."):
                    yield node.lineno, alias.name


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(top: str) -> int | None:
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    return None


def test_every_package_has_a_layer() -> None:
    tops = {_top(m) for m in MODULES if "." in m} - {SELF_CONTAINED, ""}
    tops = {t for t in tops if (PACKAGE / t).is_dir()}
    missing = sorted(t for t in tops if _layer(t) is None)
    assert not missing, f"packages with no layer in {__file__}: {missing}"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules at the top of plugins/llmops (put each in the package that owns it): {loose}"


def test_layers_import_only_downwards_and_pipelines_never_import_each_other() -> None:
    problems = []
    for module, path in MODULES.items():
        top = _top(module)
        if top == SELF_CONTAINED:
            continue
        own = _layer(top)
        for line, target in _imports(path):
            other = _top(target)
            if other == top or other == "":
                continue
            if other == SELF_CONTAINED:
                if module != "llmops.drift.make_evalset":
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {target} (the model maker is "
                                    f"only for the eval-set generator)")
                continue
            theirs = _layer(other)
            if theirs is None or own is None:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {target}: no layer for it")
            elif other in PIPELINES and top in PIPELINES:
                problems.append(f"{path.relative_to(ROOT)}:{line}: pipeline {top} imports pipeline {other}")
            elif theirs > own:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {top} (layer {own}) imports {target} "
                                f"(layer {theirs}, above it)")
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_nothing_but_the_embedded_platform_imports_it() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {target}"
                 for module, path in [*MODULES.items(), *((p.stem, p) for p in DAG_FILES)]
                 if _top(module) != "embedded"
                 for line, target in _imports(path) if _top(target) == "embedded"]
    assert not offenders, "production code imports the embedded platform:\n" + "\n".join(offenders)


def test_the_model_maker_imports_nothing_else_of_the_project() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {target}"
                 for module, path in MODULES.items() if _top(module) == SELF_CONTAINED
                 for line, target in _imports(path) if _top(target) != SELF_CONTAINED]
    assert not offenders, "\n".join(offenders)


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, target in _imports(path):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_every_imported_name_exists() -> None:
    """A moved or renamed name breaks a lazy import only when the task runs: catch it here."""
    import importlib

    broken = []
    files = [*(p for m, p in MODULES.items() if _top(m) != SELF_CONTAINED), *DAG_FILES,
             *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and (node.module == "llmops" or node.module.startswith("llmops."))
                    and _top(node.module) != SELF_CONTAINED):
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError as exc:
                broken.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}: {exc}")
                continue
            for alias in node.names:
                if not hasattr(module, alias.name) and f"{node.module}.{alias.name}" not in MODULES:
                    broken.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module} has no {alias.name}")
    assert not broken, "imports that fail at run time:\n" + "\n".join(broken)


def _python_files() -> Iterator[Path]:
    yield from (p for m, p in MODULES.items() if _top(m) != SELF_CONTAINED)
    yield from DAG_FILES


def _env_reads(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "environb") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            yield node.lineno, f"os.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "getenv") for a in node.names):
            yield node.lineno, "from os import environ/getenv"


def test_environment_is_read_only_through_the_settings_module() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}: {what}"
                 for path in _python_files() if path != MODULES[SETTINGS_MODULE]
                 for line, what in _env_reads(path)]
    assert not offenders, ("environment read outside llmops.config.settings (declare the variable in "
                           "ENV_VARS and read it with settings.env()):\n" + "\n".join(offenders))


def test_every_variable_read_is_declared() -> None:
    undeclared = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("env", "optional_env") and node.args[0].value not in settings.ENV_VARS:
                    undeclared.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.args[0].value}")
    assert not undeclared, "undeclared environment variables:\n" + "\n".join(undeclared)


def test_an_undeclared_variable_is_refused_with_the_fix() -> None:
    with pytest.raises(settings.SettingsError, match="not declared.*ENV_VARS"):
        settings.env("LLMOPS_NO_SUCH_THING", {})
    assert settings.env("LLMOPS_K8S_NAMESPACE", {}) == "llmops"
    assert settings.env("LLMOPS_K8S_NAMESPACE", {"LLMOPS_K8S_NAMESPACE": "  "}) == "llmops"  # empty = unset
    assert settings.env("LLMOPS_K8S_NAMESPACE", {"LLMOPS_K8S_NAMESPACE": "prod"}) == "prod"
    assert settings.env("LLMOPS_CANARY_WINDOW_S", {}, use_default=False) is None


S3_CONSTRUCTORS = {("boto3", "client"), ("boto3", "resource"), ("boto3", "Session"), ("session", "Session")}


def test_one_s3_client_factory() -> None:
    offenders = []
    for path in _python_files():
        if path == MODULES[S3_FACTORY_MODULE]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and (node.value.id, node.attr) in S3_CONSTRUCTORS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith("airflow.providers.amazon") or node.module.startswith("aiobotocore")
                    or (node.module == "boto3" and any(a.name in ("client", "resource", "Session")
                                                       for a in node.names))):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import ...")
    assert not offenders, ("S3 clients must come from llmops.io.s3 (client_from_connection in tasks, "
                           "client_from_env in pods):\n" + "\n".join(offenders))


def test_one_kubernetes_client_configuration() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{node.lineno}: {node.attr}"
                 for path in _python_files() if path != MODULES["llmops.io.kube"]
                 for node in ast.walk(ast.parse(path.read_text(), str(path)))
                 if isinstance(node, ast.Attribute) and node.attr in ("load_incluster_config", "load_kube_config")]
    assert not offenders, "Kubernetes API clients must come from llmops.io.kube:\n" + "\n".join(offenders)


def test_every_module_says_what_it_owns() -> None:
    missing = [str(path.relative_to(ROOT)) for path in MODULES.values()
               if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


def test_configuration_doc_lists_every_variable() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = settings.markdown_table()
    assert table in doc, ("docs/configuration.md is out of date; regenerate its table with "
                          "`PYTHONPATH=plugins .venv/bin/python -m llmops.config.settings`")
