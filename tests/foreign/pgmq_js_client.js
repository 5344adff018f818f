// pgmq-js as a producer and as a consumer of pgcourier's queues, driven by the interop
// tests. Connection settings come as JSON in PGCOURIER_PG ({host, port, user, password,
// database}); every command prints one JSON document on stdout.
//
//   node pgmq_js_client.js create QUEUE
//   node pgmq_js_client.js produce QUEUE '[payload, ...]'
//   node pgmq_js_client.js consume QUEUE COUNT TIMEOUT_MS
"use strict";

const { Pgmq } = require("pgmq-js");
const pg = require("pg");

function settings() {
  const given = JSON.parse(process.env.PGCOURIER_PG || "{}");
  return {
    host: given.host || "localhost",
    port: Number(given.port || 5432),
    user: given.user || "postgres",
    password: given.password || "",
    database: given.database || "postgres",
    // pgmq-js turns TLS on unless told otherwise; the test server is local.
    ssl: false,
    max: 2,
    idleTimeoutMillis: 1000,
  };
}

async function connect() {
  // pgmq is installed as SQL, not as an extension: pgmq-js must not run
  // CREATE EXTENSION (it would fail where the extension is not available).
  return Pgmq.new(settings(), { skipExtensionCreation: true });
}

// pgmq-js (1.3.1) neither sends nor returns headers: they are read here with the
// driver it is built on, from the queue row the message came from.
async function headersOf(queue, msgIds) {
  const client = new pg.Client(settings());
  await client.connect();
  try {
    const table = client.escapeIdentifier(`q_${queue}`);
    const { rows } = await client.query(
      `SELECT msg_id, headers FROM pgmq.${table} WHERE msg_id = ANY($1::bigint[])`,
      [msgIds],
    );
    return new Map(rows.map((row) => [Number(row.msg_id), row.headers]));
  } finally {
    await client.end();
  }
}

async function create(pgmq, queue) {
  await pgmq.queue.create(queue);
  return { created: queue };
}

async function produce(pgmq, queue, payloads) {
  const msgIds = [];
  for (const payload of payloads) {
    msgIds.push(await pgmq.msg.send(queue, payload));
  }
  return { msgIds };
}

async function consume(pgmq, queue, count, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  const messages = [];
  while (messages.length < count && Date.now() < deadline) {
    const batch = await pgmq.msg.readBatch(queue, 30, count - messages.length);
    if (batch.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      continue;
    }
    const headers = await headersOf(
      queue,
      batch.map((m) => m.msgId),
    );
    for (const m of batch) {
      const archived = await pgmq.msg.archive(queue, m.msgId);
      messages.push({
        msgId: m.msgId,
        readCount: m.readCount,
        message: m.message,
        headers: headers.get(m.msgId) ?? null,
        archived,
      });
    }
  }
  return { messages };
}

async function main() {
  const [command, queue, ...rest] = process.argv.slice(2);
  const pgmq = await connect();
  try {
    let result;
    if (command === "create") {
      result = await create(pgmq, queue);
    } else if (command === "produce") {
      result = await produce(pgmq, queue, JSON.parse(rest[0]));
    } else if (command === "consume") {
      result = await consume(pgmq, queue, Number(rest[0]), Number(rest[1]));
    } else {
      throw new Error(`unknown command ${command}`);
    }
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await pgmq.close();
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
