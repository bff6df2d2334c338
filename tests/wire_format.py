"""The wire format as a client that is not rdkafka-based Rust sees it.

Produces intents with the confluent-kafka Python client, then reads the decisions and dead
letters riskgate wrote for them (read_committed) and checks the contract of docs/design.md, section 2.

usage: wire_format.py BROKER INTENTS_TOPIC DECISIONS_TOPIC DEAD_LETTER_TOPIC
"""
import json
import sys
import time
from decimal import Decimal

from confluent_kafka import Consumer, Producer, TopicPartition

broker, intents, decisions, dead_letters = sys.argv[1:5]

sent = {
    "py-1": {"intent_id": "py-1", "agent_id": "py-agent", "account_id": "py-acct-1",
             "action": "transfer", "amount": "12000.10", "currency": "EUR",
             "counterparty": {"id": "cp-py", "name": "<script>alert(1)</script>", "country": "DE"},
             "created_at": "2026-11-28T10:00:00Z"},
    "py-2": {"intent_id": "py-2", "agent_id": "py-agent", "account_id": "py-acct-2",
             "action": "payment", "amount": 25.5, "currency": "USD",
             "counterparty": {"id": "cp-py2", "country": "KP"},
             "created_at": "2026-11-28T10:00:01Z", "attributes": {"note": "caf\u00e9"}},
    "py-3": {"intent_id": "py-3", "agent_id": "support-bot", "account_id": "py-acct-3",
             "action": "export", "created_at": "2026-11-28T10:00:02Z",
             "attributes": {"records": 5}},
}
invalid = b'{"intent_id":"py-bad","agent_id":"a","account_id":"py-acct-4","action":"transfer","amount":"-5","currency":"EUR","created_at":"2026-11-28T10:00:03Z"}'

producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
for intent in sent.values():
    producer.produce(intents, json.dumps(intent).encode(), key=intent["account_id"].encode())
producer.produce(intents, invalid, key=b"py-acct-4")
assert producer.flush(30) == 0, "not everything was delivered"


def read(topic, want, deadline):
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "wire-reader-" + topic,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    got = []
    while len(got) < want and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        got.append((m.partition(), m.key(), json.loads(m.value())))
    consumer.close()
    return got


deadline = time.time() + 60
got = read(decisions, len(sent), deadline)
assert len(got) == len(sent), f"{len(got)} decisions for {len(sent)} intents"
for partition, key, d in got:
    intent = sent[d["intent_id"]]
    assert key == intent["account_id"].encode(), (key, intent)
    assert d["source"]["topic"] == intents and d["source"]["partition"] == partition, d
    assert d["decision"] in ("allow", "hold", "deny"), d
    assert isinstance(d["score"], int) and isinstance(d["reasons"], list), d
    assert isinstance(d["errors"], list) and isinstance(d["counters"], dict), d
    assert len(d["ruleset"]) == 12, d
    assert d["intent"] == intent, "the embedded intent is the original"
    if "amount" in intent:
        # Exact decimals, as strings, never floats.
        assert isinstance(d["amount"], str) and Decimal(d["amount"]) == Decimal(str(intent["amount"])), d
    for r in d["reasons"]:
        assert set(r) <= {"rule", "action", "score", "message"}, r
    print(d["intent_id"], d["decision"], [r["rule"] for r in d["reasons"]])
by_id = {d["intent_id"]: d for _, _, d in got}
assert by_id["py-1"]["decision"] == "hold", by_id["py-1"]
assert by_id["py-2"]["decision"] == "deny", by_id["py-2"]

letters = read(dead_letters, 1, deadline)
assert len(letters) == 1, letters
_, _, letter = letters[0]
assert letter["error"]["kind"] == "invalid_field" and letter["error"]["field"] == "amount", letter
assert letter["payload"].encode() == invalid, letter
print("wire format ok")
