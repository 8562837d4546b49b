#!/usr/bin/env python3
"""Writes llama.cpp's view of a GGUF model into a test fixture: for each prompt, llama.cpp's token ids,
its greedy continuation, and the top-5 log-probabilities at every position of prompt + continuation.
The tests (ModelFamilyTests) hold our engine to these values without compiling llama.cpp in CI.

    python3 -m pip install llama-cpp-python==0.3.36      # compiles llama.cpp (several minutes)
    python3 scripts/llamacpp-reference.py MODEL.gguf Tests/fixtures/NAME.json
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

CHATML_QWEN = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
PROMPTS = [
    CHATML_QWEN + "<|im_start|>user\nWrite a Python function that checks whether a number is prime.<|im_end|>\n<|im_start|>assistant\n",
    CHATML_QWEN + "<|im_start|>user\nWhy is the sky blue? Answer in two sentences.<|im_end|>\n<|im_start|>assistant\n",
    'def has_close_elements(numbers: list[float], threshold: float) -> bool:\n    """ Check if in given list of numbers, are any two numbers closer to each other than\n    given threshold.\n    """\n',
    "The 3 largest cities of Germany are Berlin (3,878,100 people), Hamburg and",
]
CONTINUATION = 32


def main():
    model_path, out_path = sys.argv[1], sys.argv[2]
    llm = Llama(model_path=model_path, n_ctx=1024, logits_all=True, n_threads=2, verbose=False, seed=0)
    cases = []
    for text in PROMPTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        greedy = []
        for _ in range(CONTINUATION):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(token)
            if token == llm.token_eos():
                break
            llm.eval([token])
        sequence = ids + greedy
        llm.reset()
        llm.eval(sequence)
        positions = []
        for p in range(len(sequence)):
            logits = llm.scores[p].astype(np.float64)
            logprobs = logits - (np.log(np.sum(np.exp(logits - logits.max()))) + logits.max())
            top = np.argsort(-logprobs)[:5]
            positions.append([[int(t), round(float(logprobs[t]), 5)] for t in top])
        cases.append({"text": text, "ids": ids, "greedy": greedy, "top5": positions})
    with open(out_path, "w") as f:
        json.dump({"model": model_path.rsplit("/", 1)[-1], "llama_cpp_python": __import__("llama_cpp").__version__,
                   "cases": cases}, f)
        f.write("\n")
    print(f"wrote {out_path}: {len(cases)} prompts")


if __name__ == "__main__":
    main()
