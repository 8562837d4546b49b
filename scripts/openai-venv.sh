#!/usr/bin/env bash
# Prints the python of a venv with the official `openai` client, creating it on first use
# ($KANGAROO_HOME/openai-venv), with websocket-client for driving Chromium through its DevTools
# protocol. Used by the server tests, the chat page test and the load test.
set -euo pipefail
home="${KANGAROO_HOME:-$HOME/.cache/kangaroo}"
venv="$home/openai-venv"
if ! "$venv/bin/python" -c "import openai, httpx, websocket" >/dev/null 2>&1; then
    mkdir -p "$home"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "openai>=1.0" httpx websocket-client >&2
fi
echo "$venv/bin/python"
