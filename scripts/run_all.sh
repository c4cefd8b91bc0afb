#!/usr/bin/env bash
# The main job, end to end on the default corpus: a scaled-down run of the headline experiment
# (bench/omni_vs_individual.py) - corpus -> dense -> supernet -> one pruned baseline -> search ->
# export -> report -> streaming transcription with the exported model, and with the model shipped in
# models/ (trained with the full bench budget, so even a smoke run shows a real transcript). Every
# stage is resumable:
# re-running skips finished corpus files and features, training resumes from its last checkpoint,
# the search from its last generation and the report from its last evaluated point.
#   PRESET=small (default; the CPU demo, ~90 min on 2 cores) or PRESET=tiny (a smoke run, minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-small}
bash scripts/setup.sh
OS=.venv/bin/omnisparse
DATA=${DATA:-data/$PRESET}   # both overridable, e.g. for a timing from scratch (bench/main_job.py)
EXP=${EXP:-exp/$PRESET/main}
mkdir -p "$EXP"
stage() {  # print the stage and log its start (seconds since the epoch) to $EXP/stages.csv
  echo "== $1"
  echo "$(date +%s.%N),$1" >> "$EXP/stages.csv"
}
case "$PRESET" in
  small)  # scaled down from the bench presets so that the whole job fits in ~75 minutes
    DENSE=small
    DENSE_ARGS=(--train.max_steps=3000 --train.max_wall_s=1800 --train.valid_every=1000)
    SUPERNET_ARGS=(--train.max_steps=100 --sparsity.ramp_steps=50 --train.valid_every=0)
    PRUNE_ARGS=(--train.max_steps=400 --sparsity.prune_steps=200 --train.valid_every=0)
    SEARCH_ARGS=(--search.population=24 --search.generations=3 --search.mutations=12 --search.crossovers=12
                 --search.dev_subset=60)
    REPORT_ARGS=(--test-subset 200 --rtf-utts 10) ;;
  *)
    DENSE=$PRESET; DENSE_ARGS=(); SUPERNET_ARGS=(); PRUNE_ARGS=(); SEARCH_ARGS=(); REPORT_ARGS=(--rtf-utts 2) ;;
esac
stage "1/9 corpus: $DATA"
$OS data build --preset "$PRESET" --out "$DATA"
stage "2/9 features + tokenizer"
VOCAB=$(.venv/bin/python -c "from omnisparse.config import load_config; print(load_config('$DENSE').data.vocab_size)")
$OS data prepare --corpus "$DATA" --vocab-size "$VOCAB"
stage "3/9 dense streaming RNN-T: $EXP/dense"
$OS train --config "$DENSE" --data.corpus_dir="$DATA" --train.out_dir="$EXP/dense" "${DENSE_ARGS[@]}"
stage "4/9 supernet from the dense model: $EXP/supernet"
$OS train --supernet --config "supernet_$PRESET" --data.corpus_dir="$DATA" --train.out_dir="$EXP/supernet" \
    --sparsity.init_from="$EXP/dense" "${SUPERNET_ARGS[@]}"
stage "5/9 one individually pruned baseline (uniform 0.7): $EXP/prune-0.7"
$OS prune --config "prune_$PRESET" --data.corpus_dir="$DATA" --train.out_dir="$EXP/prune-0.7" \
    --sparsity.init_from="$EXP/dense" --sparsity.target=0.7 "${PRUNE_ARGS[@]}"
stage "6/9 evolutionary search of the supernet: $EXP/supernet/search"
$OS search --config "search_$PRESET" --data.corpus_dir="$DATA" --search.supernet="$EXP/supernet" \
    --search.out_dir="$EXP/supernet/search" "${SEARCH_ARGS[@]}"
stage "7/9 export the best sub-network no larger than the pruned baseline: $EXP/export"
LIMIT=$(.venv/bin/python - "$EXP" <<'PY'
import sys
from omnisparse.export.loading import load_model
from omnisparse.export.subnet import space_for
lm = load_model(f"{sys.argv[1]}/prune-0.7")
space = space_for(lm)
print(space.size_bytes(space.uniform(lm.config.sparsity.target), "int8-sparse") / 1e6)
PY
)
$OS export "$EXP/supernet" --size-mb "$LIMIT" --out "$EXP/export" --overwrite
stage "8/9 report: WER vs size of every method"
$OS report "$EXP" "${REPORT_ARGS[@]}"
stage "9/9 transcribe an example with the exported model and with the shipped one, streaming"
EXAMPLES=("$DATA"/audio/test-clean/*.flac)  # no `ls | head`: under pipefail its SIGPIPE fails the job
EXAMPLE=${EXAMPLES[0]}
.venv/bin/python - "$DATA" <<'PY'
import gzip, json, sys
with gzip.open(f"{sys.argv[1]}/manifests/supervisions_test-clean.jsonl.gz", "rt") as f:
    print("reference:", json.loads(f.readline())["text"])
PY
$OS transcribe "$EXP/export" "$EXAMPLE" --stream
SHIPPED=models/small-int8
if [ -d "$SHIPPED" ]; then
  $OS transcribe "$SHIPPED" "$EXAMPLE" --stream
fi
stage "done"
echo "done: report in $EXP/report (report.md, wer_vs_size.png), shippable model in $EXP/export"
