#!/usr/bin/env python3
"""llama.cpp's plain greedy decoding (llama-cpp-python) over the first turns of a bench suite, timed as
`kangaroo bench suite` times a turn: prefill, then decode tokens/s after it. For comparing this
project's decoders with llama.cpp on the same prompts (for instance HumanEval's, from
scripts/humaneval-suite.py). The prompt is rendered with the model's ChatML template (Qwen's default
system message when the template has one), as the suite does.

    python3 scripts/llamacpp-suite-speed.py MODEL.gguf SUITE.jsonl [--limit 12] [--max-tokens 256]
"""
import argparse
import json
import time

import numpy as np
from llama_cpp import Llama

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("suite")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    llm = Llama(model_path=args.model, n_ctx=2048, n_batch=512, n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=False, verbose=False)
    template = llm.metadata.get("tokenizer.chat_template", "")
    system = QWEN_SYSTEM if QWEN_SYSTEM in template else None
    questions = [json.loads(line) for line in open(args.suite)][: args.limit]
    prefill_seconds = decode_seconds = 0.0
    decoded = 0
    for question in questions:
        text = (f"<|im_start|>system\n{system}<|im_end|>\n" if system else "")
        text += f"<|im_start|>user\n{question['turns'][0]}<|im_end|>\n<|im_start|>assistant\n"
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


if __name__ == "__main__":
    main()
