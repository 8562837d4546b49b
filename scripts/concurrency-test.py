#!/usr/bin/env python3
"""Throughput under concurrent users, with the official `openai` client, loopback only.

Starts `kangaroo serve` (or llama.cpp's `llama-server` with --llama-server, on the same file), then for
each client count (1, 2, 4, 8 by default) and each decoder, interleaved, runs that many concurrent
streaming clients that send chat completions one after the other for --seconds (Spec-Bench's first
turns, the same ones in the same order for every decoder and client count, greedy, --max-tokens
each; requests under way at the end finish). Every third client disconnects mid-stream (after
--disconnect-after streamed pieces, half of --max-tokens by default) and asks again at once, so that
N clients keep N requests under way (--pause-after-leaving: a second first, as a user who left
might). The server's queue is small
(--queue) so that 8 clients also meet the intended 503s, which are counted and retried after the
second the server's Retry-After asks.

Prints, per decoder and client count: aggregate tokens/s (tokens the clients received over the wall
time), each client's decode tokens/s against the same decoder with one client, p50/p95 time to first
token, outcomes; then the server's resident memory and a check that it still answers.

  scripts/concurrency-test.sh [--decoders plain,kangaroo] [--clients 1,2,4,8] ...
"""
import argparse, asyncio, json, os, re, statistics, subprocess, sys, time

import httpx
import openai

parser = argparse.ArgumentParser()
parser.add_argument("--binary", default=".build/release/kangaroo")
parser.add_argument("--model", help="GGUF file or known model name (default: kangaroo's default model)")
parser.add_argument("--llama-server", help="run llama.cpp's llama-server binary instead (decoder label 'llama.cpp'); needs --model as a file")
parser.add_argument("--parallel", type=int, default=4, help="sequences the server decodes at once")
parser.add_argument("--queue", type=int, default=2, help="server queue beyond --parallel (kangaroo only)")
parser.add_argument("--decoders", default="plain,kangaroo")
parser.add_argument("--clients", default="1,2,4,8")
parser.add_argument("--seconds", type=float, default=15, help="how long each client keeps sending requests, per client count and decoder")
parser.add_argument("--max-tokens", type=int, default=128)
parser.add_argument("--disconnect-after", type=int, help="streamed pieces a disconnecting client reads (default: half of --max-tokens)")
parser.add_argument("--pause-after-leaving", type=float, default=0, help="seconds a client that disconnected waits before asking again")
parser.add_argument("--questions", default="../shared/data/spec-bench/question.jsonl")
parser.add_argument("--time-limit", type=float, default=1200, help="seconds; the test stops by itself after this")
parser.add_argument("--prefill-chunk", type=int, help="the server's --prefill-chunk (kangaroo only)")
parser.add_argument("--long-prompt", type=int, default=0, metavar="WORDS",
                    help="instead: while 3 clients stream, a prompt of this many words arrives; print their longest pause between pieces")
