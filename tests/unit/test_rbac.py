"""The roles in ``deploy/rbac.yaml`` grant every Kubernetes API call the code makes, and nothing more.

The calls are found, not listed by hand: every call of a kubernetes-client method in
``plugins/`` (names like ``patch_namespaced_deployment``, ``get_namespaced_custom_object``),
read from the source with ``ast``, plus the calls the ``KubernetesPodOperator`` makes from the
worker (read from the installed provider). Each maps to an RBAC permission (apiGroup,
resource[/subresource], verb) through :data:`METHODS`; custom objects take their group and
plural from the call's keyword arguments (literals or module constants). Server-side apply is a
PATCH, authorized as ``create`` too when the object does not exist yet.

Who calls: the Airflow workers run every library call and the operator (role
``llmops-airflow-worker``); a job pod calls the API only when its pod job sets
``kubernetes_api=True`` (the only pods that mount a token), and then needs what its job module
and the modules it imports call (role ``llmops-jobs``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
RBAC = ROOT / "deploy" / "rbac.yaml"
WORKER_ROLE = "llmops-airflow-worker"
JOBS_ROLE = "llmops-jobs"
CUSTOM = "<custom>"  # group and plural come from the call's group= and plural= arguments

# A kubernetes-client API method: <verb>_namespaced_<resource>[_<subresource>], the custom-object
# calls and the all-namespaces lists.
KUBE_METHOD = re.compile(
    r"^[a-z_]+_namespaced_[a-z_]+$|^[a-z_]+_for_all_namespaces$|^[a-z_]+_cluster_custom_object\w*$")

# method -> (apiGroup, resource[/subresource], verbs)
METHODS: dict[str, tuple[str, str, frozenset[str]]] = {
    "create_namespaced_pod": ("", "pods", frozenset({"create"})),
    "read_namespaced_pod": ("", "pods", frozenset({"get"})),
    "list_namespaced_pod": ("", "pods", frozenset({"list"})),
    "patch_namespaced_pod": ("", "pods", frozenset({"patch"})),
    "delete_namespaced_pod": ("", "pods", frozenset({"delete"})),
    "read_namespaced_pod_log": ("", "pods/log", frozenset({"get"})),
    # The client's exec is a websocket upgrade of a GET; from Kubernetes 1.35 it is also
    # authorized as create (AuthorizePodWebsocketUpgradeCreatePermission, beta, on by default).
    "connect_get_namespaced_pod_exec": ("", "pods/exec", frozenset({"get", "create"})),
    "connect_post_namespaced_pod_exec": ("", "pods/exec", frozenset({"create"})),
    "list_namespaced_event": ("", "events", frozenset({"list"})),
    "read_namespaced_service": ("", "services", frozenset({"get"})),
    "list_namespaced_service": ("", "services", frozenset({"list"})),
    "create_namespaced_service": ("", "services", frozenset({"create"})),
    "patch_namespaced_service": ("", "services", frozenset({"patch"})),
    "delete_namespaced_service": ("", "services", frozenset({"delete"})),
    "read_namespaced_deployment": ("apps", "deployments", frozenset({"get"})),
    "list_namespaced_deployment": ("apps", "deployments", frozenset({"list"})),
    "create_namespaced_deployment": ("apps", "deployments", frozenset({"create"})),
    "patch_namespaced_deployment": ("apps", "deployments", frozenset({"patch"})),
    "replace_namespaced_deployment": ("apps", "deployments", frozenset({"update"})),
    "delete_namespaced_deployment": ("apps", "deployments", frozenset({"delete"})),
    "read_namespaced_deployment_status": ("apps", "deployments/status", frozenset({"get"})),
    "read_namespaced_deployment_scale": ("apps", "deployments/scale", frozenset({"get"})),
    "patch_namespaced_deployment_scale": ("apps", "deployments/scale", frozenset({"patch"})),
    "get_namespaced_custom_object": (CUSTOM, CUSTOM, frozenset({"get"})),
    "list_namespaced_custom_object": (CUSTOM, CUSTOM, frozenset({"list"})),
    "create_namespaced_custom_object": (CUSTOM, CUSTOM, frozenset({"create"})),
    "patch_namespaced_custom_object": (CUSTOM, CUSTOM, frozenset({"patch"})),
    "replace_namespaced_custom_object": (CUSTOM, CUSTOM, frozenset({"update"})),
    "delete_namespaced_custom_object": (CUSTOM, CUSTOM, frozenset({"delete"})),
    "get_namespaced_custom_object_status": (CUSTOM, CUSTOM + "/status", frozenset({"get"})),
    "patch_namespaced_custom_object_status": (CUSTOM, CUSTOM + "/status", frozenset({"patch"})),
}

# The provider's code the KubernetesPodOperator runs on the worker (and the triggerer), and the
# hook methods it calls there: their API calls are the operator's.
PROVIDER = Path(__import__("airflow.providers.cncf.kubernetes", fromlist=["x"]).__file__).parent
KPO_FILES = ("operators/pod.py", "utils/pod_manager.py", "triggers/pod.py")
KPO_HOOK_FILE = "hooks/kubernetes.py"
# What the operator must be able to do (tests check the provider still does it this way).
KPO_EXPECTED = {
    ("", "pods", "create"), ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "patch"),
    ("", "pods", "delete"), ("", "pods/log", "get"), ("", "pods/exec", "create"), ("", "pods/exec", "get"),
    ("", "events", "list"), ("", "events", "watch"),
}

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


@dataclass(frozen=True)
class KubeCall:
    """One API call found in the source."""

    where: str  # file:line
    method: str
    permissions: frozenset[Permission]


# -- reading the source --------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PLUGINS).with_suffix("").parts)


def _module_path(name: str) -> Path | None:
    base = PLUGINS.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@cache
def _constants(path: Path) -> dict[str, str]:
    """Module-level string constants of ``path``, and those it imports from llmops modules by name."""
    found: dict[str, str] = {}
    for node in _tree(path).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmops"):
            source = _module_path(node.module)
            if source is not None and source != path:
                for alias in node.names:
                    value = _constants(source).get(alias.name)
                    if value is not None:
                        found[alias.asname or alias.name] = value
    for node in _tree(path).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = value.value
    return found


def _string(node: ast.expr | None, path: Path) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return _constants(path).get(node.id)
    return None


def _dict_literal_keys(func: ast.AST, name: str) -> set[str]:
    """Keys of dict literals assigned to ``name`` inside ``func`` (for ``**name`` in a call)."""
    keys: set[str] = set()
    for node in ast.walk(func):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)):
            keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return keys


def _is_server_side_apply(call: ast.Call, func: ast.AST) -> bool:
    """A PATCH with the apply content type (``_content_type=...apply-patch...``, given directly or
    through ``**kwargs`` built in the same function)."""
    for keyword in call.keywords:
        if keyword.arg == "_content_type":
            return True
        if keyword.arg is None and isinstance(keyword.value, ast.Name):
            if "_content_type" in _dict_literal_keys(func, keyword.value.id):
                return True
    return False


def _permissions(method: str, call: ast.Call | None, func: ast.AST, path: Path, where: str) -> frozenset[Permission]:
    if method not in METHODS:
        pytest.fail(f"{where}: Kubernetes API method {method!r} is not in the table: add it to the table in "
                    "tests/unit/test_rbac.py and to deploy/rbac.yaml")
    group, resource, verbs = METHODS[method]
    if CUSTOM in (group, resource):
        kwargs = {k.arg: k.value for k in (call.keywords if call else []) if k.arg}
        custom_group, plural = _string(kwargs.get("group"), path), _string(kwargs.get("plural"), path)
        if not custom_group or not plural:
            pytest.fail(f"{where}: {method} without group=/plural= as a literal or a module constant: "
                        "pass them by keyword so tests/unit/test_rbac.py can check deploy/rbac.yaml")
        group, resource = custom_group, resource.replace(CUSTOM, plural)
    if call is not None and verbs == {"patch"} and _is_server_side_apply(call, func):
        verbs = verbs | {"create"}  # the first apply of an object creates it
    return frozenset((group, resource, verb) for verb in verbs)


def _functions(tree: ast.AST) -> Iterator[ast.AST]:
    """The module and every function in it (the scope a call's ``**kwargs`` is built in)."""
    yield tree
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _kube_calls(path: Path, roots: ast.AST | None = None, *, base: Path = PLUGINS) -> list[KubeCall]:
    """Every kubernetes-client method referenced in ``path`` (or in ``roots``): called, or passed
    to a stream (a list passed to ``Watch().stream`` is a watch)."""
    tree = roots or _tree(path)
    rel = path.relative_to(base)
    calls: dict[tuple[int, str], KubeCall] = {}
    innermost: dict[int, ast.AST] = {}
    for func in _functions(tree):
        for node in ast.walk(func):
            innermost[id(node)] = func  # later (inner) functions overwrite outer ones
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not KUBE_METHOD.match(node.attr):
            continue
        where = f"{rel}:{node.lineno}"
        call = next((c for c in ast.walk(tree) if isinstance(c, ast.Call) and c.func is node), None)
        func = innermost.get(id(node), tree)
        permissions = _permissions(node.attr, call, func, path, where)
        streamed = any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "stream"
                       and c.args and c.args[0] is node for c in ast.walk(tree))
        if streamed and node.attr.startswith("list_"):
            permissions |= {(g, r, "watch") for g, r, _ in permissions}
        calls[(node.lineno, node.attr)] = KubeCall(where, node.attr, permissions)
    return list(calls.values())


