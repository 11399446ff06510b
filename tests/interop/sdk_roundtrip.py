"""The Python CloudEvents SDK (`cloudevents`, its core bindings) against edge-outbox: one event of
each catalogue type, made with the SDK and posted with its own HTTP binding (binary and
structured mode; batched mode as a JSON array of the SDK's JSON format), then read back from
Kafka with confluent-kafka and decoded with the SDK's Kafka binding (`from_kafka`), and compared
with what was sent: id, source, type, time, subject, datacontenttype, data and an extension.
Prints one JSON line {sent, received, mismatches}; exits 1 on any mismatch, 2 on an error.
Usage: python3 sdk_roundtrip.py URL BROKERS TYPES_JSON_FILE PREFIX TIMEOUT_S
"""

import json
import sys
import time
import urllib.request
from datetime import datetime, timezone

from cloudevents.core.bindings import http, kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Consumer

url, brokers, types_file, prefix, timeout_s = sys.argv[1:6]
catalogue = json.load(open(types_file))
FORMAT = JSONFormat()


def made(i, entry):
    tenant = f"tenant-{i % 5}"
    return CloudEvent(
        {
            "specversion": "1.0",
            "id": f"{prefix}-{i}",
            "source": "integration-hub-svc",
            "type": entry["type"],
            "time": datetime(2026, 2, 24, 12, 0, 0, 123000, tzinfo=timezone.utc),
            "subject": tenant,
            "datacontenttype": "application/json",
            "comexamplex": f"v{i}",
        },
        {"tenantId": tenant, "n": i, "note": "café ☕"},
    )


def post(headers, body):
    request = urllib.request.Request(f"{url}/v1/events", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        if answer.status != 202:
            raise RuntimeError(f"{answer.status}: {answer.read()!r}")


def send(events):
    batch = []
    for i, event in enumerate(events):
        if i % 3 == 0:
            message = http.to_binary(event, FORMAT)
            post(message.headers, message.body)
        elif i % 3 == 1:
            message = http.to_structured(event, FORMAT)
            post(message.headers, message.body)
        else:
            batch.append(json.loads(FORMAT.write(event)))
    post({"content-type": "application/cloudevents-batch+json"}, json.dumps(batch).encode())


def receive(count):
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"sdk-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(sorted({entry["topic"] for entry in catalogue}))
    received = {}
    deadline = time.monotonic() + float(timeout_s)
    while len(received) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        headers = {k: v for k, v in (message.headers() or [])}
        if not headers.get("ce_id", b"").decode().startswith(f"{prefix}-"):
            continue
        event = kafka.from_kafka(
            kafka.KafkaMessage(headers=headers, key=message.key(), value=message.value()), FORMAT
        )
        received[event.get_id()] = (event, message.key().decode())
    consumer.close()
    return received


def compare(sent, got):
    if got is None:
        return [f"{sent.get_id()}: not received"]
    event, key = got
    problems = []
    for name in ["id", "source", "type", "subject", "datacontenttype", "time", "comexamplex"]:
        ours, theirs = event.get_attributes().get(name), sent.get_attributes().get(name)
        if ours != theirs:
            problems.append(f"{sent.get_id()}: {name} {ours!r} != {theirs!r}")
    if event.get_data() != sent.get_data():
        problems.append(f"{sent.get_id()}: data {event.get_data()!r} != {sent.get_data()!r}")
    if key != sent.get_data()["tenantId"]:
        problems.append(f"{sent.get_id()}: key {key} != {sent.get_data()['tenantId']}")
    return problems


def main():
    events = [made(i, entry) for i, entry in enumerate(catalogue)]
    send(events)
    received = receive(len(events))
    mismatches = [p for e in events for p in compare(e, received.get(e.get_id()))]
    print(json.dumps({"sent": len(events), "received": len(received), "mismatches": mismatches}))
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - any failure is reported as exit 2
        print(f"sdk_roundtrip.py: {error!r}", file=sys.stderr)
        sys.exit(2)
