#!/usr/bin/env bash
# The main job, end to end on the default corpus. Every stage is resumable: re-running skips
# finished corpus files and features, and training resumes from its last checkpoint.
#   PRESET=small (default; the CPU demo) or PRESET=tiny (a smoke run in a minute or two)
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-small}
bash scripts/setup.sh
OS=.venv/bin/omnisparse
DATA=data/$PRESET
EXP=exp/$PRESET/dense
echo "== 1/5 corpus: $DATA"
$OS data build --preset "$PRESET" --out "$DATA"
echo "== 2/5 features + tokenizer"
VOCAB=$(.venv/bin/python -c "from omnisparse.config import load_config; print(load_config('$PRESET').data.vocab_size)")
$OS data prepare --corpus "$DATA" --vocab-size "$VOCAB"
echo "== 3/5 train (dense streaming RNN-T): $EXP"
$OS train --config "$PRESET" --data.corpus_dir="$DATA" --train.out_dir="$EXP"
echo "== 4/5 evaluate"
$OS eval "$EXP"
echo "== 5/5 transcribe an example, streaming"
EXAMPLE=$(ls "$DATA"/audio/test-clean/*.flac | head -n 1)
$OS transcribe "$EXP" "$EXAMPLE" --stream
echo "done: results in $EXP (metrics.csv, eval/wer.json, tb/)"
