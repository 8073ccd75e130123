#!/usr/bin/env python3
"""Streams chat completions with the official `openai` SDK (sync client,
`stream_options={"include_usage": True}`), as an unmodified application
would, and prints what it received and when (see clientlib.run). A
llama.cpp server's `timings` (its final chunk's extra field) are kept.

    SSL_CERT_FILE=ca.pem python3 openai_stream.py https://127.0.0.1:PORT [--model M]
        [--calls N] [--two-threads] [--max-tokens N] [--temperature T] [--seed S] [--no-stream]
"""

import httpx2
import openai

import clientlib


def make_client(base_url):
    # No retries: a test asking for a 429 wants exactly one request.
    return openai.OpenAI(
        base_url=f"{base_url}/v1",
        api_key="sk-llmtap-test",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(event_hooks=clientlib.http_hooks(httpx2)),
    )


def one_call(client, args, call):
    messages = [{"role": "user", "content": args.prompt}]
    # `call` was made just before this: its start_ns is the time before create().
    if args.no_stream:
        resp = client.chat.completions.create(
            model=args.model, messages=messages, max_tokens=args.max_tokens, **clientlib.sampling(args)
        )
        call.chunk(resp.choices[0].message.content)
        call.record.update(id=resp.id, model=resp.model, finish_reason=resp.choices[0].finish_reason)
        call.record["usage"] = resp.usage.model_dump() if resp.usage else None
        return
    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        **clientlib.sampling(args),
    )
    for chunk in stream:
        record_chunk(call, chunk)


def record_chunk(call, chunk):
    """Notes one Chat Completions stream chunk: the SDK's, or one shaped
    like it (litellm's)."""
    choice = chunk.choices[0] if chunk.choices else None
    call.chunk(choice.delta.content if choice else None)
    call.record.update(id=chunk.id, model=chunk.model)
    if choice and choice.finish_reason:
        call.record["finish_reason"] = choice.finish_reason
    usage = getattr(chunk, "usage", None)
    if usage:
        call.record["usage"] = usage.model_dump()
    if getattr(chunk, "timings", None):
        call.record["timings"] = chunk.timings


if __name__ == "__main__":
    clientlib.run(__doc__, "gpt-4o-mini", make_client, one_call, f"openai-python {openai.__version__}")
