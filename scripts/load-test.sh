#!/usr/bin/env bash
# Builds the release binary, makes sure the Python client venv exists, and runs the load test
# (loopback only; bounded in requests and time). Extra arguments go to scripts/load-test.py.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product kangaroo >&2
python=$(scripts/openai-venv.sh)
exec "$python" scripts/load-test.py --binary .build/release/kangaroo "$@"
