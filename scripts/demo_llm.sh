#!/usr/bin/env bash
# EQUAL with a real (tiny) LLM: SmolLM2-135M-Instruct served by llama-cpp-python over the
# OpenAI protocol, on a ~300-document slice of the shared corpus, 30 documents extracted.
#
#   bash scripts/demo_llm.sh            # (make demo-llm) needs: make setup-llm
#   N_DOCS=500 OUT=runs/x bash scripts/demo_llm.sh --budget 50   # extra flags go to `equal run`
#
# The slice, the run folder and the server log are written under runs/ (git-ignored).
# The server is stopped when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
EQUAL=${EQUAL:-.venv/bin/equal}
SHARED=${SHARED:-../shared/data}
OUT=${OUT:-runs/demo-llm}
N_DOCS=${N_DOCS:-300}
PORT=${PORT:-0}

mkdir -p runs
SLICE=runs/demo-llm-corpus.jsonl
LOG=runs/demo-llm-server.log
head -n "$N_DOCS" "$SHARED/corpus.jsonl" > "$SLICE"   # the corpus is shuffled: its head is a random slice
echo "corpus slice: $SLICE ($(wc -l < "$SLICE") documents)"

URL_FILE=$(mktemp)
"$PY" scripts/llama_server.py --port "$PORT" --n_ctx 2048 --n_threads 2 --log "$LOG" > "$URL_FILE" &
SERVER_PID=$!
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true   # the launcher stops llama_cpp.server on SIGTERM
  wait "$SERVER_PID" 2>/dev/null || true
  rm -f "$URL_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

URL=""
for _ in $(seq 1 360); do
  URL=$(head -n 1 "$URL_FILE" 2>/dev/null || true)
  [ -n "$URL" ] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the llama server did not start; see $LOG" >&2
    exit 1
  fi
  sleep 0.5
done
[ -n "$URL" ] || { echo "the llama server did not answer within 3 minutes; see $LOG" >&2; exit 1; }
echo "llama server (SmolLM2-135M-Instruct) at $URL"

# Limits sized for a 135M model on 2 CPU cores (2048-token context). One request at a time: the server
# answers one at a time anyway, and can die on two at once (abetlen/llama-cpp-python#1367).
"$EQUAL" run --corpus "$SLICE" --reference "$SHARED/reference_math.jsonl" --out "$OUT" \
  --extractor openai --llm-base-url "$URL" --llm-model smollm2 --budget 30 \
  --set extract.llm.max_tokens=256 --set extract.llm.max_doc_tokens=600 \
  --set extract.llm.concurrency=1 --set extract.llm.timeout=300 "$@"
