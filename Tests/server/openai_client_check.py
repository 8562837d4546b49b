"""Drives a running `kangaroo serve` with the official openai client; exits non-zero on any failure.

usage: openai_client_check.py BASE_URL MODEL_ID KANGAROO_BINARY
"""
import json
import subprocess
import sys

import httpx
import openai

base_url, model, binary = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
failures = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message)
    if not condition:
        failures.append(message)


def cli(*args):
    out = subprocess.run([binary, "generate", "--json", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


# Models.
ids = [m.id for m in client.models.list().data]
check(ids == [model], f"models.list names the model: {ids}")

# Completions, plain and streamed, equal `kangaroo generate` for the same greedy request.
prompt = "The capital of France is"
expected = cli("--prompt", prompt, "--max-tokens", "20")["text"]
for decoder in ["plain", "kangaroo", "layerskip", "specdec"]:
    r = client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0,
                                  extra_body={"kangaroo": {"decoder": decoder, "threshold": 0.3, "max_draft": 4}})
    check(r.choices[0].text == expected, f"completion ({decoder}) equals kangaroo generate: {r.choices[0].text!r}")
    check(r.usage.completion_tokens > 0 and r.usage.prompt_tokens == 5, f"usage block ({decoder}): {r.usage}")
    stats = (r.model_extra or {}).get("kangaroo", {})
    check(stats.get("decoder") == decoder, f"statistics name the decoder ({decoder}): {stats.get('decoder')}")
    check(stats.get("lossless") is True, f"exact decoding says lossless ({decoder}): {stats.get('lossless')}")
    if decoder != "plain":
        check(stats.get("rounds", 0) > 0 and stats.get("mean_accepted_tokens", 0) >= 1, f"acceptance statistics ({decoder})")

# SpecDec's relaxed verification is lossy and says so; it needs greedy decoding and valid β, τ.
relaxed = {"decoder": "specdec", "relaxed_verification": {"beta": 5, "tau": 3}}
expected_relaxed = cli("--prompt", prompt, "--max-tokens", "20", "--decoder", "specdec", "--relaxed-verification", "--beta", "5", "--tau", "3")
check(expected_relaxed["lossless"] is False, "generate --relaxed-verification reports lossless false")
r = client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0, extra_body={"kangaroo": relaxed})
check(r.choices[0].text == expected_relaxed["text"], f"relaxed completion equals kangaroo generate --relaxed-verification: {r.choices[0].text!r}")
check((r.model_extra or {}).get("kangaroo", {}).get("lossless") is False, "a relaxed response says lossless false")

pieces = []
finish = None
for chunk in client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0, stream=True):
    pieces.append(chunk.choices[0].text)
    finish = chunk.choices[0].finish_reason or finish
check("".join(pieces) == expected, f"streamed completion equals kangaroo generate: {''.join(pieces)!r}")
check(finish == "length", f"finish_reason length: {finish}")

# Chat completions, plain and streamed.
question = "What is 12 times 7?"
expected_chat = cli("--chat", "--prompt", question, "--max-tokens", "24")["text"]
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0,
                                   extra_body={"kangaroo": {"decoder": "kangaroo"}})
check(r.choices[0].message.content == expected_chat, f"chat completion equals kangaroo generate --chat: {r.choices[0].message.content!r}")
check(r.choices[0].message.role == "assistant", "chat message role")
streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0, stream=True))
check(streamed == expected_chat, f"streamed chat equals kangaroo generate --chat: {streamed!r}")
# Each streamed piece says whether it came from accepted drafts: Kangaroo's drafts are accepted on
# this prompt, plain decoding has none, and either way the full model chooses some tokens itself.
for decoder in ["kangaroo", "plain"]:
    origins = [(c.model_extra or {}).get("kangaroo", {}).get("drafted") for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0, stream=True,
        extra_body={"kangaroo": {"decoder": decoder}}) if c.choices[0].delta.content]
    check(None not in origins and False in origins and ((True in origins) == (decoder == "kangaroo")),
          f"streamed pieces mark accepted drafts ({decoder}): {origins}")

# Copy drafts per request: on or off, the same text; only with them are copies drafted.
passage = "Repeat the following text exactly: The old farmer watches the river from the porch of his small red house every morning before breakfast."
expected_copy = cli("--chat", "--prompt", passage, "--max-tokens", "32")["text"]
for n in [0, 2]:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": passage}], max_tokens=32, temperature=0,
                                       extra_body={"kangaroo": {"decoder": "kangaroo", "copy_ngram": n}})
    copied = (r.model_extra or {}).get("kangaroo", {}).get("copied_drafts", -1)
    check(r.choices[0].message.content == expected_copy, f"copy_ngram {n}: equals kangaroo generate --chat: {r.choices[0].message.content!r}")
    check(copied == 0 if n == 0 else copied > 0, f"copy_ngram {n}: copied drafts {copied}")

