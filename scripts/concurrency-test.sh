#!/usr/bin/env bash
# Builds the release binary, makes sure the Python client venv exists, and measures throughput with
# 1, 2, 4 and 8 concurrent clients (loopback only; bounded in time). Arguments go to
# scripts/concurrency-test.py.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product kangaroo >&2
python=$(scripts/openai-venv.sh)
exec "$python" scripts/concurrency-test.py --binary .build/release/kangaroo "$@"
