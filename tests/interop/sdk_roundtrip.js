// The JavaScript CloudEvents SDK (npm `cloudevents`) against edge-outbox: one event of each
// catalogue type, made with the SDK and posted with its own HTTP helpers (binary and structured
// mode; batched mode as a JSON array of the SDK's event JSON), then read back from Kafka with
// kafkajs and decoded with the SDK's Kafka binding (`Kafka.toEvent`), and compared with what was
// sent: id, source, type, time, subject, datacontenttype, data and an extension.
// Prints one JSON line {sent, received, mismatches}; exits 1 on any mismatch, 2 on an error.
// Usage: node sdk_roundtrip.js URL BROKERS TYPES_JSON_FILE PREFIX TIMEOUT_MS
const fs = require('fs');
const { isDeepStrictEqual } = require('util');
const { CloudEvent, HTTP, Kafka: CeKafka } = require('cloudevents');
const { Kafka, logLevel } = require('kafkajs');

const [url, brokers, typesFile, prefix, timeoutMs] = process.argv.slice(2);
const catalogue = JSON.parse(fs.readFileSync(typesFile, 'utf8'));

function made(i, entry) {
  const tenant = `tenant-${i % 5}`;
  return new CloudEvent({
    specversion: '1.0',
    id: `${prefix}-${i}`,
    source: 'integration-hub-svc',
    type: entry.type,
    time: '2026-02-24T12:00:00.000Z',
    subject: tenant,
    datacontenttype: 'application/json',
    data: { tenantId: tenant, n: i, note: 'café ☕' },
    comexamplex: `v${i}`,
  });
}

async function post(headers, body) {
  const answer = await fetch(`${url}/v1/events`, { method: 'POST', headers, body });
  if (answer.status !== 202) throw new Error(`${answer.status}: ${await answer.text()}`);
}

async function send(events) {
  const batch = [];
  for (const [i, event] of events.entries()) {
    if (i % 3 === 0) {
      const message = HTTP.binary(event);
      await post(message.headers, message.body);
    } else if (i % 3 === 1) {
      const message = HTTP.structured(event);
      await post(message.headers, message.body);
    } else {
      batch.push(event.toJSON());
    }
  }
  await post({ 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify(batch));
}

async function receive(count) {
  const kafka = new Kafka({ clientId: 'edge-outbox-sdk', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `sdk-${process.pid}-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topics: [...new Set(catalogue.map((e) => e.topic))], fromBeginning: true });
  const received = new Map();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, Number(timeoutMs));
    consumer.on(consumer.events.CRASH, (e) => reject(e.payload.error));
    consumer.run({
      eachMessage: async ({ message }) => {
        const headers = {};
        for (const [k, v] of Object.entries(message.headers || {})) headers[k] = v.toString();
        if (!(headers.ce_id || '').startsWith(`${prefix}-`)) return;
        const event = CeKafka.toEvent({ headers, key: message.key && message.key.toString(), value: message.value });
        received.set(event.id, { event, key: message.key && message.key.toString() });
        if (received.size >= count) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.disconnect().catch(() => {});
  return received;
}

function compare(sent, got) {
  const problems = [];
  if (!got) return [`${sent.id}: not received`];
  const { event, key } = got;
  for (const name of ['id', 'source', 'type', 'subject', 'datacontenttype', 'comexamplex']) {
    if (event[name] !== sent[name]) problems.push(`${sent.id}: ${name} ${JSON.stringify(event[name])} != ${JSON.stringify(sent[name])}`);
  }
  if (new Date(event.time).getTime() !== new Date(sent.time).getTime()) problems.push(`${sent.id}: time ${event.time} != ${sent.time}`);
  let data = event.data;
  if (Buffer.isBuffer(data) || data instanceof Uint8Array) data = JSON.parse(Buffer.from(data).toString());
  if (typeof data === 'string') data = JSON.parse(data);
  // JSON objects compare as values: structured and batched data come back re-serialised.
  if (!isDeepStrictEqual(data, sent.data)) problems.push(`${sent.id}: data ${JSON.stringify(data)} != ${JSON.stringify(sent.data)}`);
  if (key !== sent.data.tenantId) problems.push(`${sent.id}: key ${key} != ${sent.data.tenantId}`);
  return problems;
}

async function main() {
  const events = catalogue.map((entry, i) => made(i, entry));
  await send(events);
  const received = await receive(events.length);
  const mismatches = events.flatMap((e) => compare(e, received.get(e.id)));
  process.stdout.write(JSON.stringify({ sent: events.length, received: received.size, mismatches }) + '\n');
  process.exit(mismatches.length ? 1 : 0);
}

main().catch((e) => { process.stderr.write(`sdk_roundtrip.js: ${e.stack || e}\n`); process.exit(2); });
