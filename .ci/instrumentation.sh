#!/usr/bin/env bash
# Drives real third-party instrumentation through our processor, one venv per
# instrumentation (their pins conflict): .venvs/<name> gets the project (editable) and
# tests/instrumentation/requirements-<name>.txt, then runs only
# tests/instrumentation/test_<name>.py. Exits non-zero if any venv fails to build or any
# test fails.
#
#   bash .ci/instrumentation.sh                 # all of ALL below
#   bash .ci/instrumentation.sh traceloop       # one (openai-v2 | traceloop | openinference
#                                               #      | litellm | litellm-proxy | vercel-ai
#                                               #      | vercel-ai-7
#                                               #      | pydantic-ai | openlit | langchain
#                                               #      | langgraph-traceloop)
#
# vercel-ai and vercel-ai-7 are Node applications (tests/instrumentation/node: the Vercel AI
# SDK 6, and tests/instrumentation/node-ai7: AI SDK 7 with @ai-sdk/otel, each with the
# OpenTelemetry JS SDK, pinned by its package-lock.json): besides its venv (which only runs
# pytest, the fake OpenAI server and the service), the script runs `npm ci --prefer-offline`
# there, alongside the pip installs; it needs node (>= 20.6) and npm on PATH.
#
# Idempotent and fast on a re-run: a venv is (re)installed only when its requirements file,
# pyproject.toml, the repo's path or the interpreter changed (a stamp file records them);
# the editable install picks up source changes without reinstalling. Likewise node_modules
# is reinstalled only when package-lock.json or the node/npm versions changed (a stamp in
# node_modules records them); npm's own cache (~/.npm) makes a reinstall offline. Set PYTHON
# to choose the interpreter (default: python3.11, else python3; needs >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ALL=(openai-v2 traceloop openinference litellm litellm-proxy vercel-ai vercel-ai-7 pydantic-ai
     openlit langchain langgraph-traceloop)
# The instrumentations that are Node projects, and their directory (npm ci there).
declare -A NODE_PROJECT=([vercel-ai]=tests/instrumentation/node
                         [vercel-ai-7]=tests/instrumentation/node-ai7)
if [ "$#" -gt 0 ]; then NAMES=("$@"); else NAMES=("${ALL[@]}"); fi

if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "instrumentation: $PYTHON is older than Python 3.10" >&2
  exit 1
}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

make_venv() {  # make_venv DIR: python -m venv, or virtualenv where venv/ensurepip is missing
  "$PYTHON" -m venv "$1" 2>/dev/null && return 0
  rm -rf "$1"
  if ! "$PYTHON" -m virtualenv --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q virtualenv || return 1
  fi
  "$PYTHON" -m virtualenv -q "$1"
}

stamp_of() {  # what a venv was built from: requirements, project metadata, path, interpreter
  { cat "tests/instrumentation/requirements-$1.txt" pyproject.toml; echo "$ROOT"; "$PYTHON" -VV; } \
    | sha256sum | cut -c1-64
}

install_requirements() {  # NAME: a fresh .venvs/NAME with the pinned requirements
  # (explicit `|| return`: errexit does not apply inside a function called from a condition)
  local venv=.venvs/$1 req=tests/instrumentation/requirements-$1.txt
  echo "instrumentation[$1]: installing $req into $venv"
  rm -rf "$venv"
  make_venv "$venv" || return 1
  "$venv/bin/python" -m pip install -q -r "$req" || return 1
}

install_project() {  # NAME: the project, editable, its dependencies held to the pins
  local venv=.venvs/$1 req=tests/instrumentation/requirements-$1.txt
  "$venv/bin/python" -m pip install -q -e . -c "$req" || return 1
  "$venv/bin/python" -m pip check || return 1
  stamp_of "$1" > "$venv/.llm-token-exporter-stamp"
}

mkdir -p .venvs
for name in "${NAMES[@]}"; do
  if [ ! -f "tests/instrumentation/requirements-$name.txt" ]; then
    echo "instrumentation: unknown instrumentation '$name' (one of: ${ALL[*]})" >&2
    exit 2
  fi
