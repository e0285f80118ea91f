"""User-given ``vllm serve`` flags: which the platform manages, and how extra ones are merged.

A canary may change a tuning flag of its server (``canary_vllm_args``, in the embedded canary pod
and in the rendered ``<model>-canary`` Deployment alike), and a benchmark may try an override;
neither may change what the platform pins or manages (weights, served name, port, parallelism,
request logging). One allowlist and one merge for every place a server is started.

Pure: the standard library and the hardware class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmops.core.fields import short_repr
from llmops.core.hardware import KNOB_FLAGS, LAUNCHER_FLAGS, HardwareClass
from llmops.core.limits import VLLM_EXTRA_ARG_MAX_CHARS, VLLM_EXTRA_ARGS_MAX
from llmops.core.podjob import literal

_WEIGHTS = "where the weights, tokenizer or chat template come from is pinned by the deployment manifest"
_REACH = "how the server is reached is the launcher's (model name, port, address, auth, TLS)"
MANAGED_VLLM_FLAGS: dict[str, str] = {
    **{flag: f"set by the launcher from {source}" for flag, source in LAUNCHER_FLAGS.items()},
    **dict.fromkeys(("--model", "--tokenizer", "--revision", "--tokenizer-revision", "--code-revision",
                     "--download-dir", "--load-format", "--trust-remote-code", "--hf-config-path", "--hf-token",
                     "--hf-overrides", "--model-loader-extra-config", "--config", "--chat-template",
                     "--speculative-config", "--lora-modules", "--generation-config"),
                    _WEIGHTS),
    **dict.fromkeys(("--served-model-name", "--host", "--port", "--uds", "--api-key", "--root-path",
                     "--ssl-keyfile", "--ssl-certfile", "--ssl-ca-certs", "--ssl-cert-reqs", "--allowed-origins",
                     "--allowed-methods", "--allowed-headers", "--allow-credentials", "--middleware",
                     "--allowed-local-media-path"),
                    _REACH),
    **dict.fromkeys(("--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp", "--data-parallel-size",
                     "-dp", "--data-parallel-size-local", "-dpl"),
                    "the GPUs a server shards over are the hardware class's (gpu.count, tensor_parallel_size)"),
    **dict.fromkeys(("--disable-log-requests", "--enable-log-requests"),
                    "request logging is the platform's (prompts must not reach the logs)"),
}
"""``vllm serve`` flags no user override may set (``canary_vllm_args``, ``vllm_overrides``), with why.

