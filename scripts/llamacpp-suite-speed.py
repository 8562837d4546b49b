#!/usr/bin/env python3
"""llama.cpp's plain greedy decoding (llama-cpp-python) over the first turns of a bench suite, timed as
`kangaroo bench suite` times a turn: prefill, then decode tokens/s after it. For comparing this
project's decoders with llama.cpp on the same prompts (for instance HumanEval's, from
scripts/humaneval-suite.py). The prompt is rendered with the model's ChatML template (Qwen's default
system message when the template has one), as the suite does.

    python3 scripts/llamacpp-suite-speed.py MODEL.gguf SUITE.jsonl [--limit 12] [--max-tokens 256]

With --server URL it asks a running llama-server (llama.cpp's own server, started on the same file
with -t 2) instead, and takes its timings: no Python binding needed.
"""
import argparse
import json
import time
import urllib.request

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("suite")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server", help="a llama-server's URL, e.g. http://127.0.0.1:8397")
    args = parser.parse_args()
    questions = [json.loads(line) for line in open(args.suite)][: args.limit]
    if args.server:
        return by_server(args, questions)
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=args.model, n_ctx=2048, n_batch=512, n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=False, verbose=False)
    template = llm.metadata.get("tokenizer.chat_template", "")
    system = QWEN_SYSTEM if QWEN_SYSTEM in template else None
    prefill_seconds = decode_seconds = 0.0
    decoded = 0
    for question in questions:
        text = chatml(question, system)
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        prefill_seconds += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.max_tokens - 1):
            if token == llm.token_eos():
                break
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            decoded += 1
        decode_seconds += time.perf_counter() - start
    print(f"llama.cpp on {len(questions)} prompts: decode {decoded / decode_seconds:.1f} tokens/s after the prefill "
          f"({decoded} tokens), prefill {prefill_seconds:.1f} s in all")


def chatml(question, system):
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return text + f"<|im_start|>user\n{question['turns'][0]}<|im_end|>\n<|im_start|>assistant\n"


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def by_server(args, questions):
    with urllib.request.urlopen(args.server + "/props", timeout=60) as response:
        template = json.load(response).get("chat_template", "")
    system = QWEN_SYSTEM if QWEN_SYSTEM in template else None
    prefill_seconds = decode_seconds = 0.0
    decoded = 0
    for question in questions:
        # Greedy, no prompt cache: each prompt is processed whole, as above.
        answer = post(args.server + "/completion", {"prompt": chatml(question, system), "n_predict": args.max_tokens,
                                                   "temperature": 0, "cache_prompt": False})
        timings = answer["timings"]
        prefill_seconds += timings["prompt_ms"] / 1000
        decode_seconds += timings["predicted_ms"] / 1000
        decoded += timings["predicted_n"]
    print(f"llama.cpp (llama-server) on {len(questions)} prompts: decode {decoded / decode_seconds:.1f} tokens/s "
          f"({decoded} tokens), prefill {prefill_seconds:.1f} s in all")


if __name__ == "__main__":
    main()
