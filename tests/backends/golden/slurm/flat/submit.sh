#!/bin/bash
# Submit the jobs of this mempamal workdir (run 01234567) to SLURM.
# Run it from anywhere: bash WORKDIR/slurm/submit.sh
# Jobs are chained with --dependency=afterok (a failure cancels what depends on
# it), or afterany for a dependency written any:STEM (a model-based search's
# next round runs after its round's trials however they ended); their ids are
# appended to slurm/jobs.tsv. Tasks whose outputs exist are
# skipped, so a rerun recomputes nothing, but
# `mempamal resume WORKDIR --backend slurm` submits only what is missing.
set -euo pipefail
WORKDIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$WORKDIR"
declare -A JOB

submit() {  # submit STEM ARRAY [DEP_STEM | any:DEP_STEM...]: sbatch slurm/STEM.sbatch
    local stem=$1 array=$2 ok="" any="" dep="" d id
    local opts=(--parsable "--chdir=$WORKDIR")
    shift 2
    [ "$array" = - ] || opts+=("--array=$array")
    for d in "$@"; do
        case $d in
            any:*) any+=":${JOB[${d#any:}]}" ;;
            *) ok+=":${JOB[$d]}" ;;
        esac
    done
    [ -z "$ok" ] || dep="afterok$ok"
    [ -z "$any" ] || dep="${dep:+$dep,}afterany$any"
    [ -z "$dep" ] || opts+=("--dependency=$dep" --kill-on-invalid-dep=yes)
    id=$(sbatch "${opts[@]}" "slurm/$stem.sbatch")
    id=${id%%;*}
    JOB[$stem]=$id
    printf '%s\t%s\t%s\n' "$id" "$stem" "$array" >> slurm/jobs.tsv
    echo "$stem $id"
}

printf '# submitted by submit.sh at %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" >> slurm/jobs.tsv
submit fit 0-1
submit aggregate - fit