def plugin_calls() -> list[KubeCall]:
    """Every Kubernetes API call of the library."""
    return [call for path in sorted(PLUGINS.rglob("*.py")) for call in _kube_calls(path)]


def _hook_functions(names: set[str]) -> list[ast.AST]:
    """The hook's functions ``names`` and those they call on ``self``, transitively."""
    tree = _tree(PROVIDER / KPO_HOOK_FILE)
    defs: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.setdefault(node.name, []).append(node)
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        for func in defs[name]:
            todo += [n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name) and n.value.id == "self"]
    return [func for name in sorted(seen) for func in defs[name]]


def operator_calls() -> list[KubeCall]:
    """The API calls the KubernetesPodOperator makes, read from the installed provider."""
    calls: list[KubeCall] = []
    hook_methods: set[str] = set()
    for rel in KPO_FILES:
        path = PROVIDER / rel
        calls += _kube_calls(path, base=PROVIDER)
        hook_methods |= {n.attr for n in ast.walk(_tree(path)) if isinstance(n, ast.Attribute)
                         and isinstance(n.value, ast.Attribute) and n.value.attr in ("hook", "_hook")}
    hook_path = PROVIDER / KPO_HOOK_FILE
    for func in _hook_functions(hook_methods):
        calls += _kube_calls(hook_path, ast.Module(body=[func], type_ignores=[]), base=PROVIDER)
    return calls


