#!/usr/bin/env bash
# The demo's caption stage and SFT from a foundation, then option and reason mode on a validation set
# (never the demo's test splits) and the reading / look-up split of the reason answers.
# usage: experiments/tiny_study/sft_check.sh FOUNDATION OUT [SFT_LR] [DATA] [VAL]
#   defaults: SFT_LR 2e-5 (the demo's), DATA runs/demodata, VAL runs/val5; THREADS=n in the
#   environment limits torch's threads (default: all cores; two runs side by side want 1 each)
set -euo pipefail
F=$1; OUT=$2; LR=${3:-2e-5}; DATA=${4:-runs/demodata}; VAL=${5:-runs/val5}
T=.venv/bin/tinyvr
mkdir -p "$OUT"
[ -f "$OUT/init/config.json" ] || cp -r "$F/model" "$OUT/init"
TH=run.threads=${THREADS:-0}
common=($TH run.seed=0 data.video_root="$DATA" data.eval_file= run.save_every=20)
[ -f "$OUT/pretrain/model/model.safetensors" ] || $T train pretrain --config configs/tiny/pretrain.yaml "${common[@]}" run.output_dir="$OUT/pretrain" \
  model.init_from="$OUT/init" data.train_file="$DATA/pretrain.json" "model.trainable=[connector]"
[ -f "$OUT/sft/model/model.safetensors" ] || $T train sft --config configs/tiny/sft.yaml "${common[@]}" run.output_dir="$OUT/sft" \
  model.init_from="$OUT/pretrain/model" data.train_file="$DATA/sft.json" optim.lr="$LR"
M=$OUT/sft/model
$T eval --model "$M" --task synthetic --data-root "$VAL" --split test --mode option --limit 500 $TH --out "$OUT/val-test-option"
$T eval --model "$M" --task synthetic --data-root "$VAL" --split test_heldout --mode option --limit 500 $TH --out "$OUT/val-test_heldout-option"
$T eval --model "$M" --task synthetic --data-root "$VAL" --split test_heldout --mode reason --limit 200 $TH --out "$OUT/val-test_heldout-reason"
.venv/bin/python experiments/tiny_study/read_or_lookup.py "$OUT/val-test_heldout-reason/synthetic-test_heldout-reason/predictions.jsonl" "$VAL/test_heldout.jsonl"
