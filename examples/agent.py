#!/usr/bin/env python3
"""An agent that asks riskgate before it moves money (docs/gateway.md).

Standard library only. It proposes a transfer to the gateway, waits for the decision
(following a 202 with GET on its Location), and acts on it:

* allow: makes the transfer (here: prints that it would);
* hold:  does nothing now; a person reviews the intent (the review page), and the agent
         learns the outcome from the review records or asks again later;
* deny:  gives up, and says why.

    RISKGATE_GATEWAY=http://localhost:9467 RISKGATE_KEY=rgk_... \\
        python3 examples/agent.py --agent payments-bot --account acct-0005 \\
        --amount 250.00 --currency EUR --payee cp-0001

Exit status: 0 allowed, 10 held, 20 denied, 1 on an error (the message says what).
Retrying is safe: the same intent_id and body get the same decision (a duplicate).
"""

import argparse
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

ALLOWED, HELD, DENIED = 0, 10, 20


class GatewayError(Exception):
    pass


def call(method, url, key, body=None, timeout=40):
    """One request; returns (status, headers, JSON body). Raises GatewayError on a refusal."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", "Bearer " + key)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            error = json.loads(payload)["error"]
        except (ValueError, KeyError, TypeError):
            raise GatewayError(f"{method} {url}: HTTP {e.code}: {payload[:200]!r}") from None
        if e.code in (429, 503):
            # Try again after Retry-After: the intent was not written (rate, busy, Kafka).
            retry = int(e.headers.get("Retry-After", "1"))
            raise RetryLater(retry, error["message"]) from None
        where = f" (field {error['field']})" if "field" in error else ""
        raise GatewayError(f"{error['code']}: {error['message']}{where}") from None


class RetryLater(Exception):
    def __init__(self, seconds, message):
        super().__init__(message)
        self.seconds = seconds


def decide(gateway, key, intent, wait="10s", deadline_s=120):
    """Proposes `intent` and returns its decision record, however long it takes."""
    give_up = time.monotonic() + deadline_s
    url = f"{gateway}/v1/intents?wait={wait}"
    while True:
        try:
            status, headers, body = call("POST", url, key, intent)
            break
        except RetryLater as e:
            if time.monotonic() + e.seconds > give_up:
                raise GatewayError(f"gave up: {e}") from None
            time.sleep(e.seconds)
    while status == 202:
        # Written and not decided yet: ask where the decision will be.
        if time.monotonic() > give_up:
            raise GatewayError(f"no decision after {deadline_s} s; it is at {body['location']}")
        status, headers, body = call("GET", f"{gateway}{headers['Location']}?wait={wait}", key)
    return body


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gateway", default=os.environ.get("RISKGATE_GATEWAY", "http://127.0.0.1:9467"))
    p.add_argument("--agent", default="payments-bot")
    p.add_argument("--account", required=True)
    p.add_argument("--amount", required=True)
    p.add_argument("--currency", default="EUR")
    p.add_argument("--payee", required=True)
    p.add_argument("--intent-id", default=None, help="reuse to retry an intent (default: a new one)")
    p.add_argument("--wait", default="10s")
    args = p.parse_args()
    key = os.environ.get("RISKGATE_KEY")
    if not key:
        print("agent: set RISKGATE_KEY to the key `riskgate gateway-key` printed", file=sys.stderr)
        return 1
    intent = {
        "intent_id": args.intent_id or f"agent-{uuid.uuid4()}",
        "agent_id": args.agent,
        "account_id": args.account,
        "action": "transfer",
        "amount": args.amount,
        "currency": args.currency,
        "counterparty": {"id": args.payee},
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    try:
        decision = decide(args.gateway.rstrip("/"), key, intent, args.wait)
    except (GatewayError, urllib.error.URLError, OSError) as e:
        print(f"agent: {e}", file=sys.stderr)
        return 1
    reasons = "; ".join(f"{r['rule']}: {r.get('message', '')}" for r in decision.get("reasons", []))
    outcome = decision["decision"]
    again = " (a duplicate: this intent was decided before)" if decision.get("duplicate") else ""
    if outcome == "allow":
        print(f"allowed{again}: transferring {args.amount} {args.currency} from {args.account} to {args.payee} ({intent['intent_id']})")
        return ALLOWED
    if outcome == "hold":
        print(f"held for review{again}: not transferring now ({intent['intent_id']}): {reasons}")
        return HELD
    print(f"denied{again}: not transferring ({intent['intent_id']}): {reasons}")
    return DENIED


if __name__ == "__main__":
    sys.exit(main())
