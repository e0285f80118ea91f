"""Reproduce what serves a model version, byte for byte, from a clean clone.

``python -m llmops.reproduce <model> [--version N] [--role stable|canary] [--apply]`` reads the
version's pinned ``deployment.json`` (beside its weights in S3), loads the hardware class from
this checkout, renders the serving objects (:mod:`llmops.serving.render`) and prints their
canonical document (:func:`~llmops.serving.render.serving_document`) to stdout: the same bytes
the promote or rollback stored as ``serving-<role>.json`` and applied. ``--apply`` also applies
them through :func:`~llmops.serving.objects.serving_objects` (the cluster in gateway mode, the
local store on the embedded default), waiting for the rollout as a promote does.

Where things are: the registry at ``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``), S3 at
``AWS_ENDPOINT_URL`` with the ``AWS_*`` credentials, everything else from the ``LLMOPS_*``
settings (namespace, jobs image, default hardware class). The version defaults to the
``champion`` alias.

Refused (exit 2, the message on stderr names the file and the fix): a version without a
``deployment.json``, or a hardware class whose config in this checkout no longer hashes to the
version's pin: check out the commit whose ``include/hardware_configs/<class>.yaml`` has it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from llmops.config import settings as settings_mod
from llmops.core.hardware import HardwareConfigError, config_path, load_hardware_class
from llmops.core.manifests import ManifestError
from llmops.io import registry
from llmops.io import s3 as s3io
from llmops.serving.objects import ServingObjects, read_deployment_manifest, serving_objects
from llmops.serving.render import ROLES, RenderError, check_hardware_pin, render_role, serving_document

REFUSED_EXIT_CODE = 2


class ReproduceError(RuntimeError):
    """The version cannot be reproduced; the message names what is missing and the fix."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m llmops.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the registered model name")
    parser.add_argument("--version", help="the model version (default: the champion alias)")
    parser.add_argument("--role", choices=ROLES, default="stable", help="serve it as stable (default) or canary")
    parser.add_argument("--hardware-class", help="the class it serves on (default: LLMOPS_DEFAULT_HARDWARE_CLASS)")
    parser.add_argument("--extra-vllm-args", default="[]",
                        help="the canary's extra vLLM flags, a JSON list (as the canary was given them)")
    parser.add_argument("--tracking-uri", help="the MLflow server (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--apply", action="store_true", help="also apply the objects (server-side apply)")
    return parser.parse_args(argv)


def reproduce(settings: settings_mod.Settings, *, model: str, version: str | None, role: str,
              reg: Any, s3: Any, hardware_class: str | None = None,
              extra_vllm_args: Sequence[str] = ()) -> tuple[str, list[dict[str, Any]]]:
    """The serving document of ``model``'s ``version`` (default: the champion) as ``role``, and the
    objects in the order a promote applies them. Raises :class:`ReproduceError`,
    :class:`~llmops.serving.render.RenderError` or a manifest/config error naming the fix."""
    if version is None:
        champion = reg.by_alias(model, registry.CHAMPION)
        if champion is None:
            raise ReproduceError(f"model {model!r} has no {registry.CHAMPION!r} alias in the registry; fix: pass "
                                 f"--version N")
        version = champion.version
    source = reg.get(model, version).source
    manifest = read_deployment_manifest(s3, source)
    name = hardware_class or settings.default_hardware_class
    hw = load_hardware_class(name, settings.hardware_configs_dir)
    check_hardware_pin(manifest, hw, config_path(name, settings.hardware_configs_dir))
    objects = render_role(manifest, hw, settings, role=role, extra_vllm_args=extra_vllm_args)
    return serving_document(objects), objects


def main(argv: Sequence[str] | None = None, *, reg: Any = None, s3: Any = None,
         objects: ServingObjects | None = None) -> int:
    """Print the document (and apply it with ``--apply``); 0, or 2 when refused. ``reg``, ``s3`` and
    ``objects`` default to the registry, S3 and serving objects the environment names."""
    from llmops.serving.deployments import roll

    args = parse_args(argv)
    settings = settings_mod.load()
    try:
        extra = json.loads(args.extra_vllm_args)
        if not isinstance(extra, list) or not all(isinstance(token, str) for token in extra):
            raise ReproduceError(f"--extra-vllm-args {args.extra_vllm_args!r}: not a JSON list of strings; fix: pass "
                                 "e.g. '[\"--max-model-len\", \"16\"]'")
        reg = reg if reg is not None else registry.ModelRegistry(
            args.tracking_uri or settings_mod.env("MLFLOW_TRACKING_URI"))
        document, rendered = reproduce(settings, model=args.model, version=args.version, role=args.role, reg=reg,
                                       s3=s3 if s3 is not None else s3io.client_from_env(),
                                       hardware_class=args.hardware_class, extra_vllm_args=extra)
    except (ReproduceError, RenderError, ManifestError, HardwareConfigError, FileNotFoundError,
            json.JSONDecodeError) as exc:
        sys.stderr.write(f"llmops.reproduce: refused: {exc}\n")
        return REFUSED_EXIT_CODE
    sys.stdout.write(document)
    sys.stdout.flush()
    if args.apply:
        store = objects if objects is not None else serving_objects(settings)
        waited = roll(store, rendered)
        sys.stderr.write(f"llmops.reproduce: applied {len(rendered)} objects ({settings.canary_router}), "
                         f"rolled out in {waited:.1f}s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