# -- who calls ------------------------------------------------------------------------------------


def _api_pod_job_modules() -> dict[str, str]:
    """``{where: job module}`` for every pod job built with ``kubernetes_api=True`` (the pods that
    mount an API token): the job module is the one its ``jobs_container(settings, "<job>")`` runs."""
    found: dict[str, str] = {}
    for path in sorted(PLUGINS.rglob("*.py")):
        for func in ast.walk(_tree(path)):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            wants_api = any(isinstance(k, ast.keyword) and k.arg == "kubernetes_api"
                            and isinstance(k.value, ast.Constant) and k.value.value is True
                            for k in ast.walk(func))
            if not wants_api:
                continue
            where = f"{path.relative_to(PLUGINS)}:{func.lineno} {func.name}"
            jobs = {_string(c.args[1], path) for c in ast.walk(func) if isinstance(c, ast.Call)
                    and getattr(c.func, "id", getattr(c.func, "attr", None)) == "jobs_container" and len(c.args) > 1}
            if len(jobs) != 1 or None in jobs:
                pytest.fail(f"{where}: a pod job with kubernetes_api=True whose job module cannot be read "
                            f"(jobs_container(settings, '<job>', ...) expected, found {jobs}): tell "
                            "tests/unit/test_rbac.py which module it runs")
            found[where] = f"llmops.jobs.{jobs.pop()}"
    return found


