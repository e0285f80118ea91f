"""Staged weights in a serving pod: where they live in the model cache, and the init container
that fetches them and re-verifies their digest before vLLM starts (the pin is checked on every start).
"""

from __future__ import annotations

from dataclasses import replace

from llmops.config.settings import Settings
from llmops.core.podjob import Container, SecretEnv
from llmops.io import registry

S3_SECRET = "llmops-s3"


MODEL_CACHE = "/models"


def s3_secret_env() -> dict[str, SecretEnv]:
    """S3 credentials of a pod, from the ``llmops-s3`` Kubernetes Secret."""
    return {key: SecretEnv(S3_SECRET, key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


# Rendered at run time from the Airflow connection (pods never see Airflow itself).
S3_ENDPOINT_TEMPLATE = "{{ conn.llmops_s3.extra_dejson.get('endpoint_url', '') }}"


def with_s3_secrets(container: Container) -> Container:
    """The same container with the S3 Secret's keys as env."""
    return replace(container, secret_env={**container.secret_env, **s3_secret_env()})


def model_dir(model: str, weight_digest: str) -> str:
    """Where a staged version lives in the serving pod's model cache (content-addressed)."""
    return f"{MODEL_CACHE}/{model}/sha256-{weight_digest}"


def fetch_container(settings: Settings, target: dict[str, str], model: str, s3_endpoint: str | None,
                    name: str = "fetch-weights") -> Container:
    """Init container: fetch a staged version into the model cache and re-verify its digest."""
    return Container(
        name=name, image=settings.jobs_image, command=("python", "-m", "llmops.jobs.fetch_weights"),
        # --full-verify: re-hash even a cached copy; the pin is checked on every start.
        args=("--weights-uri", target["weights_uri"], "--dest", model_dir(model, target["weight_digest"]),
              "--weight-digest", target["weight_digest"], "--full-verify"),
        env={"AWS_ENDPOINT_URL": s3_endpoint or ""}, secret_env=s3_secret_env(),
    )


RUNTIME_IMAGE_PIN = f"{registry.PIN_PREFIX}runtime_image"
RUNTIME_VERSION_PIN = f"{registry.PIN_PREFIX}runtime_version"
HARDWARE_CONFIG_PIN = f"{registry.PIN_PREFIX}hardware_config."


class UnpinnedVersionError(RuntimeError):
    """A registered version without the pins a serving pod needs; the message names the fix."""


def version_target(role: str, version: registry.RegisteredVersion) -> dict[str, str]:
    """A registered version as a serving target: its weights, and the runtime it is pinned to.

    ``runtime_image`` is the version's pin (``pin.runtime_image``, from its deployment.json),
    never the platform's default image: a version serves on what it was qualified on.
    ``hardware_config.<class>`` keys carry the config hash of each class it was qualified on.
    """
    image = version.tags.get(RUNTIME_IMAGE_PIN)
    digest = version.tags.get(registry.WEIGHT_DIGEST_TAG)
    if not image or not digest:
        missing = ", ".join(tag for tag, value in ((RUNTIME_IMAGE_PIN, image), (registry.WEIGHT_DIGEST_TAG, digest))
                            if not value)
        raise UnpinnedVersionError(
            f"model {version.name!r} version {version.version} has no {missing} tag in the registry: it was not "
            f"staged by this project's stage job, so what it must serve on is unknown; fix: refresh the model from "
            f"its weight drop (stage pins weights and runtime), or set the tags from its deployment.json")
    target = {"role": role, "version": version.version, "weights_uri": version.source, "weight_digest": digest,
              "runtime_image": image, "runtime_version": version.tags.get(RUNTIME_VERSION_PIN, "")}
    target.update({f"hardware_config.{key[len(HARDWARE_CONFIG_PIN):]}": value
                   for key, value in sorted(version.tags.items()) if key.startswith(HARDWARE_CONFIG_PIN)})
    return target


def target_hardware_pins(target: dict[str, str]) -> dict[str, str]:
    """The ``hardware_config.<class>`` pins of a serving target as ``{class: config hash}``."""
    return {key.split(".", 1)[1]: value for key, value in target.items() if key.startswith("hardware_config.")}


def champion_target(reg: registry.ModelRegistry, model: str) -> dict[str, str] | None:
    """The current champion as a qualification target, or None for a first model."""
    champion = reg.by_alias(model, registry.CHAMPION)
    if champion is None:
        return None
    return version_target("champion", champion)
