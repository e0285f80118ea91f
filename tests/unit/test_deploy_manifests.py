"""``deploy/``: what a cluster needs before the first run, as manifests that validate offline.

Core objects are validated (strict) against the schema of the oldest Kubernetes the project
supports (``KUBERNETES_MIN_VERSION``) and of the newest the validator ships. The Gateway is a
CRD type: it is validated against the Gateway API CRD vendored under
``tests/fixtures/gateway-api/`` when that is there. The names the code refers to (namespace,
service accounts, model-cache claim, Gateway) must be the ones the manifests create.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmops.config import settings as settings_mod
from llmops.config.kubernetes import KUBERNETES_MIN_VERSION, MODEL_CACHE_CLAIM

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GATEWAY_API_FIXTURES = ROOT / "tests" / "fixtures" / "gateway-api"
SCHEMA_VERSIONS = (KUBERNETES_MIN_VERSION, kubernetes_validate.latest_version())
CRD_GROUPS = {"gateway.networking.k8s.io"}
CLUSTER_SCOPED = {"Namespace"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """``(file, object)`` for every object the kustomization installs, in its order."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
            if doc is not None:
                docs.append((name, doc))
    return docs


def _group(doc: dict[str, Any]) -> str:
    api_version = doc["apiVersion"]
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def _objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] == kind}


def test_the_kustomization_lists_every_manifest_once() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), f"deploy/kustomization.yaml lists a file twice: {listed}"
    on_disk = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "deploy/kustomization.yaml: resources must list every manifest in deploy/"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_core_objects_validate_strictly(version: str) -> None:
    core = [(name, doc) for name, doc in _documents() if _group(doc) not in CRD_GROUPS]
    assert core, "no core objects found"
    for name, doc in core:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"deploy/{name}: {doc['kind']} {doc['metadata']['name']} is invalid on "
                                 f"Kubernetes {version}: {exc}") from exc


def _crd_schema(group: str, kind: str, version: str) -> dict[str, Any] | None:
    """The schema of ``kind`` from the vendored Gateway API: a ``<kind>-<version>.schema.json``
    (the fixtures' convention, e.g. ``httproute-v1.schema.json``) or an upstream CRD YAML."""
    schema_file = GATEWAY_API_FIXTURES / f"{kind.lower()}-{version}.schema.json"
    if schema_file.is_file():
        return json.loads(schema_file.read_text())
    for path in sorted(GATEWAY_API_FIXTURES.rglob("*.yaml")) if GATEWAY_API_FIXTURES.is_dir() else ():
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            if spec["group"] != group or spec["names"]["kind"] != kind:
                continue
            for served in spec["versions"]:
                if served["name"] == version:
                    return served["schema"]["openAPIV3Schema"]
    return None


def test_gateway_api_objects_validate_against_the_crds() -> None:
    crd_objects = [(name, doc) for name, doc in _documents() if _group(doc) in CRD_GROUPS]
    assert crd_objects, "expected the Gateway in deploy/gateway.yaml"
    for name, doc in crd_objects:
        where = f"deploy/{name}: {doc['kind']} {doc['metadata']['name']}"
        group, version = doc["apiVersion"].split("/")
        schema = _crd_schema(group, doc["kind"], version)
        if schema is None:
            pytest.skip(f"no {doc['kind']} {version} schema under {GATEWAY_API_FIXTURES.relative_to(ROOT)} (the "
                        f"vendored Gateway API holds {sorted(p.name for p in GATEWAY_API_FIXTURES.glob('*.json'))}): "
                        f"{where} is checked by test_gateway_shape only")
        # A CRD's openAPIV3Schema is JSON Schema plus x-kubernetes-* annotations (ignored here).
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"{where}: invalid against the {doc['kind']} CRD: {exc.message}") from exc


def test_gateway_shape() -> None:
    from llmops.serving.render import GATEWAY_NAME

    gateway = _objects("Gateway")[GATEWAY_NAME]
    assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway["spec"]["gatewayClassName"], "deploy/gateway.yaml: gatewayClassName must name a GatewayClass"
    (listener,) = gateway["spec"]["listeners"]
    assert listener["protocol"] == "HTTP" and listener["port"] == 80
    assert listener["allowedRoutes"]["namespaces"]["from"] == "Same"


def test_every_object_lives_in_the_projects_namespace() -> None:
    namespace = settings_mod.load().namespace
    assert set(_objects("Namespace")) == {namespace}
    for name, doc in _documents():
        if doc["kind"] in CLUSTER_SCOPED:
            continue
        assert doc["metadata"].get("namespace") == namespace, (
            f"deploy/{name}: {doc['kind']} {doc['metadata']['name']} must set metadata.namespace: {namespace}")


def test_the_names_the_code_uses_exist() -> None:
    conf = settings_mod.load()
    accounts = _objects("ServiceAccount")
    assert conf.service_account in accounts, f"no ServiceAccount {conf.service_account} in deploy/"
    # Job pods get a token only when a job asks for it (the launcher sets it per pod).
    assert accounts[conf.service_account]["automountServiceAccountToken"] is False
    from llmops.serving.render import render_serving
    from tests.unit.test_serving_render import hardware, manifest

    hw = hardware("cpu")
    deployment = render_serving(manifest(hw), hw, conf, role="stable")[0]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {MODEL_CACHE_CLAIM}, "serving Deployments mount the cache deploy/ creates, as job pods do"
    claim = _objects("PersistentVolumeClaim")[MODEL_CACHE_CLAIM]
    assert "storageClassName" not in claim["spec"], "leave the storage class to the cluster default"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods on several nodes mount the cache"
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_every_role_binding_names_a_role_and_accounts_that_exist() -> None:
    roles, accounts = _objects("Role"), _objects("ServiceAccount")
    bindings = _objects("RoleBinding")
    assert bindings, "no RoleBinding in deploy/rbac.yaml"
    for name, binding in bindings.items():
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] in roles, name
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts, (name, subject)


def test_namespace_pod_security_admits_the_projects_pods() -> None:
    (namespace,) = _objects("Namespace").values()
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] in {"baseline", "restricted"}
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
