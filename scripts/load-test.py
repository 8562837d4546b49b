#!/usr/bin/env python3
"""Load test for `kangaroo serve`, loopback only, bounded in requests and time.

Starts the server (or uses --url), then runs --clients concurrent clients that each send --requests
streamed chat completions; every 5th request disconnects after its first token, every 7th is
malformed; --pathological requests with a 32,000-letter prompt go beside them, and GET /v1/models is
probed every 0.2 s. Prints requests served, errors by kind, p50/p95 latency and time to first token,
the probes' latency, and the server's resident memory sampled during the run.

  scripts/load-test.sh            # wrapper: builds, installs the client venv, runs this
"""
import argparse, asyncio, json, os, re, statistics, subprocess, sys, time

import httpx

parser = argparse.ArgumentParser()
parser.add_argument("--binary", default=".build/release/kangaroo")
parser.add_argument("--url", help="use a running server instead of starting one")
parser.add_argument("--clients", type=int, default=8)
parser.add_argument("--requests", type=int, default=20)
parser.add_argument("--max-tokens", type=int, default=32)
parser.add_argument("--queue", type=int, default=4, help="server queue length (small, so that some requests get 503)")
parser.add_argument("--decoder", default="kangaroo")
parser.add_argument("--time-limit", type=float, default=600, help="seconds; the test stops by itself after this")
parser.add_argument("--pathological", type=int, default=2,
                    help="requests with a 32,000-letter word as the prompt, sent beside the clients (each costs a long tokenization)")
args = parser.parse_args()

server = None
if args.url:
    base = args.url
else:
    server = subprocess.Popen([args.binary, "serve", "--host", "127.0.0.1", "--port", "0", "--queue", str(args.queue),
                               "--model-id", "load", "--decoder", args.decoder],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = server.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        sys.exit(f"server did not start: {line}")
    base = match.group(0)
    if not base.startswith("http://127."):
        sys.exit("refusing a non-loopback address")

def rss_mib():
    if server is None:
        return None
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

results = []          # (kind, latency, ttft)
memory = []
probes = []           # latency of GET /v1/models during the run
deadline = time.monotonic() + args.time_limit
prompts = ["Tell me a fact about kangaroos.", "What is 7 times 8?", "Name a colour.", "Write a haiku about the sea."]

async def one(client, c, r):
    i = c * args.requests + r
    body = {"model": "load", "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            "max_tokens": args.max_tokens, "temperature": 0, "stream": True}
    if i % 7 == 3:
        content = b'{"model": "load", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"'  # malformed
        start = time.monotonic()
        resp = await client.post(base + "/v1/chat/completions", content=content)
        results.append((f"malformed -> {resp.status_code}", time.monotonic() - start, None))
        return
    start, ttft = time.monotonic(), None
    try:
        async with client.stream("POST", base + "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                results.append((f"HTTP {resp.status_code}", time.monotonic() - start, None))
                return
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and '"content"' in line and ttft is None:
                    ttft = time.monotonic() - start
                    if i % 5 == 4:
                        results.append(("disconnected early", time.monotonic() - start, ttft))
                        return  # leaving the block closes the connection mid-stream
                if line == "data: [DONE]":
                    break
        results.append(("ok", time.monotonic() - start, ttft))
    except httpx.HTTPError as e:
        results.append((f"client error {type(e).__name__}", time.monotonic() - start, ttft))

async def client_loop(c):
    async with httpx.AsyncClient(timeout=120) as client:
        for r in range(args.requests):
            if time.monotonic() > deadline:
                return
            await one(client, c, r)

async def sample_memory():
    while True:
        value = rss_mib()
        if value is not None:
            memory.append(value)
        await asyncio.sleep(0.5)

async def pathological(client):
    body = {"model": "load", "prompt": "x" * 32000, "max_tokens": 4}
    start = time.monotonic()
    resp = await client.post(base + "/v1/completions", json=body)
    results.append((f"pathological -> {resp.status_code}", time.monotonic() - start, None))

async def probe():
    async with httpx.AsyncClient(timeout=30) as client:
        await client.get(base + "/v1/models")  # the connection is made before the probes are timed
        while True:
            start = time.monotonic()
            await client.get(base + "/v1/models")
            probes.append(time.monotonic() - start)
            await asyncio.sleep(0.2)

async def main():
    sampler = asyncio.create_task(sample_memory())
    prober = asyncio.create_task(probe())
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(client_loop(c) for c in range(args.clients)),
                             *(pathological(client) for _ in range(args.pathological)))
    sampler.cancel()
    prober.cancel()
    return time.monotonic() - started

elapsed = asyncio.run(main())
metrics = httpx.get(base + "/metrics").text
if server is not None:
    server.terminate()
    server.wait(timeout=30)

kinds = {}
for kind, _, _ in results:
    kinds[kind] = kinds.get(kind, 0) + 1
served = [r for r in results if r[0] in ("ok", "disconnected early")]
latencies = sorted(r[1] for r in results if r[0] == "ok")
ttfts = sorted(r[2] for r in served if r[2] is not None)
def pct(values, p):
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")
print(f"{len(results)} requests from {args.clients} clients in {elapsed:.1f} s ({args.max_tokens} tokens each, decoder {args.decoder})")
for kind, n in sorted(kinds.items()):
    print(f"  {kind:28s} {n}")
print(f"latency (complete streams): p50 {pct(latencies, 50):.2f} s, p95 {pct(latencies, 95):.2f} s")
print(f"time to first token:        p50 {pct(ttfts, 50):.2f} s, p95 {pct(ttfts, 95):.2f} s")
if probes:
    print(f"GET /v1/models during the run: p50 {pct(sorted(probes), 50) * 1000:.0f} ms, max {max(probes) * 1000:.0f} ms ({len(probes)} probes)")
if memory:
    print(f"server RSS: start {memory[0]:.0f} MiB, peak {max(memory):.0f} MiB, end {memory[-1]:.0f} MiB ({len(memory)} samples)")
print("server metrics: " + " ".join(l for l in metrics.splitlines() if l.startswith(("kangaroo_rejected", "kangaroo_generated", "kangaroo_tokens_per", "kangaroo_mean"))))
