#!/usr/bin/env python3
"""Streams messages with the official `anthropic` SDK (sync client,
`messages.create(stream=True)`), as an unmodified application would, and
prints what it received and when (see clientlib.run).

    SSL_CERT_FILE=ca.pem python3 anthropic_stream.py https://127.0.0.1:PORT [--model M]
        [--calls N] [--two-threads] [--max-tokens N] [--temperature T] [--seed S] [--no-stream]

This SDK's `messages.create()` takes no temperature or seed: --temperature
and --seed go in the body as extra fields (llama.cpp reads them).
"""

import anthropic
import httpx2

import clientlib


def make_client(base_url):
    # No retries: a test asking for a 429 wants exactly one request.
    return anthropic.Anthropic(
        base_url=base_url,
        api_key="sk-ant-llmtap-test",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(event_hooks=clientlib.http_hooks(httpx2)),
    )


def one_call(client, args, call):
    request = dict(
        model=args.model,
        max_tokens=args.max_tokens or 1024,
        messages=[{"role": "user", "content": args.prompt}],
        extra_body=clientlib.sampling(args) or None,
    )
    if args.no_stream:
        msg = client.messages.create(**request)
        call.chunk("".join(b.text for b in msg.content if b.type == "text"))
        call.record.update(id=msg.id, model=msg.model, finish_reason=msg.stop_reason)
        call.record["usage"] = msg.usage.model_dump(exclude_none=True)
        return
    usage = {}
    for event in client.messages.create(stream=True, **request):
        text = None
        if event.type == "message_start":
            call.record.update(id=event.message.id, model=event.message.model)
            usage.update(event.message.usage.model_dump(exclude_none=True))
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            text = event.delta.text
        elif event.type == "message_delta":
            call.record["finish_reason"] = event.delta.stop_reason
            usage.update(event.usage.model_dump(exclude_none=True))
        call.chunk(text)
    call.record["usage"] = usage or None


if __name__ == "__main__":
    clientlib.run(__doc__, "claude-mock-1", make_client, one_call, f"anthropic-python {anthropic.__version__}")
