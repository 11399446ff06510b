// Reads COUNT messages of TOPIC from the beginning with kafkajs (the most used Node client)
// and prints each as a JSON line {partition, key, headers, value}; exits 2 with the error if it
// cannot (kafkajs reads gzip itself and needs codec plug-ins for snappy, lz4 and zstd).
// Usage: node consume.js BROKERS TOPIC COUNT TIMEOUT_MS
const { Kafka, logLevel } = require('kafkajs');

const [brokers, topic, count, timeoutMs] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'edge-outbox-interop', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
const consumer = kafka.consumer({ groupId: `interop-${process.pid}-${Date.now()}` });

async function main() {
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  let failure = null;
  const done = new Promise((resolve) => {
    consumer.on(consumer.events.CRASH, (e) => { failure = e.payload.error; resolve(); });
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers = {};
        for (const [k, v] of Object.entries(message.headers || {})) headers[k] = v.toString();
        process.stdout.write(JSON.stringify({
          partition,
          key: message.key && message.key.toString(),
          headers,
          value: message.value.toString(),
        }) + '\n');
        seen += 1;
        if (seen >= Number(count)) resolve();
      },
    }).catch((e) => { failure = e; resolve(); });
  });
  const timer = setTimeout(() => { failure = failure || new Error(`timed out after ${seen} messages`); }, Number(timeoutMs));
  await Promise.race([done, new Promise((r) => setTimeout(r, Number(timeoutMs)))]);
  clearTimeout(timer);
  await consumer.disconnect().catch(() => {});
  if (failure || seen < Number(count)) {
    process.stderr.write(`kafkajs: ${failure ? failure.message : `only ${seen} messages`}\n`);
    process.exit(2);
  }
}

main().catch((e) => { process.stderr.write(`kafkajs: ${e.message}\n`); process.exit(2); });
