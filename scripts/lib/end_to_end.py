"""End-to-end latency for scripts/peer-bench: from the 202 to the message being readable in
Kafka, for any of the peers.

  end_to_end.py URL BROKERS SECONDS RATE
      Posts single events at RATE per second for SECONDS (4 clients) while a confluent-kafka
      consumer reads every catalogue topic from where it ended before the first post; prints JSON: events, p50_s, p99_s,
      max_s (time from each 202 to the consumer's receipt of the event), and missing (answered
      202 but not read within 30 s of the last post).
"""
import http.client
import json
import threading
import time
import uuid

from crash_compare import consumer, end_offsets, send


def main(url, brokers, seconds, rate):
    host, port = url.removeprefix("http://").split(":")
    answered = {}
    received = {}
    lock = threading.Lock()
    reader = consumer(brokers)
    reader.assign(end_offsets(brokers))
    done = threading.Event()

    def read():
        while not done.is_set():
            message = reader.poll(0.2)
            if message is None or message.error():
                continue
            event_id = dict(message.headers() or []).get("ce_id", b"").decode()
            if event_id.startswith("e2e-"):
                with lock:
                    received.setdefault(event_id, time.monotonic())

    thread = threading.Thread(target=read)
    thread.start()

    def client(n, clients):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        start = time.monotonic()
        sent = 0
        while sent / rate * clients < seconds:
            due = start + sent * clients / rate
            time.sleep(max(0, due - time.monotonic()))
            event_id = f"e2e-{uuid.uuid4()}"
            if send(connection, event_id, f"e2e-{n}", sent):
                with lock:
                    answered[event_id] = time.monotonic()
            sent += 1

    clients = [threading.Thread(target=client, args=(n, 4)) for n in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if all(i in received for i in answered):
                break
        time.sleep(0.2)
    done.set()
    thread.join()
    reader.close()
    latencies = sorted(received[i] - t for i, t in answered.items() if i in received)
    pick = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None
    print(json.dumps({
        "events": len(answered), "p50_s": pick(0.5), "p99_s": pick(0.99),
        "max_s": latencies[-1] if latencies else None,
        "missing": len([i for i in answered if i not in received]),
    }))


if __name__ == "__main__":
    import sys

    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
