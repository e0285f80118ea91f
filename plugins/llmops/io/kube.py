"""The one way to reach the Kubernetes API: in-cluster credentials in a pod, the kube config
elsewhere (a developer's machine, CI against a test cluster).

The ``kubernetes`` client is imported here, inside the functions: DAG files never pay for it.
"""

from __future__ import annotations

from typing import Any


def _configure() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client


def apps_api() -> Any:
    """``AppsV1Api`` (Deployments and their rollout status)."""
    return _configure().AppsV1Api()


def core_api() -> Any:
    """``CoreV1Api`` (Services of the serving objects)."""
    return _configure().CoreV1Api()


def custom_objects_api() -> Any:
    """``CustomObjectsApi`` (Gateway API ``HTTPRoute``)."""
    return _configure().CustomObjectsApi()
