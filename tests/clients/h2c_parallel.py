"""Streams several chat completions at once over one HTTP/2 connection,
with prior knowledge (h2c: HTTP/2 in plaintext, no upgrade), for the test
that llmtap demultiplexes HTTP/2 streams.

    python3 h2c_parallel.py http://127.0.0.1:PORT MODEL COUNT REPORT.json

Request i asks for model MODEL-i. Writes REPORT.json: {"calls": [...]},
per request its model, HTTP version, status, usage, and when its first
content chunk arrived (wall clock, ns).
"""

import asyncio
import json
import sys
import time

import httpx


async def one(client, base, model):
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    call = {"model": model}
    async with client.stream("POST", base + "/v1/chat/completions", json=body) as r:
        call["http_version"] = r.http_version
        call["status"] = r.status_code
        async for line in r.aiter_lines():
            data = line.removeprefix("data: ")
            if data == line or data == "[DONE]":
                continue
            chunk = json.loads(data)
            choices = chunk.get("choices") or []
            if choices and choices[0]["delta"].get("content") and "first_token_ns" not in call:
                call["first_token_ns"] = time.time_ns()
            if chunk.get("usage"):
                call["output_tokens"] = chunk["usage"]["completion_tokens"]
    return call


async def main():
    base, model, count, report = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    # http1=False: HTTP/2 from the first byte, on one connection.
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
        calls = await asyncio.gather(
            *(one(client, base, f"{model}-{i}") for i in range(count))
        )
    with open(report, "w") as f:
        json.dump({"calls": calls}, f)


asyncio.run(main())
