#!/usr/bin/env bash
# Runs llama.cpp (through llama-cpp-python) and this project on the same GGUF file, prompts and
# thread count, and prints both speeds and their ratios from one run. A tool for people, not a test.
#
#   scripts/compare-llamacpp.sh [--model PATH] [--threads N] [--decode-tokens N]
#
# llama-cpp-python is installed from PyPI into $KANGAROO_HOME/llamacpp-venv the first time
# (it compiles llama.cpp: several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

threads=$(nproc)
decode_tokens=128
model=""
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --decode-tokens) decode_tokens="$2"; shift 2 ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

home="${KANGAROO_HOME:-$HOME/.cache/kangaroo}"
venv="$home/llamacpp-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    echo "Installing llama-cpp-python into $venv (compiles llama.cpp; several minutes) …" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check llama-cpp-python numpy
fi

swift build -c release --product kangaroo >&2
kangaroo=.build/release/kangaroo
model_args=()
[ -n "$model" ] && model_args=(--model "$model")
ours=$("$kangaroo" bench speed --json --threads "$threads" --decode-tokens "$decode_tokens" "${model_args[@]}")
[ -n "$model" ] || model="$home/SmolLM2-135M-Instruct.Q4_1.gguf"

OURS="$ours" MODEL="$model" THREADS="$threads" DECODE="$decode_tokens" "$venv/bin/python" - <<'PY'
import json, os, time
import numpy as np
from llama_cpp import Llama

ours = json.loads(os.environ["OURS"])
threads, decode_tokens = int(os.environ["THREADS"]), int(os.environ["DECODE"])
llm = Llama(model_path=os.environ["MODEL"], n_threads=threads, n_threads_batch=threads, n_ctx=2048,
            n_batch=512, logits_all=True, verbose=False)

def decode_speed():
    # Same prompt and token count as `kangaroo bench speed`: greedy, end-of-sequence ignored.
    tokens = llm.tokenize(b"The capital of France is", add_bos=False)
    llm.reset()
    llm.eval(tokens)
    start = time.perf_counter()
    for _ in range(decode_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    return decode_tokens / (time.perf_counter() - start)

def prefill_speed():
    text = b"Kangaroos are large marsupials found only in Australia. " * 64
    tokens = llm.tokenize(text, add_bos=False)[:256]
    best = 0.0
    for _ in range(2):
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        best = max(best, len(tokens) / (time.perf_counter() - start))
    return best

decode_speed()  # warm-up
theirs_decode, theirs_prefill = decode_speed(), prefill_speed()
print(f"threads {threads}, model {os.path.basename(os.environ['MODEL'])}")
print(f"{'':10}{'llama.cpp':>12}{'kangaroo':>12}{'ratio':>8}")
print(f"{'decode':10}{theirs_decode:12.1f}{ours['decode_tokens_per_second']:12.1f}{ours['decode_tokens_per_second'] / theirs_decode:8.2f}   tokens/s")
print(f"{'prefill':10}{theirs_prefill:12.1f}{ours['prefill_tokens_per_second']:12.1f}{ours['prefill_tokens_per_second'] / theirs_prefill:8.2f}   tokens/s")
print("kangaroo forward over n tokens (ms, ratio to n=1): " +
      ", ".join(f"n={f['tokens']} {f['milliseconds']:.2f} ({f['ratio_to_one']:.2f}x)" for f in ours["forward"]))
print(f"kangaroo matrix kernel alone ({ours['kernel_matrix']}, one thread, in cache; us, ratio): " +
      ", ".join(f"n={k['tokens']} {k['milliseconds'] * 1000:.2f} ({k['ratio_to_one']:.2f}x)" for k in ours["kernel"]))
print("kangaroo layers' matrix products alone (all threads; ms, ratio): " +
      ", ".join(f"n={p['tokens']} {p['milliseconds']:.2f} ({p['ratio_to_one']:.2f}x)" for p in ours["products"]))
PY
