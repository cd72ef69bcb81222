#!/usr/bin/env bash
# Installs the peer gateways that `make bench` measures beside ours, each in its own place under
# benchmarks/.peers/ (never committed): LiteLLM's proxy (current release and 1.82.6, one venv each)
# and Portkey's gateway (npm). Re-running skips what is already installed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
peers="$here/.peers"
python="${BENCH_PEERS_PYTHON:-python3}"
# Releases pulled from PyPI after a supply-chain compromise: never install these.
denylist=" 1.82.7 1.82.8 1.107.0 "

mkdir -p "$peers"

litellm_venv() {  # $1: directory name, $2: pip requirement
    local dir="$peers/$1"
    if [ -x "$dir/bin/litellm" ]; then
        echo "bench-peers: $1 already installed ($("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))'))"
        return
    fi
    echo "bench-peers: installing $2 into $dir"
    rm -rf "$dir"
    "$python" -m venv "$dir"
    # (the grep only hides pip's notes about local index paths that do not exist here)
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$2" 2> >(grep -v "^WARNING: Location" >&2)
    local version
    version="$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
    if [[ "$denylist" == *" $version "* ]]; then
        echo "bench-peers: litellm $version is a known-compromised release; removing it" >&2
        rm -rf "$dir"
        exit 1
    fi
    echo "bench-peers: $1 -> litellm $version"
}

litellm_venv litellm-current 'litellm[proxy]'
litellm_venv litellm-1.82.6 'litellm[proxy]==1.82.6'

if [ -f "$peers/portkey/node_modules/@portkey-ai/gateway/package.json" ]; then
    echo "bench-peers: portkey already installed"
else
    echo "bench-peers: installing @portkey-ai/gateway into $peers/portkey"
    mkdir -p "$peers/portkey"
    npm install --silent --no-audit --no-fund --prefix "$peers/portkey" @portkey-ai/gateway
fi
echo "bench-peers: done"