def _imports(module: str) -> set[str]:
    """``module`` and the llmops modules it imports, transitively (any import statement in it)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmops"):
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("llmops")]
    return seen


# -- the roles -------------------------------------------------------------------------------------


def _roles() -> dict[str, set[Permission]]:
    roles: dict[str, set[Permission]] = {}
    for doc in yaml.safe_load_all(RBAC.read_text()):
        if not doc or doc["kind"] != "Role":
            continue
        granted: set[Permission] = set()
        for rule in doc["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"deploy/rbac.yaml: Role {doc['metadata']['name']}: no wildcards"
            assert not rule.get("resourceNames"), "the code names objects at run time: no resourceNames"
            granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        roles[doc["metadata"]["name"]] = granted
    return roles


def _missing(calls: list[KubeCall], granted: set[Permission]) -> list[str]:
    return [f"{call.where} {call.method}: {group or 'core'} {resource} {verb}"
            for call in calls for group, resource, verb in sorted(call.permissions)
            if (group, resource, verb) not in granted]


# -- tests ------------------------------------------------------------------------------------------


def test_the_scan_finds_the_calls_the_code_is_known_to_make() -> None:
    found = {call.method for call in plugin_calls()}
    # The routing code reads an HTTPRoute before it patches its weights; gateway mode rolls Deployments.
    assert {"get_namespaced_custom_object", "patch_namespaced_custom_object",
            "read_namespaced_deployment_status"} <= found, found
    permissions = {p for call in plugin_calls() for p in call.permissions}
    assert ("gateway.networking.k8s.io", "httproutes", "patch") in permissions


def test_the_operator_calls_are_read_from_the_installed_provider() -> None:
    permissions = {p for call in operator_calls() for p in call.permissions}
    assert permissions == KPO_EXPECTED, (
        f"the KubernetesPodOperator's API use changed: now {sorted(permissions)}; update KPO_EXPECTED in "
        "tests/unit/test_rbac.py and the worker's Role in deploy/rbac.yaml")


def test_worker_role_grants_every_call_the_code_and_the_operator_make() -> None:
    granted = _roles()[WORKER_ROLE]
    missing = _missing(plugin_calls() + operator_calls(), granted)
    assert not missing, (f"deploy/rbac.yaml: Role {WORKER_ROLE} lacks what these calls need "
                         "(add the verbs to its rules):\n" + "\n".join(missing))


def test_worker_role_grants_nothing_the_code_does_not_need() -> None:
    needed = {p for call in plugin_calls() + operator_calls() for p in call.permissions}
    extra = _roles()[WORKER_ROLE] - needed
    assert not extra, f"deploy/rbac.yaml: Role {WORKER_ROLE} grants what no call needs: {sorted(extra)}"


def test_only_the_gateway_canary_controller_pod_talks_to_the_api() -> None:
    modules = _api_pod_job_modules()
    assert set(modules.values()) == {"llmops.jobs.canary"}, (
        f"pod jobs with kubernetes_api=True: {modules}; grant each job's calls to Role {JOBS_ROLE} in "
        "deploy/rbac.yaml and list the job here")


def test_jobs_role_grants_what_the_api_pods_call_and_nothing_more() -> None:
    calls = [call for module in sorted(set(_api_pod_job_modules().values())) for name in sorted(_imports(module))
             for call in _kube_calls(_module_path(name))]  # type: ignore[arg-type]
    assert calls, "the canary controller patches its HTTPRoute: the scan should see it"
    granted = _roles()[JOBS_ROLE]
    missing = _missing(calls, granted)
    assert not missing, f"deploy/rbac.yaml: Role {JOBS_ROLE} lacks:\n" + "\n".join(missing)
    extra = granted - {p for call in calls for p in call.permissions}
    assert not extra, f"deploy/rbac.yaml: Role {JOBS_ROLE} grants what no API pod needs: {sorted(extra)}"


def test_an_unknown_kubernetes_method_fails_with_the_fix(tmp_path: Path) -> None:
    source = tmp_path / "llmops" / "x.py"
    source.parent.mkdir()
    source.write_text("def f(api):\n    api.delete_collection_namespaced_pod(namespace='llmops')\n")
    with pytest.raises(pytest.fail.Exception, match=r"add it to the table in tests/unit/test_rbac.py and to "
                                                    r"deploy/rbac.yaml"):
        _kube_calls(source, base=tmp_path)


def test_server_side_apply_needs_create_and_custom_objects_resolve_constants(tmp_path: Path) -> None:
    source = tmp_path / "llmops" / "y.py"
    source.parent.mkdir()
    source.write_text(
        'GROUP = "gateway.networking.k8s.io"\nPLURAL = "httproutes"\n'
        "def apply(apps, custom, obj):\n"
        '    kw = {"field_manager": "llmops", "_content_type": "application/apply-patch+yaml"}\n'
        "    apps.patch_namespaced_deployment(name='a', namespace='n', body=obj, **kw)\n"
        "    custom.patch_namespaced_custom_object(group=GROUP, version='v1', namespace='n', plural=PLURAL,\n"
        "                                          name='r', body=obj)\n")
    calls = {call.method: call.permissions for call in _kube_calls(source, base=tmp_path)}
    assert calls["patch_namespaced_deployment"] == {("apps", "deployments", "patch"), ("apps", "deployments", "create")}
    assert calls["patch_namespaced_custom_object"] == {("gateway.networking.k8s.io", "httproutes", "patch")}
