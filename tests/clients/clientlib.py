"""What llmtap's Python test clients share: the command line, calls on one
or two threads, the per-call timing record, and the JSON printed at the end.

Each client script supplies only how to make its SDK client and how to make
one streaming call with it. Certificates come from the environment as the
SDKs read it (`SSL_CERT_FILE`); proxies are bypassed for loopback. Clients
built with `http_hooks()` also note when each request starts going out and
when each read of its response returns.
"""

import argparse
import json
import os
import sys
import threading
import time


def parse_args(description, default_model):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("base_url", help="server root, e.g. https://127.0.0.1:8443")
    p.add_argument("--model", default=default_model)
    p.add_argument("--calls", type=int, default=1, help="calls per thread, one after another")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None, help="sent only when given")
    p.add_argument("--seed", type=int, default=None, help="sent only when given")
    p.add_argument("--prompt", default="Say hello to llmtap.")
    p.add_argument("--no-stream", action="store_true", help="one whole JSON response instead")
    p.add_argument(
        "--two-threads",
        action="store_true",
        help="two threads, each with its own client (so its own connection), streaming at once",
    )
    p.add_argument(
        "--output",
        help="write the JSON report to this file instead of stdout (which a wrapper may share)",
    )
    p.add_argument(
        "--wait-for-stdin",
        action="store_true",
        help="import and set up, then wait for a line on stdin before calling (to attach by PID first)",
    )
    p.add_argument(
        "--step",
        action="store_true",
        help="make each round of calls (one per thread) only when a line arrives on stdin, "
        "and print `done N` once round N is over (for tests that act between calls)",
    )
    p.add_argument(
        "--warm-up",
        action="store_true",
        help="first make one unreported call on a client of its own, so the reported calls run warm "
        "(a cold process imports and compiles during its first stream and reads it late)",
    )
    return p.parse_args()


def sampling(args):
    """The sampling parameters given on the command line, as keyword
    arguments for the SDK (those not given are not sent)."""
    given = {"temperature": args.temperature, "seed": args.seed}
    return {name: value for name, value in given.items() if value is not None}


# The call each thread is making, for the HTTP library's trace to stamp.
_current = threading.local()


def http_hooks(httpx_module):
    """Event hooks for a client of `httpx_module` (httpx, or httpx2 under
    the SDKs), timing the call being made with the HTTP library's own
    events: `sent_ns` when its request head starts going out (httpcore's
    `trace` extension), just before the first write, where llmtap's TTFT
    starts; and each read of the response body as it returns, so that
    `first_token_read_ns` is when the read that completed the first text
    returned, where llmtap's TTFT ends."""

    class TimedStream(httpx_module.SyncByteStream):
        def __init__(self, stream, call):
            self.stream, self.call = stream, call

        def __iter__(self):
            for chunk in self.stream:
                self.call.last_read_ns = time.time_ns()
                yield chunk

        def close(self):
            self.stream.close()

    def on_request(request):
        call = getattr(_current, "call", None)
        if call is not None:
            request.extensions["trace"] = call.trace

    def on_response(response):
        call = getattr(_current, "call", None)
        if call is not None:
            response.stream = TimedStream(response.stream, call)

    return {"request": [on_request], "response": [on_response]}


def bypass_proxies():
    """A machine-wide proxy must not see loopback traffic."""
    for var in ("NO_PROXY", "no_proxy"):
        extra = "127.0.0.1,localhost,::1"
        os.environ[var] = f"{os.environ[var]},{extra}" if os.environ.get(var) else extra


class Call:
    """One call's record: what came back, and the client's own clock
    (`time.time_ns()`, wall clock) around it."""

    def __init__(self, thread):
        self.record = {
            "thread": thread,
            "id": None,
            "model": None,
            "text": "",
            "chunks": 0,
            "content_chunks": 0,
            "finish_reason": None,
            "usage": None,
            "error": None,
            "start_ns": time.time_ns(),
            "sent_ns": None,
            "first_token_read_ns": None,
            "first_token_ns": None,
            "chunk_ns": [],
            "end_ns": None,
            "ttft_ns": None,
            "read_ttft_ns": None,
        }
        self.last_read_ns = None
        _current.call = self

    def trace(self, name, info):
        """httpcore's trace callback (see `http_hooks`)."""
        if name.endswith("send_request_headers.started") and self.record["sent_ns"] is None:
            self.record["sent_ns"] = time.time_ns()

    def chunk(self, text):
        """A stream event arrived; `text` is the output it carried, if any."""
        now = time.time_ns()
        self.record["chunks"] += 1
        if text:
            if self.record["first_token_ns"] is None:
                self.record["first_token_ns"] = now
                self.record["first_token_read_ns"] = self.last_read_ns
            self.record["chunk_ns"].append(now)
            self.record["content_chunks"] += 1
            self.record["text"] += text

    def fail(self, exc):
        self.record["error"] = {
            "type": type(exc).__name__,
            "status": getattr(exc, "status_code", None),
            "message": str(exc),
        }

    def finish(self):
        r = self.record
        r["end_ns"] = time.time_ns()
        if r["first_token_ns"] is not None:
            r["ttft_ns"] = r["first_token_ns"] - r["start_ns"]
            if r["sent_ns"] is not None and r["first_token_read_ns"] is not None:
                r["read_ttft_ns"] = r["first_token_read_ns"] - r["sent_ns"]
        return r


def run(description, default_model, make_client, one_call, sdk_version):
    """Runs the calls the command line asks for and prints one JSON object:
    {"sdk", "pid", "calls": [record, ...]}. Exit status 0 when every call
    succeeded, 2 otherwise (the JSON is printed either way)."""
    args = parse_args(description, default_model)
    bypass_proxies()
    threads = 2 if args.two_threads else 1
    results = [[] for _ in range(threads)]
    # Both threads' first calls start together, so their streams overlap.
    barrier = threading.Barrier(threads)
    if args.warm_up:
        one_call(make_client(args.base_url), args, Call(0))
    if args.wait_for_stdin:
        sys.stdin.readline()
    # With --step, the main thread meets the workers here before and after
    # every round.
    rounds = threading.Barrier(threads + 1) if args.step else None

    def worker(i):
        client = make_client(args.base_url)
        barrier.wait()
        for _ in range(args.calls):
            if rounds:
                rounds.wait()
            call = Call(i)
            try:
                one_call(client, args, call)
            except Exception as exc:  # an API or transport error is a result here
                call.fail(exc)
            results[i].append(call.finish())
            if rounds:
                rounds.wait()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    if rounds:
        for n in range(1, args.calls + 1):
            sys.stdin.readline()
            rounds.wait()
            rounds.wait()
            print(f"done {n}", flush=True)
    for w in workers:
        w.join()
    calls = [r for rs in results for r in rs]
    report = json.dumps({"sdk": sdk_version, "pid": os.getpid(), "calls": calls}) + "\n"
    if args.output:
        with open(args.output, "w") as out:
            out.write(report)
    else:
        sys.stdout.write(report)
    sys.exit(0 if all(c["error"] is None for c in calls) else 2)