:func:`managed_flags` adds every flag the sidecar builder sets that is not a tuning knob of the
hardware class, so a flag the launcher starts to set later is refused without being listed here.
"""


class VllmArgsError(ValueError):
    """Extra ``vllm serve`` flags from a user that cannot be applied; names the flag and the fix."""


def managed_flags(sidecar_args: Sequence[str], hw: HardwareClass) -> dict[str, str]:
    """:data:`MANAGED_VLLM_FLAGS` plus every flag in ``sidecar_args`` (what the sidecar builder set)
    that is neither a tuning knob (:data:`~llmops.core.hardware.KNOB_FLAGS`) nor one of the class's
    own ``vllm.extra_args``: those a canary may change, nothing else the launcher sets."""
    tunable = set(KNOB_FLAGS) | {_flag_name(a) for a in hw.vllm.extra_args if a.startswith("-")}
    derived = {_flag_name(a): "set by the launcher (vllm_sidecar)" for a in sidecar_args
               if a.startswith("-") and _flag_name(a) not in tunable}
    return {**derived, **MANAGED_VLLM_FLAGS}


def check_extra_args(extra: Any, managed: Mapping[str, str] = MANAGED_VLLM_FLAGS,
                     source: str = "canary_extra_args") -> list[tuple[str, str | None]]:
    """The ``(flag, value)`` pairs of ``extra``, or :class:`VllmArgsError` naming the first bad token.

    Refused: more than :data:`~llmops.core.limits.VLLM_EXTRA_ARGS_MAX` tokens, a token longer than
    :data:`~llmops.core.limits.VLLM_EXTRA_ARG_MAX_CHARS`, a token that is not a string, a value
    without a flag, and a flag in ``managed`` in any spelling: ``--flag value``, ``--flag=value``,
    ``--flag_name`` (vLLM reads ``_`` as ``-``) or an abbreviation (argparse expands a unique prefix).
    """
    if isinstance(extra, (str, bytes)) or not isinstance(extra, Sequence):
        raise VllmArgsError(f"{source}: expected a list of strings, got {short_repr(extra)}; "
                            "fix: pass [\"--flag\", \"value\", ...]")
    if len(extra) > VLLM_EXTRA_ARGS_MAX:
        raise VllmArgsError(f"{source}: {len(extra)} tokens, over the limit of {VLLM_EXTRA_ARGS_MAX} "
                            "(llmops.core.limits.VLLM_EXTRA_ARGS_MAX); fix: pass only the flags under test")
    for index, token in enumerate(extra):
        if not isinstance(token, str):
            raise VllmArgsError(f"{source}[{index}]: expected a string, got {short_repr(token)}; "
                                "fix: quote it (\"16\", not 16)")
        if len(token) > VLLM_EXTRA_ARG_MAX_CHARS:
            raise VllmArgsError(f"{source}[{index}]: {len(token)} characters, over the limit of "
                                f"{VLLM_EXTRA_ARG_MAX_CHARS} (llmops.core.limits.VLLM_EXTRA_ARG_MAX_CHARS); "
                                "fix: shorten it")
    flags = _flags(extra, source)
    for flag, _ in flags:
        hit = _managed_hit(flag, managed)
        if hit is not None:
            spelled = "" if hit == _flag_name(flag) else f" (read by vLLM as {hit})"
            raise VllmArgsError(f"{source}: {short_repr(flag)}{spelled} is managed by the platform: {managed[hit]}; "
                                "fix: remove it (change the hardware class or the deployment instead)")
    return flags


def _flag_name(token: str) -> str:
    """``--served_model_name=x`` -> ``--served-model-name`` (vLLM reads ``_`` in a flag as ``-``)."""
    name = token.split("=", 1)[0]
    dashes = len(name) - len(name.lstrip("-"))
    return name[:dashes] + name[dashes:].replace("_", "-")


def _managed_hit(flag: str, managed: Mapping[str, str]) -> str | None:
    name = _flag_name(flag)
    if name in managed:
        return name
    for candidate in managed:
        if candidate.startswith("--") and name.startswith("--") and len(name) > 2 and candidate.startswith(name):
            return candidate  # an abbreviation argparse would expand to the managed flag
        if not candidate.startswith("--") and not name.startswith("--") and name.startswith(candidate):
            return candidate  # "-tp2": a short flag with its value attached
    return None


def override_args(args: Sequence[str], extra: Sequence[str], *, managed: Mapping[str, str] = MANAGED_VLLM_FLAGS,
                  source: str = "canary_extra_args") -> tuple[str, ...]:
    """``args`` with each ``--flag [value]`` of ``extra`` replacing the same flag, or appended.

    Both ``--flag value`` and ``--flag=value`` forms are understood; a flag not followed by a
    value (``--enforce-eager``) is a switch. ``extra`` comes from a user (a DAG param): each of
    its tokens reaches the container as a :func:`~llmops.core.podjob.literal`, never expanded.
    :func:`check_extra_args` refuses (:class:`VllmArgsError`) a flag in ``managed`` and input
    over its limits.
    """
    result = list(args)
    for flag, value in check_extra_args(extra, managed, source):
        position = _find_flag(result, literal(flag))
        new = [literal(flag)] + ([literal(value)] if value is not None else [])
        if position is None:
            result += new
            continue
        start, length = position
        result[start:start + length] = new
    return tuple(result)


def _flags(extra: Sequence[str], source: str = "canary_extra_args") -> list[tuple[str, str | None]]:
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("-") or token in ("-", "--"):
            raise VllmArgsError(f"{source}: {short_repr(token)} is not a flag; "
                                "fix: pass [\"--flag\", \"value\", ...]")
        if "=" in token:
            flag, value = token.split("=", 1)
            flags.append((flag, value))
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            flags.append((token, extra[i + 1]))
            i += 2
        else:
            flags.append((token, None))
            i += 1
    return flags


def _find_flag(args: list[str], flag: str) -> tuple[int, int] | None:
    """(position, tokens taken) of ``flag`` in ``args``."""
    for i, token in enumerate(args):
        if token == flag:
            takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            return i, 2 if takes_value else 1
        if token.startswith(flag + "="):
            return i, 1
    return None