done

node_stamp_of() {  # DIR: what its node_modules was installed from: the lock, node, npm
  { cat "$1/package-lock.json"; node --version; npm --version; } | sha256sum | cut -c1-64
}

npm_install() {  # DIR: npm ci, from npm's cache where it can; the stamp last
  echo "instrumentation: npm ci in $1"
  (cd "$1" && npm ci --prefer-offline --no-audit --no-fund --loglevel=warn) || return 1
  node_stamp_of "$1" > "$1/node_modules/.llm-token-exporter-stamp"
}

failed=()
stale=()
stale_node=()
for name in "${NAMES[@]}"; do
  venv=.venvs/$name
  if [ -x "$venv/bin/python" ] \
      && [ "$(cat "$venv/.llm-token-exporter-stamp" 2>/dev/null)" = "$(stamp_of "$name")" ]; then
    echo "instrumentation[$name]: venv up to date"
  else
    stale+=("$name")
  fi
  dir=${NODE_PROJECT[$name]:-}
  [ -n "$dir" ] || continue
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "instrumentation[$name]: needs node (>= 20.6) and npm on PATH" >&2
    exit 1
  fi
  if [ "$(cat "$dir/node_modules/.llm-token-exporter-stamp" 2>/dev/null)" = "$(node_stamp_of "$dir")" ]; then
    echo "instrumentation[$name]: node_modules up to date"
  else
    stale_node+=("$name")
  fi
done

show_log() {  # the log without pip's noise about this machine's optional local indexes
  grep -v "is ignored: it is neither a file nor a directory" "$1" || true
}

# The pinned requirements install in parallel (mostly download and unpack), each with its
# own log; the editable project installs one venv at a time, since each build writes the
# same llm_token_exporter.egg-info in the work tree.
declare -A PIDS NODE_PIDS SETUP_FAILED
for name in "${stale_node[@]}"; do
  npm_install "${NODE_PROJECT[$name]}" > ".venvs/$name.npm.log" 2>&1 &
  NODE_PIDS[$name]=$!
done
for name in "${stale[@]}"; do
  install_requirements "$name" > ".venvs/$name.log" 2>&1 &
  PIDS[$name]=$!
done
for name in "${stale[@]}"; do
  if wait "${PIDS[$name]}" && install_project "$name" >> ".venvs/$name.log" 2>&1; then
    show_log ".venvs/$name.log"
  else
    echo "instrumentation[$name]: venv setup FAILED; its log:" >&2
    show_log ".venvs/$name.log" >&2
    rm -f ".venvs/$name/.llm-token-exporter-stamp"
    SETUP_FAILED[$name]=1
    failed+=("$name (venv setup)")
  fi
done
for name in "${stale_node[@]}"; do
  if wait "${NODE_PIDS[$name]}"; then
    cat ".venvs/$name.npm.log"
  else
    echo "instrumentation[$name]: npm ci FAILED; its log:" >&2
    cat ".venvs/$name.npm.log" >&2
    rm -f "${NODE_PROJECT[$name]}/node_modules/.llm-token-exporter-stamp"
    if [ -z "${SETUP_FAILED[$name]:-}" ]; then
      SETUP_FAILED[$name]=1
      failed+=("$name (npm ci)")
    fi
  fi
done

# Run each venv's test file; the main test run ignores tests/instrumentation.
for name in "${NAMES[@]}"; do
  [ -z "${SETUP_FAILED[$name]:-}" ] || continue
  test_file="tests/instrumentation/test_${name//-/_}.py"
  echo "instrumentation[$name]: python -m pytest $test_file"
  # --confcutdir: only tests/instrumentation/conftest.py, not the main suite's conftest.
  if ! ".venvs/$name/bin/python" -m pytest -q -p no:cacheprovider \
      --confcutdir=tests/instrumentation "$test_file"; then
    failed+=("$name")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "instrumentation: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "instrumentation: all passed (${NAMES[*]})"
