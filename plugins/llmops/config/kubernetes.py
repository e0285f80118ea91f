"""Facts about the Kubernetes cluster the ``kubernetes`` launcher targets, stated once.

Pure constants: the pod-spec tests validate every rendered pod against the schema of
:data:`KUBERNETES_MIN_VERSION` (and of the newest version the validator ships), and the
manifests under ``deploy/`` are validated the same way.
"""

from __future__ import annotations

KUBERNETES_MIN_VERSION = "1.29"
"""The oldest Kubernetes release whose defaults run every pod this project renders.

Why: vLLM runs beside a job as a *native sidecar* (an init container with
``restartPolicy: Always``, gated by its startup probe). That is the ``SidecarContainers``
feature gate: alpha and off by default in 1.28, beta and on by default from 1.29 (through 1.32),
stable from 1.33 (kubernetes/website, ``feature-gates/SidecarContainers.md``). A 1.28 cluster
runs these pods only with ``--feature-gates=SidecarContainers=true`` on the kube-apiserver *and*
every kubelet (an alpha gate most managed clusters do not let you set); without it the API
server drops the init container's ``restartPolicy`` and vLLM becomes a plain init container
that never exits, so the pod never starts. Everything else the project uses is older: Pod
Security ``restricted`` fields and server-side apply (1.22+), Gateway API objects (CRDs,
installed separately).
"""

KUBERNETES_CONN_ID = "kubernetes_default"
"""The Airflow connection the ``KubernetesPodOperator`` reads (cluster, namespace, and the
``xcom_sidecar_container_*`` extras of the XCom sidecar it adds to every pod)."""

RUN_AS_USER = 1000
RUN_AS_GROUP = 1000
FS_GROUP = 1000
"""The restricted identity of every pod the project renders (job pods and serving Deployments):
non-root, one fixed user and group, the model cache writable through ``fsGroup``."""

MODEL_CACHE_CLAIM = "llmops-model-cache"
"""The PersistentVolumeClaim every serving pod mounts as its model cache (``deploy/`` creates it;
the launcher's ``model_cache_claim`` argument overrides it per task)."""
