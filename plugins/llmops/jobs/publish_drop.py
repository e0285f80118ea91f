"""Pod job: publish a local model folder as a weight drop (files first, ``manifest.json`` last).

What a training pipeline does at its end; the demo and the tests use it to create drops::

    python -m llmops.jobs.publish_drop .data/models/good --model tiny-chat --revision r1 \\
        --runtime-image docker.io/vllm/vllm-openai@sha256:<64 hex> [--corrupt model.safetensors]

Result (``return.json``): ``{status, drop_uri, manifest_uri, arrival_uri, model, revision,
weight_digest, runtime_image, files, uploaded, bytes_uploaded, faults}``. Exit 2 with the problem and its fix
when an option, the folder or the manifest is wrong (nothing is uploaded then).
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from llmops.config.images import is_pinned_by_digest
from llmops.core.manifests import ManifestError
from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.io.s3 import client_from_env
from llmops.jobs.common import optional_env, setup_logging, write_result
from llmops.refresh.publish import Faults, PublishError, publish_drop

log = setup_logging("llmops.jobs.publish_drop")

DEFAULT_DROPS_BUCKET = "llmops-drops"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="the model folder (config.json, weights, tokenizer files)")
    parser.add_argument("--model", required=True, help="model name, the drop's first path segment")
    parser.add_argument("--revision", default=None,
                        help="revision name, the drop's second path segment (default: the UTC time, r20261123t120000z)")
    parser.add_argument("--bucket", default=optional_env("LLMOPS_DROPS_BUCKET") or DEFAULT_DROPS_BUCKET,
                        help=f"drops bucket (default $LLMOPS_DROPS_BUCKET or {DEFAULT_DROPS_BUCKET})")
    parser.add_argument("--runtime-image", default=None,
                        help="serving image pinned by digest, repo@sha256:<64 hex> (default $LLMOPS_VLLM_IMAGE "
                             "when it is pinned)")
    parser.add_argument("--model-family", default=None, help="default: model_type of config.json")
    parser.add_argument("--source", default=None, help="where the checkpoint comes from (default: the folder URI)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="leave matching files out of the drop (repeatable)")
    faults = parser.add_argument_group("fault injection (tests and demos)")
    faults.add_argument("--corrupt", action="append", default=[], metavar="PATH",
                        help="flip one byte of PATH after hashing (same size, other sha256)")
    faults.add_argument("--truncate", action="append", default=[], metavar="PATH",
                        help="upload only the first half of PATH")
    faults.add_argument("--omit", action="append", default=[], metavar="PATH",
                        help="list PATH in the manifest but do not upload it")
    faults.add_argument("--extra", action="append", default=[], metavar="PATH",
                        help="upload PATH without listing it (a few bytes when the folder has no such file)")
    parser.add_argument("--workers", type=int, default=4, help="files hashed and uploaded in parallel")
    return parser.parse_args(argv)


def runtime_image(explicit: str | None) -> str:
    """The digest-pinned serving image: ``explicit``, else ``$LLMOPS_VLLM_IMAGE``; raise when not pinned."""
    image = explicit or optional_env("LLMOPS_VLLM_IMAGE")
    if not image:
        raise PublishError("no runtime image: fix: pass --runtime-image repo@sha256:<64 hex> or set "
                           "LLMOPS_VLLM_IMAGE to a digest-pinned reference")
    if not is_pinned_by_digest(image):
        where = "--runtime-image" if explicit else "LLMOPS_VLLM_IMAGE"
        raise PublishError(f"{where}={image!r} is not pinned by digest; fix: use repo@sha256:<64 lowercase hex> "
                           f"(e.g. from `docker buildx imagetools inspect {image}`)")
    return image


def main(argv: list[str] | None = None) -> int:
    """Publish the drop; exit 0 with a result, 2 when the input is wrong."""
    args = parse_args(argv)
    revision = args.revision or datetime.now(UTC).strftime("r%Y%m%dt%H%M%Sz")
    faults = Faults(corrupt=tuple(args.corrupt), truncate=tuple(args.truncate), omit=tuple(args.omit),
                    extra=tuple(args.extra))
    try:
        image = runtime_image(args.runtime_image)
        result = publish_drop(client_from_env(), args.directory, args.bucket, model=args.model, revision=revision,
                              runtime_image=image, model_family=args.model_family, source=args.source,
                              faults=faults, exclude=args.exclude, workers=args.workers)
    except (PublishError, ManifestError) as exc:
        log.error("cannot publish %s: %s", os.fspath(args.directory), exc)
        return VERDICT_EXIT_CODE
    payload = result.to_dict()
    write_result(payload)
    log.info("drop %s (weight digest %s, %d files)", payload["drop_uri"], payload["weight_digest"], payload["files"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
