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
SUPERNET=exp/$PRESET/supernet
echo "== 1/7 corpus: $DATA"
$OS data build --preset "$PRESET" --out "$DATA"
echo "== 2/7 features + tokenizer"
VOCAB=$(.venv/bin/python -c "from omnisparse.config import load_config; print(load_config('$PRESET').data.vocab_size)")
$OS data prepare --corpus "$DATA" --vocab-size "$VOCAB"
echo "== 3/7 train (dense streaming RNN-T): $EXP"
$OS train --config "$PRESET" --data.corpus_dir="$DATA" --train.out_dir="$EXP"
echo "== 4/7 evaluate the dense model"
$OS eval "$EXP"
echo "== 5/7 supernet training from the dense model: $SUPERNET"
$OS train --supernet --config "supernet_$PRESET" --data.corpus_dir="$DATA" --train.out_dir="$SUPERNET" \
    --sparsity.init_from="$EXP"
echo "== 6/7 evaluate the supernet: dense path and uniform 70% sparsity"
$OS eval "$SUPERNET" --out "$SUPERNET/eval-dense"
$OS eval "$SUPERNET" --subnet uniform:0.7 --out "$SUPERNET/eval-u0.7"
echo "== 7/7 transcribe an example, streaming"
EXAMPLE=$(ls "$DATA"/audio/test-clean/*.flac | head -n 1)
$OS transcribe "$EXP" "$EXAMPLE" --stream
echo "done: results in $EXP and $SUPERNET (metrics.csv, eval*/wer.json, tb/)"