args = parser.parse_args()
if args.disconnect_after is None:
    args.disconnect_after = max(1, args.max_tokens // 2)

questions = [json.loads(line)["turns"][0] for line in open(args.questions) if line.strip()]
deadline = time.monotonic() + args.time_limit

if args.llama_server:
    if not args.model or not os.path.exists(args.model):
        sys.exit("--llama-server needs --model FILE")
    command = [args.llama_server, "-m", args.model, "--host", "127.0.0.1", "--port", "8397", "-t", "2",
               "--parallel", str(args.parallel), "-c", str(4096 * args.parallel), "--log-disable"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = "http://127.0.0.1:8397"
    for _ in range(600):
        try:
            if httpx.get(base + "/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    decoders = ["llama.cpp"]
else:
    command = [args.binary, "serve", "--host", "127.0.0.1", "--port", "0", "--queue", str(args.queue),
               "--parallel", str(args.parallel), "--model-id", "load"]
    if args.model:
        command += ["--model", args.model]
    if args.prefill_chunk:
        command += ["--prefill-chunk", str(args.prefill_chunk)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []  # a first start may measure forward costs before the banner
    while not lines or "http://" not in lines[-1]:
        lines.append(server.stderr.readline())
        if not lines[-1]:
            sys.exit(f"server did not start: {lines}")
    match = re.search(r"http://127\.0\.0\.1:\d+", lines[-1])
    print(server.stderr.readline().strip())
    base = match.group(0)
    decoders = args.decoders.split(",")
if not base.startswith("http://127."):
    sys.exit("refusing a non-loopback address")

def rss_mib():
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
next_question = 0

async def one(decoder, disconnect):
    """One streamed request: (outcome, time to first token, tokens received, decode tokens/s)."""
    global next_question
    question = questions[next_question % len(questions)]
    next_question += 1
    extra = {} if decoder == "llama.cpp" else {"kangaroo": {"decoder": decoder}}
    start = time.monotonic()
    first = last = None
    pieces = tokens = 0
    try:
        stream = await client.chat.completions.create(
            model="load", messages=[{"role": "user", "content": question}], max_tokens=args.max_tokens,
            temperature=0, stream=True, stream_options={"include_usage": True}, extra_body=extra)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.monotonic()
                first = first or now
                last = now
                pieces += 1
                if disconnect and pieces >= args.disconnect_after:
                    await stream.close()
                    # Pieces may hold several tokens (a round's); counted as one each: a lower bound.
                    return ("disconnected", first - start, pieces, None)
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        tokens = tokens or pieces
        speed = (tokens - 1) / (last - first) if first and last > first and tokens > 1 else None
        return ("ok", first - start if first else None, tokens, speed)
    except openai.APIStatusError as e:
        return (f"HTTP {e.status_code}", None, 0, None)
    except openai.APIError as e:
        return (f"client error {type(e).__name__}", None, 0, None)

async def client_loop(decoder, c, results, until):
    while time.monotonic() < min(until, deadline):
        result = await one(decoder, disconnect=c % 3 == 2)
        results.append((c,) + result)
        if result[0] == "HTTP 503":
            await asyncio.sleep(1.0)  # the server's Retry-After
        elif result[0] == "disconnected":
            await asyncio.sleep(args.pause_after_leaving)

memory = []
async def sample_memory():
    while True:
        memory.append(rss_mib())
        await asyncio.sleep(0.5)

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")

async def main():
    sampler = asyncio.create_task(sample_memory())
    # Warm-up: each decoder once (a slot's drafter is made on first use).
    for decoder in decoders:
        await one(decoder, disconnect=False)
    solo = {}
    rows = []
    global next_question
    phase_start = len(decoders)
    for n in [int(x) for x in args.clients.split(",")]:
        for decoder in decoders:
            # Every phase and decoder draws from the same questions, in the same order.
            next_question = phase_start
            results = []
            started, cpu = time.monotonic(), time.process_time()
            await asyncio.gather(*(client_loop(decoder, c, results, started + args.seconds) for c in range(n)))
            wall = time.monotonic() - started
            client_cpu = (time.process_time() - cpu) / wall
            tokens = sum(r[3] for r in results)
            speeds = {}
            for c, outcome, ttft, got, speed in results:
                if speed:
                    speeds.setdefault(c, []).append(speed)
            per_client = [statistics.mean(v) for v in speeds.values()]
            if n == 1 and per_client:
                solo[decoder] = per_client[0]
            kinds = {}
            for r in results:
                kinds[r[1]] = kinds.get(r[1], 0) + 1
            rows.append((decoder, n, tokens / wall, per_client, [r[2] for r in results if r[2] is not None], kinds, client_cpu))
    sampler.cancel()
    return solo, rows

async def stall():
    """Three clients stream; once they are under way a long prompt arrives. Their longest pause
    between two pieces while it is processed, against their usual pause."""
    gaps = []
    async def streaming(c):
        stream = await client.chat.completions.create(
            model="load", messages=[{"role": "user", "content": questions[c]}], max_tokens=args.max_tokens, temperature=0,
            stream=True, extra_body={"kangaroo": {"decoder": decoders[0]}} if decoders[0] != "llama.cpp" else {})
        last = None
        async for chunk in stream:
            now = time.monotonic()
            if last is not None:
                gaps.append((last, now))
            last = now
    async def long_request():
        await asyncio.sleep(1.0)
        start = time.monotonic()
        text = " ".join(questions[i % len(questions)].split()[0] for i in range(args.long_prompt))
        await client.chat.completions.create(model="load", messages=[{"role": "user", "content": text}], max_tokens=1, temperature=0)
        return start, time.monotonic()
    results = await asyncio.gather(*(streaming(c) for c in range(3)), long_request())
    start, end = results[-1]
    during = [b - a for a, b in gaps if b > start and a < end]
    before = [b - a for a, b in gaps if b <= start]
    print(f"a {args.long_prompt}-word prompt took {end - start:.2f} s to answer; meanwhile 3 streaming clients' longest pause "
          f"between pieces: {max(during) * 1000 if during else float('nan'):.0f} ms (before it: median "
          f"{statistics.median(before) * 1000 if before else float('nan'):.0f} ms, longest {max(before) * 1000 if before else float('nan'):.0f} ms)")

if args.long_prompt:
    memory.append(rss_mib())
    asyncio.run(stall())
    server.terminate()
    sys.exit(0)

solo, rows = asyncio.run(main())
print(f"clients send requests for {args.seconds:.0f} s, {args.max_tokens} tokens at most, every third client disconnects after "
      f"{args.disconnect_after} pieces and asks again after {args.pause_after_leaving:g} s; server: --parallel {args.parallel}; "
      f"client CPU: the share of one core this Python process used (it runs on the server's cores)")
print(f"{'decoder':10s} {'clients':>7s} {'aggregate tok/s':>15s} {'× 1 client':>10s} {'client tok/s (× solo)':>28s} "
      f"{'TTFT p50':>8s} {'p95':>6s} {'client CPU':>10s}  outcomes")
aggregate_one = {d: a for d, n, a, *_ in rows if n == 1}
for decoder, n, aggregate, per_client, ttfts, kinds, client_cpu in rows:
    ratio = aggregate / aggregate_one[decoder] if aggregate_one.get(decoder) else float("nan")
    clients = ", ".join(f"{s:.0f}" for s in per_client)
    worst = min(per_client) / solo[decoder] if per_client and decoder in solo else float("nan")
    outcomes = " ".join(f"{k}:{v}" for k, v in sorted(kinds.items()))
    print(f"{decoder:10s} {n:7d} {aggregate:15.1f} {ratio:10.2f} {clients + f' (min {worst:.2f})':>28s} "
          f"{pct(ttfts, 50):8.2f} {pct(ttfts, 95):6.2f} {client_cpu:10.2f}  {outcomes}")
print(f"server RSS: start {memory[0]:.0f} MiB, peak {max(memory):.0f} MiB, end {memory[-1]:.0f} MiB")
after = httpx.post(base + "/v1/chat/completions", json={"model": "load", "max_tokens": 8, "temperature": 0,
                                                          "messages": [{"role": "user", "content": "Say hi."}]}, timeout=60)
print(f"afterwards the server answers: HTTP {after.status_code}")
if not args.llama_server:
    metrics = httpx.get(base + "/metrics").text
    print("server metrics: " + " ".join(l for l in metrics.splitlines()
                                        if l.startswith(("kangaroo_rejected", "kangaroo_cancelled", "kangaroo_sequences_per_forward_sum",
                                                         "kangaroo_sequences_per_forward_count"))))
server.terminate()
server.wait(timeout=30)
