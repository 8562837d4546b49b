"""Time to first token, turn by turn, of one conversation (six user turns: Spec-Bench's first three
questions, both turns each, 128-token answers, Kangaroo) through `kangaroo serve`, for two binaries
interleaved turn by turn (for instance the build before a change and after it); prints each turn's
prompt tokens, time to first token and prefill time, and whether both gave the same answers.

  python3 scripts/multiturn-ttft.py OLD/kangaroo NEW/kangaroo   (with the openai client: scripts/openai-venv.sh)
"""
import json, pathlib, re, subprocess, sys, time
import openai
binaries = sys.argv[1:3]
questions = [json.loads(l)["turns"] for l in open(pathlib.Path(__file__).resolve().parent.parent.parent / "shared/data/spec-bench/question.jsonl")][:40]
servers, clients = [], []
for b in binaries:
    p = subprocess.Popen([b, "serve", "--port", "0", "--model-id", "m", "--decoder", "kangaroo"], stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    while "http://" not in line: line = p.stderr.readline()
    servers.append(p); clients.append(openai.OpenAI(base_url=re.search(r"http://\S+", line).group(0) + "/v1", api_key="x"))
turns = [t for q in questions[:3] for t in q]  # 6 user turns, one conversation
history = [[], []]
results = [[], []]
for i, text in enumerate(turns):
    for k in range(2):
        history[k].append({"role": "user", "content": text})
        start = time.monotonic(); first = None; content = ""; stats = None
        for c in clients[k].chat.completions.create(model="m", messages=history[k], max_tokens=128, temperature=0, stream=True):
            if c.choices and c.choices[0].delta.content:
                first = first or time.monotonic(); content += c.choices[0].delta.content
            extra = (c.model_extra or {}).get("kangaroo")
            if extra and "prefill_ms" in extra: stats = extra; usage = c.usage
        history[k].append({"role": "assistant", "content": content})
        results[k].append((usage.prompt_tokens, round((first - start) * 1000), round(stats["prefill_ms"])))
for k in range(2):
    print(binaries[k], "turns (prompt tokens, TTFT ms, prefill ms):", results[k])
print("same answers:", history[0] == history[1])
for p in servers: p.terminate()
