#!/usr/bin/env bash
# BLEU of each lossy decoder's outputs (relaxed verification) against plain decoding's, from a
# `kangaroo bench suite` results.json: per task group and overall, over token ids (sacrebleu's corpus
# BLEU with tokenize none, so the model's own tokens are the words), and the share of turns that are
# identical. sacrebleu comes from PyPI into $KANGAROO_HOME/bleu-venv on first use.
#
#   scripts/relaxed-bleu.sh bench-results/results.json
set -euo pipefail
home="${KANGAROO_HOME:-$HOME/.cache/kangaroo}"
venv="$home/bleu-venv"
if ! "$venv/bin/python" -c "import sacrebleu" >/dev/null 2>&1; then
    mkdir -p "$home"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "sacrebleu>=2" >&2
fi
"$venv/bin/python" - "$1" <<'PY'
import collections, json, sys
from sacrebleu.metrics import BLEU

run = json.load(open(sys.argv[1]))
baseline = run["decoders"][0]
lossy = run.get("lossyDecoders") or []
reference = {(r["question_id"], r["turn"]): r for r in run["records"] if r["decoder"] == baseline}
bleu = BLEU(tokenize="none")
print(f"| decoder | task | turns | identical to {baseline} | BLEU against {baseline} |")
print("|---|---|---:|---:|---:|")
for decoder in lossy:
    groups = collections.defaultdict(list)
    for r in run["records"]:
        if r["decoder"] == decoder and (r["question_id"], r["turn"]) in reference:
            groups[r["task_group"]].append((r, reference[(r["question_id"], r["turn"])]))
    groups["overall"] = [pair for group in list(groups.values()) for pair in group]
    for group, pairs in groups.items():
        hyps = [" ".join(map(str, r["token_ids"])) for r, _ in pairs]
        refs = [" ".join(map(str, ref["token_ids"])) for _, ref in pairs]
        identical = sum(r["token_ids"] == ref["token_ids"] for r, ref in pairs)
        print(f"| {decoder} | {group} | {len(pairs)} | {identical} | {bleu.corpus_score(hyps, [refs]).score:.1f} |")
PY
