#!/usr/bin/env bash
# One multi-GPU host: runs a mathft binary in one process that sees every local GPU (JAX shards over them with the
# run's mesh). Several hosts: start this on each with JAX_COORDINATOR_ADDRESS=host0:port, JAX_NUM_PROCESSES=N and
# JAX_PROCESS_ID=i set. `--dry-run` prints the command.
#   launch/gpu_host.sh [--dry-run] train|infer|rerank [BINARY_ARGS...]
set -euo pipefail
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
ACTION="${1:?usage: launch/gpu_host.sh [--dry-run] train|infer|rerank [args...]}"; shift
case "$ACTION" in train|infer|rerank) ;; *) echo "unknown action: $ACTION" >&2; exit 2 ;; esac
mkdir -p logs
CMD=(env XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 .venv/bin/mathft-"$ACTION" "$@")
printf '%q ' "${CMD[@]}"; echo
if [[ "$DRY_RUN" == 0 ]]; then "${CMD[@]}" 2>&1 | tee "logs/$ACTION-$(hostname).log"; fi
