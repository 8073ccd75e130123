#!/usr/bin/env python3
"""The smallest streaming chat-completions client: Python's own `ssl` and
`http.client` (libssl's SSL_write_ex/SSL_read_ex), no SDK to import, so a
whole call takes tens of milliseconds. For tests of short-lived processes.

    SSL_CERT_FILE=ca.pem python3 tiny_stream.py https://127.0.0.1:PORT MODEL
"""

import http.client
import json
import ssl
import sys
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
body = json.dumps(
    {
        "model": sys.argv[2],
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
)
conn = http.client.HTTPSConnection(url.hostname, url.port, context=ssl.create_default_context())
conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
resp = conn.getresponse()
data = resp.read()
conn.close()
if resp.status != 200 or b"[DONE]" not in data:
    sys.exit(f"unexpected response {resp.status}: {data[:200]!r}")
