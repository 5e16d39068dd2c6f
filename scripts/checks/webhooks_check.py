#!/usr/bin/env python3
"""Webhook deliveries of a real node, verified with the reference library.

Run by scripts/checks/webhooks.sh inside its virtualenv (standardwebhooks from PyPI).
Argument: path to the `teamhub` binary. Starts a node (SQLite, --webhook-allow-private,
a short retry schedule), a receiver on a loopback port, creates an endpoint, publishes
messages (the receiver answers the first attempt of one with 500, so a retry is seen),
rotates the secret and publishes more. Every delivery must verify with
`standardwebhooks.Webhook(secret).verify`; after the rotation, with the old secret and
with the new one. Exits non-zero on any failure.
"""

import http.server
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TEAM = "design"
received: "queue.Queue[tuple[dict, bytes]]" = queue.Queue()
fail_first = {"left": 1}


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        received.put((headers, body))
        status = 204
        if fail_first["left"] > 0:
            fail_first["left"] -= 1
            status = 500
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
        return resp.status, (json.loads(text) if text else None)


def next_delivery(timeout=20.0):
    try:
        return received.get(timeout=timeout)
    except queue.Empty:
        sys.exit("FAIL: no delivery in time")


def verify(secret, headers, body, what):
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError as e:
        sys.exit(f"FAIL: {what}: does not verify with {secret[:12]}...: {e}")


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    secret_jwt = "webhooks-check-" + os.urandom(8).hex()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(work, "node.log"), "w")
    node = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--jwt-secret", secret_jwt,
         "--database-url", f"sqlite://{work}/hub.db", "--activity-spill-path", f"{work}/hub.spill",
         "--webhook-allow-private", "--webhook-retry-schedule", "200ms,200ms"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except OSError:
                if node.poll() is not None:
                    sys.exit("FAIL: the node exited:\n" + open(log.name).read())
                time.sleep(0.1)
        env = dict(os.environ, TEAMHUB_JWT_SECRET=secret_jwt)
        token = subprocess.run(
            [binary, "token", "--user", "checker", "--team", f"{TEAM}=owner", "--ttl", "1h"],
            capture_output=True, text=True, check=True, env=env,
        ).stdout.strip()

        status, created = request(base, "POST", f"/api/v1/teams/{TEAM}/webhooks", token,
                                  {"url": hook_url, "events": ["doc."]})
        assert status == 201, (status, created)
        old = created["secret"]
        hook = created["id"]

        for i in range(3):
            request(base, "POST", f"/api/v1/teams/{TEAM}/messages", token,
                    {"type": "doc.edit", "data": {"i": i}})
        seen = {}
        attempts = 0
        # Three events, the first attempt of one answered 500: four requests.
        while attempts < 4:
            headers, body = next_delivery()
            attempts += 1
            verify(old, headers, body, "a delivery")
            payload = json.loads(body)
            assert payload["type"] == "doc.edit", payload
            seen.setdefault(headers["webhook-id"], payload["data"]["metadata"]["i"])
        assert sorted(seen.values()) == [0, 1, 2], seen
        print("ok   3 deliveries (one retried) verify with standardwebhooks")

        status, rotated = request(base, "POST", f"/api/v1/teams/{TEAM}/webhooks/{hook}/rotate-secret", token)
        new = rotated["secret"]
        request(base, "POST", f"/api/v1/teams/{TEAM}/messages", token,
                {"type": "doc.edit", "data": {"i": 3}})
        headers, body = next_delivery()
        assert len(headers["webhook-signature"].split(" ")) == 2, headers["webhook-signature"]
        verify(new, headers, body, "after the rotation, the new secret")
        verify(old, headers, body, "after the rotation, the old secret")
        try:
            Webhook("whsec_" + "QUJD" * 8).verify(body, headers)
            sys.exit("FAIL: a wrong secret verified")
        except WebhookVerificationError:
            pass
        print("ok   after a rotation both secrets verify, a wrong one does not")
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=20)
        server.shutdown()


if __name__ == "__main__":
    main()
