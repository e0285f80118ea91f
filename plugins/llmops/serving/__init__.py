"""Serving a model version: the vLLM sidecar and serving pod jobs (:mod:`.vllm`), staged weights
in the model cache and their verifying init container (:mod:`.weights`), the traffic routers
(:mod:`.routers`: nginx on the embedded default, Gateway API HTTPRoute in a cluster) and the
long-lived serving Deployments in a cluster (:mod:`.deployments`)."""