# Stop strings, seeds, logprobs.
r = client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0, stop=["\n"])
check(r.choices[0].text == expected.split("\n")[0] and r.choices[0].finish_reason == "stop", f"stop string: {r.choices[0].text!r}")
a = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=1, seed=7).choices[0].text
b = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=1, seed=7).choices[0].text
check(a == b, "same seed, same sampled text")
r = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, logprobs=3)
lp = r.choices[0].logprobs
check(lp is not None and len(lp.tokens) == 4 and len(lp.top_logprobs[0]) == 3, "completion logprobs")
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0,
                                   logprobs=True, top_logprobs=2)
check(len(r.choices[0].logprobs.content) == 3 and len(r.choices[0].logprobs.content[0].top_logprobs) == 2, "chat logprobs")

# Under load: requests sent together (more than --parallel, different decoders, one sampled with a
# seed, one streamed) get exactly what each gets alone, and the batch decoded several at once.
from concurrent.futures import ThreadPoolExecutor
load = [("Why is the sky blue?", "kangaroo", 0, False), ("Name three fruits.", "plain", 0, True),
        ("Write a haiku about the sea.", "lookup", 0, False), ("Count from one to ten.", "kangaroo", 0.8, False),
        ("What is the capital of Italy?", "layerskip", 0, False), ("Tell me about kangaroos.", "kangaroo", 0, True)]
def ask(item):
    text, decoder, temperature, stream = item
    kwargs = dict(model=model, messages=[{"role": "user", "content": text}], max_tokens=40, temperature=temperature, seed=5,
                  extra_body={"kangaroo": {"decoder": decoder}})
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs))
    return client.chat.completions.create(**kwargs).choices[0].message.content
def forward_sizes():
    lines = httpx.get(base_url + "/metrics").text.splitlines()
    return [float(l.split()[1]) for l in lines if l.startswith(("kangaroo_sequences_per_forward_sum", "kangaroo_sequences_per_forward_count"))]
alone = [ask(item) for item in load]
before = forward_sizes()
with ThreadPoolExecutor(len(load)) as pool:
    together = list(pool.map(ask, load))
after = forward_sizes()
for item, a, b in zip(load, alone, together):
    check(a == b, f"sent together equals sent alone ({item[1]}, temperature {item[2]}, stream {item[3]}): {b[:40]!r}")
mean = (after[0] - before[0]) / max(1, after[1] - before[1])
check(mean > 1.5, f"requests sent together share forwards: {mean:.2f} sequences per forward")

# A conversation's next turn: its earlier turns stay in the cache (reported as cached prompt tokens)
# and the answer is the one a fresh start gives.
turn1 = [{"role": "user", "content": "Name three colours."}]
a1 = client.chat.completions.create(model=model, messages=turn1, max_tokens=16, temperature=0).choices[0].message.content
turn2 = turn1 + [{"role": "assistant", "content": a1}, {"role": "user", "content": "Which is the darkest?"}]
r = client.chat.completions.create(model=model, messages=turn2, max_tokens=16, temperature=0)
cached = r.usage.prompt_tokens_details.cached_tokens if r.usage.prompt_tokens_details else 0
check(cached > 0, f"the next turn's earlier turns come from the cache: {cached} of {r.usage.prompt_tokens} prompt tokens")
import tempfile
with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
    f.write(json.dumps({"messages": turn2, "max_tokens": 16}) + "\n")
    f.flush()
    fresh = cli("--prompts-file", f.name)["text"]
check(r.choices[0].message.content == fresh, f"the next turn equals a fresh start: {fresh!r}")

# Errors: OpenAI-style JSON with 4xx codes.
def expect_error(call, status, what):
    try:
        call()
        check(False, f"{what}: no error")
    except openai.APIStatusError as e:
        body = e.response.json()
        check(e.status_code == status and "message" in body.get("error", {}), f"{what}: {e.status_code} {body['error'].get('message')}")

expect_error(lambda: client.completions.create(model="no-such-model", prompt="x", max_tokens=2), 404, "unknown model")
expect_error(lambda: client.completions.create(model=model, prompt="x", max_tokens=-1), 400, "negative max_tokens")
expect_error(lambda: client.completions.create(model=model, prompt="x", max_tokens=10**9), 400, "absurd max_tokens")
expect_error(lambda: client.completions.create(model=model, prompt="x " * 5000, max_tokens=2), 400, "prompt longer than the context")
expect_error(lambda: client.chat.completions.create(model=model, messages=[], max_tokens=2), 400, "empty messages")
expect_error(lambda: client.completions.create(model=model, prompt="x", max_tokens=2, extra_body={"temperature": "hot"}), 400, "wrong type")
expect_error(lambda: client.completions.create(model=model, prompt="x", max_tokens=2, extra_body={"kangaroo": {"copy_ngram": 99}}), 400,
             "copy_ngram out of range")
