"""The two halves of scripts/peer-bench's crash comparison, for any of the peers (they all take
CloudEvents over HTTP and publish in the binary binding, `ce_id` a header).

  crash_compare.py post URL ACKED SECONDS CLIENTS
      CLIENTS threads post single events (catalogue types, one tenant per client) for SECONDS;
      each id answered 202 is appended to the file ACKED at once. A refused connection or an
      error (the system is being killed) is retried after 20 ms with the next event.
  crash_compare.py mark BROKERS MARKS
      Writes the end offset of every partition of the catalogue topics to MARKS.
  crash_compare.py count BROKERS MARKS ACKED IDLE_S
      Reads every catalogue topic from those offsets with confluent-kafka until nothing came for
      IDLE_S, and prints JSON: acknowledged, lost (acknowledged, not in Kafka), duplicates
      (acknowledged ids in Kafka more than once, each extra copy counted).
"""
import collections
import http.client
import json
import os
import re
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open(os.path.join(ROOT, "src", "catalog.toml")) as catalog:
    TYPES = re.findall(r'^type = "([^"]+)"', catalog.read(), re.M)


def send(connection, event_id, tenant, n):
    """Posts event `n` of `tenant` (structured mode, about 1 KiB); true if answered 202."""
    body = json.dumps({
        "specversion": "1.0", "type": TYPES[n % len(TYPES)], "source": "peer-bench",
        "id": event_id, "subject": tenant, "datacontenttype": "application/json",
        "data": {"tenantId": tenant, "n": n, "notes": "x" * 900},
    })
    connection.request("POST", "/v1/events", body, {"content-type": "application/cloudevents+json"})
    response = connection.getresponse()
    response.read()
    return response.status == 202


def post(url, acked_path, seconds, clients):
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    out = open(acked_path, "a")

    def client(n):
        tenant = f"crash-{n:04d}"
        connection = None
        sent = 0
        while time.monotonic() < deadline:
            event_id = f"crash-{uuid.uuid4()}"
            sent += 1
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(host, int(port), timeout=10)
                if send(connection, event_id, tenant, sent):
                    with lock:
                        out.write(event_id + "\n")
                        out.flush()
                    continue
            except (OSError, http.client.HTTPException):
                connection = None
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def consumer(brokers):
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": brokers, "group.id": f"crash-{uuid.uuid4()}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })


def end_offsets(brokers):
    """The end offset of every partition of the catalogue topics, as assignable positions."""
    from confluent_kafka import TopicPartition

    reader = consumer(brokers)
    metadata = reader.list_topics(timeout=30)
    ends = []
    for topic in TYPES:
        for partition in metadata.topics[topic].partitions:
            _, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            ends.append(TopicPartition(topic, partition, high))
    reader.close()
    return ends


def mark(brokers, marks_path):
    marks = {}
    for end in end_offsets(brokers):
        marks.setdefault(end.topic, {})[end.partition] = end.offset
    json.dump(marks, open(marks_path, "w"))


def count(brokers, marks_path, acked_path, idle):
    from confluent_kafka import TopicPartition

    acked = set(open(acked_path).read().split())
    marks = json.load(open(marks_path))
    reader = consumer(brokers)
    reader.assign([TopicPartition(topic, int(partition), offset)
                   for topic, partitions in marks.items() for partition, offset in partitions.items()])
    seen = collections.Counter()
    last = time.monotonic()
    while time.monotonic() - last < idle:
        message = reader.poll(0.5)
        if message is None or message.error():
            continue
        last = time.monotonic()
        headers = dict(message.headers() or [])
        event_id = headers.get("ce_id", b"").decode()
        if event_id in acked:
            seen[event_id] += 1
    reader.close()
    print(json.dumps({
        "acknowledged": len(acked),
        "lost": len(acked - set(seen)),
        "duplicates": sum(n - 1 for n in seen.values()),
    }))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "post":
        post(args[0], args[1], float(args[2]), int(args[3]))
    elif command == "mark":
        mark(args[0], args[1])
    else:
        count(args[0], args[1], args[2], float(args[3]))
