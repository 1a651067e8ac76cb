#!/usr/bin/env bash
# One rs-search trial worker on this node, training each trial on all of its GPUs as one
# torchrun DDP group (rank 0 talks to the study; workers/README.md).
#
#   export RS_SEARCH_STORAGE='postgresql://rs_worker:PASSWORD@db.example:5432/rs_search?sslmode=verify-full&sslrootcert=/etc/rs-search/root.crt'
#   workers/torchrun.sh --study resnet-rs-350epochs [more rs-search worker flags]
#
# --nproc is the number of GPUs this node shows (RS_SEARCH_NPROC, else SLURM_GPUS_ON_NODE, else
# CUDA_VISIBLE_DEVICES, else nvidia-smi), unless the flags already give one. The storage URL is
# read from RS_SEARCH_STORAGE and never put on a command line (ps would show its password).
# SIGTERM checkpoints the running trial and hands it back; the worker then exits 0.
set -euo pipefail

die() {
    printf 'workers/torchrun.sh: %s\n' "$*" >&2
    exit 2
}

gpu_count() {
    if [[ -n "${RS_SEARCH_NPROC:-}" ]]; then
        printf '%s\n' "$RS_SEARCH_NPROC"
    elif [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
        printf '%s\n' "$SLURM_GPUS_ON_NODE"
    elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        local -a ids
        IFS=, read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
        printf '%s\n' "${#ids[@]}"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --list-gpus | grep -c '^GPU' || true
    else
        printf '0\n'
    fi
}

[[ -n "${RS_SEARCH_STORAGE:-}" ]] || die "set RS_SEARCH_STORAGE to the study database URL"
[[ " $* " == *" --study "* || " $* " == *" --study="* ]] || die "usage: $0 --study NAME [rs-search worker flags]"

extra=()
if [[ " $* " != *" --nproc "* && " $* " != *" --nproc="* ]]; then
    nproc="$(gpu_count)"
    [[ "$nproc" =~ ^[0-9]+$ ]] || die "GPU count '$nproc' is not a number (set RS_SEARCH_NPROC)"
    ((nproc >= 1)) || die "no GPU found on $(hostname); pass --nproc 1 --device cpu to train on the CPU"
    extra=(--nproc "$nproc")
fi

# exec: the worker is this process, so a scheduler's SIGTERM reaches it (and it passes the
# signal on to its torchrun group).
exec rs-search worker "$@" "${extra[@]}"
