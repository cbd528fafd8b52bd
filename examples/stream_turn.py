#!/usr/bin/env python3
"""Streams a turn from a `codex-pool serve` service, with Python's standard library only.

    python3 examples/stream_turn.py "Hello there"                    # a new conversation
    python3 examples/stream_turn.py --conversation ID "And then?"     # carry one on
    CODEX_POOL_URL=http://127.0.0.1:7878 CODEX_POOL_TOKEN=... python3 examples/stream_turn.py "Hi"

The reply is printed as it streams; the conversation id goes to stderr, to carry it on later.
"""

import argparse
import json
import os
import sys
import urllib.request


def request(url, token, method="GET", body=None):
    """Sends a request; returns the open response (raises on an error status)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return urllib.request.urlopen(req)


def events(response):
    """Yields (event, data) for each server-sent event of a response."""
    name, data = "message", []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):
            continue  # a keep-alive
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", help="the message")
    parser.add_argument("--conversation", help="carry this conversation on (default: a new one)")
    parser.add_argument("--url", default=os.environ.get("CODEX_POOL_URL", "http://127.0.0.1:7878"))
    args = parser.parse_args()
    token = os.environ.get("CODEX_POOL_TOKEN")

    conversation = args.conversation
    if conversation is None:
        with request(f"{args.url}/v1/conversations", token, "POST", {}) as response:
            conversation = json.load(response)["id"]
    print(f"conversation {conversation}", file=sys.stderr)

    turn = f"{args.url}/v1/conversations/{conversation}/turns"
    with request(turn, token, "POST", {"text": args.text}) as response:
        for name, data in events(response):
            if name == "text.delta":
                print(data["delta"], end="", flush=True)
            elif name == "turn.completed":
                print()
                return 0
            elif name == "turn.failed":
                print(f"\nturn failed ({data['error']['kind']}): {data['error']['message']}", file=sys.stderr)
                return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
