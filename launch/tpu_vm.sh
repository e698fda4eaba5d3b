#!/usr/bin/env bash
# Cloud TPU VM launcher for mathft-jax: create a VM (or queued resource), install on every worker, run a binary on
# all workers (multi-host JAX), fetch logs, delete. `--dry-run` prints every command instead of running it.
#
#   launch/tpu_vm.sh [--dry-run] ACTION --name NAME --zone ZONE [--accelerator v4-32] [--version RUNTIME]
#                    [--project P] [--queued] [--repo URL] [--branch B] [-- BINARY_ARGS...]
# ACTION: create | setup | train | infer | rerank | recipe | logs | delete
# (recipe runs mathft-recipe, e.g. --gin_file=recipes/scale/llama3_8b_v4_32.gin; its RUN_DIR must be a folder every
# worker sees, e.g. gs://bucket/run, written directly without a FUSE mount, since each host writes its shard there)
#
# Example (SSFT of Gemma-2B on a v4-32, MODEL_DIR on GCS):
#   launch/tpu_vm.sh train --name ssft --zone us-central2-b --accelerator v4-32 -- \
#     --gin_file=models/gemma_2b.gin --gin_file=runs/train.gin --gin.MODEL_DIR="'gs://bucket/ssft'" ...
set -euo pipefail

DRY_RUN=0
ACTION=""
NAME=""
ZONE=""
ACCELERATOR="v4-32"
VERSION="tpu-ubuntu2204-base"
PROJECT=""
QUEUED=0
REPO="$(git -C "$(dirname "$0")/.." config --get remote.origin.url 2>/dev/null || true)"  # --repo overrides
BRANCH="main"
ARGS=()

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME="$2"; shift ;;
    --zone) ZONE="$2"; shift ;;
    --accelerator) ACCELERATOR="$2"; shift ;;
    --version) VERSION="$2"; shift ;;
    --project) PROJECT="$2"; shift ;;
    --queued) QUEUED=1 ;;
    --repo) REPO="$2"; shift ;;
    --branch) BRANCH="$2"; shift ;;
    --) shift; ARGS=("$@"); break ;;
    create|setup|train|infer|rerank|recipe|logs|delete) ACTION="$1" ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
  shift
done
[[ -n "$ACTION" && -n "$NAME" && -n "$ZONE" ]] || { echo "ACTION, --name and --zone are required" >&2; usage; }

PROJECT_FLAG=()
[[ -n "$PROJECT" ]] && PROJECT_FLAG=(--project="$PROJECT")

run() {  # prints the command (shell-quoted); runs it unless --dry-run
  printf '%q ' "$@"; echo
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

on_all_workers() {  # runs a shell command on every worker of the TPU VM
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$1"
}

quoted_args() { local out=""; for a in "${ARGS[@]}"; do out+=" $(printf '%q' "$a")"; done; echo "$out"; }

case "$ACTION" in
  create)
    if [[ "$QUEUED" == 1 ]]; then
      run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" --zone="$ZONE" \
        --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" "${PROJECT_FLAG[@]}"
    else
      run gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" \
        --version="$VERSION" "${PROJECT_FLAG[@]}"
    fi ;;
  setup)
    [[ -n "$REPO" ]] || { echo "setup needs --repo URL (this checkout has no origin remote)" >&2; exit 2; }
    on_all_workers "set -e; (git clone --branch $BRANCH $REPO ~/mathft-jax || git -C ~/mathft-jax pull); \
cd ~/mathft-jax && python3 -m venv .venv && .venv/bin/pip install -q -U pip && \
.venv/bin/pip install -q -e '.[data]' 'jax[tpu]' && mkdir -p ~/logs" ;;
  train|infer|rerank|recipe)
    # MATHFT_DISTRIBUTED=1: every worker calls jax.distributed.initialize() (TPU pods find the coordinator).
    on_all_workers "cd ~/mathft-jax && MATHFT_DISTRIBUTED=1 .venv/bin/mathft-$ACTION$(quoted_args) \
2>&1 | tee ~/logs/$ACTION-\$(hostname).log" ;;
  logs)
    run mkdir -p "logs/$NAME"
    run gcloud compute tpus tpu-vm scp "$NAME:~/logs/*" "logs/$NAME/" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
      --worker=all ;;
  delete)
    if [[ "$QUEUED" == 1 ]]; then
      run gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --quiet
    fi ;;
esac
