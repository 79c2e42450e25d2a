// A Spectacles worker exactly as its users write one: @spectacles/brokers 0.9.3's Redis broker
// on ioredis. Driven by Gatehouse's end-to-end test (runtime-common/src/e2e/outputs.rs).
//
// Usage: node worker.js <redis url> <group> <EVENT,EVENT,...>
// stdout, one JSON object per line:
//   {"ready":true}                                  once subscribed
//   {"event":E,"data":<decoded>,"raw":"<hex>"}   per message (then acknowledged)
//   {"published":"<entry id>"}                      per command published
// stdin, one JSON object per line: {"publish":"<stream>","data":<value>} publishes `data`
// with the broker (msgpack, as every Spectacles worker does). The end of stdin ends it.
'use strict';
const readline = require('readline');
const Redis = require('ioredis');
const { Redis: RedisBroker } = require('@spectacles/brokers');
const { decode } = require('@spectacles/util');

const [url, group, events] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');

const broker = new RedisBroker(group, new Redis(url), { blockInterval: 500 });
// The library decodes with @spectacles/util's `decode` before emitting; keep the raw bytes
// too (to compare byte for byte), and decode them the same way.
broker.deserialize = (raw) => raw;
broker.on('error', (e) => process.stderr.write(`broker error: ${e.stack || e}\n`));
for (const event of events.split(',')) {
  broker.on(event, async (raw, { ack }) => {
    out({ event, data: decode(raw), raw: Buffer.from(raw).toString("hex") });
    await ack();
  });
}

(async () => {
  await broker.subscribe(events.split(','));
  out({ ready: true });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const { publish, data } = JSON.parse(line);
    out({ published: await broker.publish(publish, data) });
  }
  broker.disconnect();
  process.exit(0);
})().catch((e) => {
  process.stderr.write(`worker failed: ${e.stack || e}\n`);
  process.exit(1);
});
