#!/usr/bin/env python3
"""Streams chat completions through `litellm` (`litellm.completion(stream=True)`
with an `openai/` model: any OpenAI-compatible server at `api_base`), as an
unmodified application would, and prints what it received and when (see
clientlib.run). litellm calls the server with the `openai` SDK over its own
`httpx` session (`litellm.client_session`, given `clientlib.http_hooks()`
here).

    python3 litellm_stream.py http://127.0.0.1:PORT [--model M] [--calls N]
        [--max-tokens N] [--temperature T] [--seed S]
"""

import os

# The model price list ships with litellm; without this it would be fetched
# from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import litellm  # noqa: E402
from litellm._version import version as litellm_version  # noqa: E402

import clientlib  # noqa: E402
from openai_stream import record_chunk  # noqa: E402


def make_client(base_url):
    litellm.client_session = httpx.Client(event_hooks=clientlib.http_hooks(httpx))
    return f"{base_url}/v1"


def one_call(api_base, args, call):
    stream = litellm.completion(
        model=f"openai/{args.model}",
        api_base=api_base,
        api_key="sk-llmtap-test",
        messages=[{"role": "user", "content": args.prompt}],
        max_tokens=args.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        num_retries=0,
        **clientlib.sampling(args),
    )
    for chunk in stream:
        record_chunk(call, chunk)


if __name__ == "__main__":
    clientlib.run(__doc__, "smollm2", make_client, one_call, f"litellm {litellm_version}")
