#!/usr/bin/env python3
"""Write a model folder's anomaly_reference.json (the page's anomaly-score reference,
docs/toolbox.md) from two `kakusan anomaly --out` reports over the same reference set: one
scored with the null class, one with each image's `class_labels`. numpy only.

    python3 tests/fixtures/make_anomaly_set.py --real 200 --per-kind 16 --heldout --out /tmp/ref.safetensors
    (add class_labels as in docs/toolbox.md → /tmp/ref_labels.safetensors)
    kakusan anomaly --model M --input /tmp/ref.safetensors --t 300 --steps 5 --seed 0 --out /tmp/null.json
    kakusan anomaly --model M --input /tmp/ref_labels.safetensors --t 300 --steps 5 --seed 0 --out /tmp/own.json
    python3 scripts/anomaly_reference.py /tmp/null.json /tmp/own.json M/anomaly_reference.json
"""

import json
import sys

import numpy as np

NAMES = {1: "inverted", 2: "pixels shuffled", 3: "uniform noise", 4: "rotated 90°"}


def distribution(path):
    r = json.load(open(path))
    s, k = np.array(r["scores"]), np.array(r["kind"])
    d = {
        "quantiles": [round(float(v), 6) for v in np.quantile(s[k == 0], np.linspace(0, 1, 101))],
        "ood_medians": [[NAMES[j], round(float(np.median(s[k == j])), 4)] for j in (1, 2, 3, 4)],
        "auroc": r["auroc"]["reconstruction"],
    }
    q = np.quantile(s[k == 0], [0.05, 0.5, 0.95]).round(4)
    print(f"{path}: real 5%/median/95% {q}, OOD medians {d['ood_medians']}, AUROC {d['auroc']}")
    return r, int((k == 0).sum()), d


null_path, own_path, out_path = sys.argv[1:4]
r, n, null = distribution(null_path)
_, _, own = distribution(own_path)
out = {
    "about": "Anomaly scores (mean squared error of the DDIM reconstruction from t, pixels in "
    "[-1, 1]) of real digits, for the page's likelihood panel. See docs/toolbox.md.",
    "command": "python3 tests/fixtures/make_anomaly_set.py --real 200 --per-kind 16 --heldout "
    "--out /tmp/ref.safetensors && kakusan anomaly --model assets/models/mnist --input "
    "/tmp/ref.safetensors --t 300 --steps 5 --seed 0 --out scores.json (then "
    "scripts/anomaly_reference.py, docs/toolbox.md)",
    "t": r["t"], "ddim_steps": r["ddim_steps"], "repeats": r["repeats"], "seed": r["seed"],
    "class": "null (unconditional)",
    "n": n,
    "digits": f"the first {n} of the embedded digits held out from training "
    "(data_split.json: --holdout eval)",
    **null,
    "conditioned": {
        "class": "each digit conditioned on its own label",
        "ood_classes": "inverted, shuffled, rotated: their source digit's label; noise: a random class",
        **own,
    },
}
with open(out_path, "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
print("wrote", out_path)