expect_error(lambda: client.completions.create(model=model, prompt="x", max_tokens=2, temperature=0.7,
                                               extra_body={"kangaroo": {"relaxed_verification": {"beta": 5, "tau": 3}}}), 400,
             "relaxed verification while sampling")
expect_error(lambda: client.completions.create(model=model, prompt="x", max_tokens=2, temperature=0,
                                               extra_body={"kangaroo": {"relaxed_verification": {"beta": 0, "tau": 3}}}), 400,
             "relaxed verification with beta 0")
expect_error(lambda: client.completions.create(model=model, prompt="x", max_tokens=2, extra_body={"kangaroo": {"threshold": 1.5}}), 400,
             "threshold out of range")
for stream in [False, True]:
    raw = httpx.post(base_url + "/v1/completions",
                     json={"model": model, "prompt": "x", "max_tokens": 2, "stream": stream, "kangaroo": {"max_draft": 17}})
    check(raw.status_code == 400 and "max_draft" in raw.text, f"max_draft above the range (stream {stream}): {raw.status_code}")
raw = httpx.post(base_url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
check(raw.status_code == 400 and "error" in raw.json(), f"malformed JSON: {raw.status_code}")
raw = httpx.post(base_url + "/v1/completions", content=b'{"model": "' + model.encode() + b'", "prompt": "\xff"}')
check(raw.status_code == 400, f"invalid UTF-8: {raw.status_code}")
raw = httpx.post(base_url + "/v1/completions", content=b"x" * (2 << 20))
check(raw.status_code == 413, f"oversized body: {raw.status_code}")
check(httpx.get(base_url + "/health").json() == {"status": "ok"}, "health")
metrics = httpx.get(base_url + "/metrics").text
check("kangaroo_generated_tokens_total" in metrics and "kangaroo_mean_accepted_tokens" in metrics, "metrics")

# A client that opens a connection and never finishes its header is cut off after the idle timeout
# (the server runs with --idle-timeout 2), while /v1/models keeps answering.
import socket, time, urllib.parse
address = urllib.parse.urlparse(base_url)
slow = socket.create_connection((address.hostname, address.port))
slow.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
slow.settimeout(30)
begin = time.time()
check(httpx.get(base_url + "/v1/models").status_code == 200, "models answer while a header is unfinished")
try:
    closed = slow.recv(1) == b""
except OSError:
    closed = True
check(closed and time.time() - begin < 20, f"an unfinished header is cut off after the idle timeout ({time.time() - begin:.1f} s)")
slow.close()

# A body trickled in a byte at a time is cut off after the same timeout: each byte resets the idle
# timer, but the request must arrive whole in time.
trickle = socket.create_connection((address.hostname, address.port))
trickle.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
begin, closed = time.time(), False
while time.time() - begin < 20 and not closed:
    try:
        trickle.sendall(b" ")
        time.sleep(0.5)
    except OSError:
        closed = True
check(closed and time.time() - begin < 15, f"a trickled body is cut off ({time.time() - begin:.1f} s)")
trickle.close()

# HTTP/1.0 without keep-alive: the response says Connection: close and the connection closes after it.
old = socket.create_connection((address.hostname, address.port))
old.settimeout(10)
old.sendall(b"GET /health HTTP/1.0\r\n\r\n")
received = b""
while True:
    try:
        chunk = old.recv(4096)
    except OSError:
        break
    if not chunk:
        break
    received += chunk
old.close()
check(b'{"status":"ok"}' in received and b"connection: close" in received.lower(), f"HTTP/1.0 is answered and closed: {received[:200]!r}")

# A client that goes away cancels its generation, streamed or not (counted in /metrics).
def cancelled_total():
    line = next(l for l in httpx.get(base_url + "/metrics").text.splitlines() if l.startswith("kangaroo_cancelled_total "))
    return int(line.split()[1])
counting = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
for stream in [False, True]:
    before = cancelled_total()
    body = json.dumps({"model": model, "prompt": counting, "max_tokens": 1500, "temperature": 0, "stream": stream}).encode()
    leaving = socket.create_connection((address.hostname, address.port))
    leaving.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.5)
    leaving.close()
    deadline = time.time() + 20
    while cancelled_total() == before and time.time() < deadline:
        time.sleep(0.1)
    check(cancelled_total() == before + 1, f"a client that leaves cancels its generation (stream {stream})")

print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
