"""Reads COUNT messages of TOPIC from the beginning with confluent-kafka (Confluent's Python
client, librdkafka inside) and prints each as a JSON line {partition, key, headers, value}.
Exits 2 with the error if it cannot. Usage: python3 consume.py BROKERS TOPIC COUNT TIMEOUT_S"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException

brokers, topic, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
consumer = Consumer({
    "bootstrap.servers": brokers,
    "group.id": f"interop-{uuid.uuid4()}",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
})
consumer.subscribe([topic])
seen = 0
deadline = time.monotonic() + timeout
try:
    while seen < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        headers = {k: v.decode() for k, v in (message.headers() or [])}
        print(json.dumps({
            "partition": message.partition(),
            "key": message.key().decode() if message.key() else None,
            "headers": headers,
            "value": message.value().decode(),
        }), flush=True)
        seen += 1
finally:
    consumer.close()
if seen < count:
    print(f"confluent-kafka: only {seen} of {count} messages", file=sys.stderr)
    sys.exit(2)
