import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { USD_CENTS } from '../billing/money.js';
import { BillableMetric, Contract, Customer, CustomerIngestAlias, Product, Rate, RateCard } from '../db/entities.js';
import { newId } from '../db/ids.js';
import { migrate, openOrm } from '../db/orm.js';
import { ROOT } from '../stack/config.js';
import { freePort, waitFor } from '../stack/net.js';
import { startPostgres } from '../stack/postgres.js';
import { spawnService, stopChild } from '../stack/services.js';
import { startTemporal } from '../stack/temporal.js';
import { monthStart } from '../test/stack.js';
import { startWebhookReceiver } from '../test/webhook-receiver.js';

/**
 * `npm run bench:alerts`: alert latency under load, and entitlement checks from memory.
 *
 * 1,000 customers, each with a contract (1 cent a token), a spend alert and a usage alert whose
 * thresholds the load crosses at known moments (spread over the run). The bench sends
 * BENCH_RATE events/s (10,000) for BENCH_SECONDS (40), 100 events a request, each event one
 * token for the next customer in turn, and records when each request got its 200. Per customer
 * and alert it knows, from its own count of what it sent, whether and with which request the
 * threshold was crossed; latency is that request's 200 → the webhook's arrival at a receiver in
 * this process (signed, verified). It checks no alert fired twice (distinct notification ids per
 * customer and alert) and none was missed or fired without being crossed.
 *
 * With BENCH_SLOW_RECEIVER_MS (20,000; 0 for none) a second endpoint, subscribed to the same
 * alerts, answers every request only after that long: the latency above is still measured at
 * the fast receiver, so it shows whether a slow receiver holds up anyone else's deliveries.
 *
 * Entitlements: GET /v1/accrue/customers/{id}/entitlements at BENCH_ENTITLEMENT_RPS (2,000) for
 * 15 s over all customers, before the load and again after it (each after a warm-up: every
 * customer once, then 3 s of the same traffic), p50/p99 as the client sees them and as the API
 * reports in Server-Timing.
 */
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 1000);
const RATE = Number(process.env.BENCH_RATE ?? 10_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 40);
const ENT_RPS = Number(process.env.BENCH_ENTITLEMENT_RPS ?? 2000);
const ENT_SECONDS = Number(process.env.BENCH_ENTITLEMENT_SECONDS ?? 15);
const SLOW_MS = Number(process.env.BENCH_SLOW_RECEIVER_MS ?? 20_000);
const BATCH = 100;
const log = (m: string) => console.log(`[bench] ${new Date().toISOString().slice(11, 19)} ${m}`);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}
function postgresPids(): number[] {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres';
    } catch {
      return false;
    }
  });
}
class PgCpu {
  private last = new Map<number, number>();
  private total = 0;
  sample(): number {
    for (const pid of postgresPids()) {
      const now = cpuSeconds(pid);
      this.total += Math.max(0, now - (this.last.get(pid) ?? 0));
      this.last.set(pid, now);
    }
    return this.total;
  }
}

const work = mkdtempSync(join(tmpdir(), 'accrue-bench-alerts-'));
chmodSync(work, 0o755);
const children: ChildProcess[] = [];
let stops: (() => Promise<void>)[] = [];
try {
  const receiver = await startWebhookReceiver();
  stops.push(() => receiver.close());
  const slow = SLOW_MS > 0 ? await startWebhookReceiver() : undefined;
  if (slow) {
    slow.answerWith(() => new Promise<number>((r) => setTimeout(() => r(200), SLOW_MS)));
    stops.push(() => slow.close());
  }
  const [pgPort, tPort, apiPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const [postgres, temporal] = await Promise.all([
    startPostgres({ dataDir: join(work, 'pg'), port: pgPort }),
    startTemporal({ bin: process.env.ACCRUE_TEMPORAL_BIN!, port: tPort }),
  ]);
  stops = [() => temporal.stop(), () => postgres.stop(), ...stops];
  const orm = await openOrm(postgres.url, { poolMax: 4 });
  await migrate(orm);
  const admin = new pg.Client({ connectionString: postgres.url });
  admin.on('error', () => undefined); // the server stopping at the end
  await admin.connect();

  // ---- catalog, customers, contracts (no workflows: the contracts only need to price) ----
  const now = new Date();
  const periodStart = new Date(monthStart(0, now));
  const em = orm.em.fork();
  const metricId = newId();
  em.create(BillableMetric, {
    id: metricId, name: 'tokens', aggregationType: 'SUM', aggregationKey: 'tokens', eventTypeFilter: { in_values: ['completion'] }, propertyFilters: [], groupKeys: [],
    customFields: {}, createdAt: now, ratingFromXid: '1', backfillCursorXid: '1', backfillStatus: 'DONE', backfillEventsProcessed: 0, backfillEventsTotal: 0,
  });
  await em.flush();
  const productId = newId();
  em.create(Product, { id: productId, name: 'Tokens', type: 'USAGE', billableMetricId: metricId, tags: [], customFields: {}, attributes: {}, updates: [], createdAt: now });
  const rateCardId = newId();
  em.create(RateCard, { id: rateCardId, name: 'bench', creditTypeId: USD_CENTS.id, customFields: {}, aliases: [], createdAt: now });
  await em.flush();
  em.create(Rate, { id: newId(), rateCardId, productId, rateType: 'FLAT', price: '1', pricingGroupValues: {}, entitled: true, startingAt: new Date('2000-01-01T00:00:00Z'), createdAt: now });
  await em.flush();
  const prefix = `a${Date.now().toString(36)}`;
  const customers: { id: string; alias: string; spendAt: number; usageAt: number }[] = [];
  for (let i = 0; i < CUSTOMERS; i++) {
    // Each customer gets SECONDS × RATE / CUSTOMERS tokens in all; thresholds spread over 15–85 % of that.
    const total = Math.floor((SECONDS * RATE) / CUSTOMERS);
    customers.push({ id: newId(), alias: `${prefix}-${i}`, spendAt: Math.max(1, Math.floor(total * (0.15 + 0.7 * ((i * 37) % 100) / 100))), usageAt: Math.max(1, Math.floor(total * (0.15 + 0.7 * ((i * 61 + 13) % 100) / 100))) });
  }
  for (let b = 0; b < CUSTOMERS; b += 500) {
    const e = orm.em.fork();
    const batch = customers.slice(b, b + 500);
    for (const c of batch) e.create(Customer, { id: c.id, name: `Alert ${c.alias}`, customFields: {}, createdAt: now, updatedAt: now });
    await e.flush();
    for (const c of batch) {
      e.create(CustomerIngestAlias, { alias: c.alias, customerId: c.id, position: 0 });
      e.create(Contract, {
        id: newId(), customerId: c.id, rateCardId, startingAt: periodStart, endingBefore: null,
        usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, createdAt: now, terms: {},
      });
    }
    await e.flush();
  }
  await admin.query(`insert into customer_event_key (key, customer_id) select alias, customer_id from customer_ingest_alias on conflict do nothing`);

  // ---- API and worker ----
  const token = `bench-${Date.now()}`;
  const env = {
    ...process.env, DATABASE_URL: postgres.url, TEMPORAL_ADDRESS: temporal.address, SMTP_URL: 'smtp://127.0.0.1:9', PORT: String(apiPort),
    ACCRUE_ADMIN_TOKEN: token, ACCRUE_TASK_QUEUE: 'bench', ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1', ACCRUE_WEBHOOK_RETRY_INITIAL: '500ms',
  };
  const profile = process.env.BENCH_PROFILE ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE}` } : {};
  // BENCH_API_LOG=1 shows the API's output (with ACCRUE_LOG_GC_PAUSES_MS=2, its GC pauses).
  const api = spawnService('api', { ...env, ...(process.env.BENCH_API_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_API_NODE_OPTIONS } : {}) }, { quiet: process.env.BENCH_API_LOG !== '1' });
  const worker = spawnService('worker', { ...env, ...profile }, { quiet: true });
  children.push(api, worker);
  const base = `http://127.0.0.1:${apiPort}`;
  await waitFor('the API', async () => { if ((await fetch(`${base}/health`)).status !== 200) throw new Error('not yet'); }, 60_000);
  const H = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers: H, body: JSON.stringify(body) });
    if (res.status >= 300) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<{ data: { id: string; secret?: string } }>;
  };
  const endpoint = await post('/v1/accrue/webhook-endpoints', { url: receiver.url, event_types: ['alerts.spend_threshold_reached', 'alerts.usage_threshold_reached'] });
  if (slow) await post('/v1/accrue/webhook-endpoints', { url: slow.url, event_types: ['alerts.spend_threshold_reached', 'alerts.usage_threshold_reached'] });
  const alertOf = new Map<string, { customer: number; kind: 'spend' | 'usage' }>();
  for (const [i, c] of customers.entries()) {
    const s = await post('/v1/alerts/create', { customer_id: c.id, alert_type: 'spend_threshold_reached', name: 'spend', threshold: c.spendAt });
    const u = await post('/v1/alerts/create', { customer_id: c.id, alert_type: 'usage_threshold_reached', name: 'usage', threshold: c.usageAt, billable_metric_id: metricId });
    alertOf.set(s.data.id, { customer: i, kind: 'spend' });
    alertOf.set(u.data.id, { customer: i, kind: 'usage' });
  }
  log(`${CUSTOMERS} customers, contracts and ${alertOf.size} alerts; waiting for their first evaluation`);
  await waitFor('the first evaluation of every alert', async () => {
    const r = await admin.query(`select count(*)::int as n from customer_alert_state where status = 'ok'`);
    if (r.rows[0].n < alertOf.size) throw new Error(`${r.rows[0].n} evaluated`);
  }, 300_000, 500);

  // ---- entitlements at ENT_RPS from memory (one warm-up pass over every customer first) ----
  const entAgent = new Agent({ keepAlive: true, maxSockets: 32 });
  const get = (id: string) => new Promise<{ status: number; ms: number; serverMs: number; hit: boolean }>((resolve, reject) => {
    const start = performance.now();
    const req = request(`${base}/v1/accrue/customers/${id}/entitlements`, { agent: entAgent, headers: { authorization: H.authorization } }, (res) => {
      res.resume();
      const serverMs = Number(/dur=([\d.]+)/.exec(String(res.headers['server-timing'] ?? ''))?.[1] ?? NaN);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - start, serverMs, hit: res.headers['x-accrue-cache'] === 'hit' }));
    });
    req.on('error', reject);
    req.end();
  });
  const measureEntitlements = async () => {
    // Warm-up: every customer once (fills the cache); the client process then warms the hit path
    // for 3 s at the same rate (JIT) before it measures.
    for (let b = 0; b < CUSTOMERS; b += 50) await Promise.all(customers.slice(b, b + 50).map((c) => get(c.id)));
    const apiCpu0 = cpuSeconds(api.pid!);
    const out = await new Promise<{ requests: number; seconds: number; hits: number; bad: number; cpuSeconds: number; p50: number; p99: number; serverP50: number; serverP99: number }>((resolve, reject) => {
      const child = spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'entitlements-load.js'), JSON.stringify({ base, token, ids: customers.map((c) => c.id), rps: ENT_RPS, seconds: ENT_SECONDS, warmupSeconds: 3 })], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      child.stdout.on('data', (b: Buffer) => (text += b.toString()));
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(text)) : reject(new Error(`entitlements load exited ${code}`))));
    });
    const apiCpu = cpuSeconds(api.pid!) - apiCpu0;
    const line = `p50 ${out.p50.toFixed(2)} ms, p99 ${out.p99.toFixed(2)} ms** at ${(out.requests / out.seconds).toFixed(0)} requests/s for ${out.seconds.toFixed(0)} s (target ${ENT_RPS}); ${(100 * out.hits / Math.max(1, out.requests)).toFixed(1)} % from memory; inside the API (Server-Timing) p50 ${out.serverP50.toFixed(2)} / p99 ${out.serverP99.toFixed(2)} ms; ${out.bad} failed; API CPU ${apiCpu.toFixed(1)} s (incl. warm-up), load client ${out.cpuSeconds.toFixed(1)} s (own process)`;
    log(`entitlements: ${line.replace('**', '')}`);
    return { line, bad: out.bad };
  };
  log('entitlements, before the load');
  const entQuiet = await measureEntitlements();

  // ---- the load: RATE events/s, BATCH a request, one token each, customers in turn ----
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const send = (body: string) => new Promise<number>((resolve, reject) => {
    const req = request(`${base}/v1/ingest`, { method: 'POST', agent, headers: { ...H, 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
  const requests: { customers: number[]; okAt: number }[] = [];
  let next = 0;
  let seq = 0;
  let failed = 0;
  const pgCpu = new PgCpu();
  const cpu0 = { api: cpuSeconds(api.pid!), worker: cpuSeconds(worker.pid!), temporal: cpuSeconds(temporal.pid ?? 0), pg: pgCpu.sample(), self: process.cpuUsage() };
  const t0 = Date.now();
  const interval = 1000 / (RATE / BATCH);
  const inflight: Promise<void>[] = [];
  log(`load: ${RATE} events/s for ${SECONDS} s (${BATCH} a request)`);
  for (let k = 0; Date.now() < t0 + SECONDS * 1000; k++) {
    const due = t0 + k * interval;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const batch: number[] = [];
    const events = [];
    for (let j = 0; j < BATCH; j++) {
      const i = next++ % CUSTOMERS;
      batch.push(i);
      events.push({ transaction_id: `${prefix}-e${seq++}`, customer_id: customers[i]!.alias, event_type: 'completion', timestamp: new Date().toISOString(), properties: { tokens: 1 } });
    }
    inflight.push(send(JSON.stringify(events)).then((status) => {
      if (status === 200) requests.push({ customers: batch, okAt: Date.now() });
      else failed++;
    }, () => { failed++; }));
    if (inflight.length > 2000) await Promise.all(inflight.splice(0, 1000));
  }
  await Promise.all(inflight);
  const loadSeconds = (Date.now() - t0) / 1000;
  const sent = requests.length * BATCH;
  log(`sent ${sent} events in ${loadSeconds.toFixed(1)} s (${(sent / loadSeconds).toFixed(0)}/s), ${failed} requests failed`);

  // ---- expected crossings, from what was sent (requests in the order their 200 came) ----
  const counts = new Array<number>(CUSTOMERS).fill(0);
  const crossedAt = new Map<string, number>(); // `${customer}:${kind}` → the 200 of the crossing request
  for (const r of [...requests].sort((a, b) => a.okAt - b.okAt)) {
    for (const i of r.customers) {
      counts[i]!++;
      const c = customers[i]!;
      if (counts[i] === c.spendAt) crossedAt.set(`${i}:spend`, r.okAt);
      if (counts[i] === c.usageAt) crossedAt.set(`${i}:usage`, r.okAt);
    }
  }
  await waitFor('every expected alert to arrive', async () => {
    const got = new Set(receiver.received.filter((w) => w.answered === 200).map((w) => { const a = alertOf.get(String(w.properties.alert_id)); return a ? `${a.customer}:${a.kind}` : ''; }));
    const missing = [...crossedAt.keys()].filter((k) => !got.has(k));
    if (missing.length) throw new Error(`${missing.length} not yet`);
  }, 120_000, 200).catch((err: Error) => log(`not all arrived: ${err.message}`));
  const cpu1 = { api: cpuSeconds(api.pid!), worker: cpuSeconds(worker.pid!), temporal: cpuSeconds(temporal.pid ?? 0), pg: pgCpu.sample(), self: process.cpuUsage(cpu0.self) };
  const spanS = (Date.now() - t0) / 1000;

  // ---- verify and measure ----
  const secret = endpoint.data.secret!;
  const { default: Metronome } = await import('@metronome/sdk');
  const verifier = new Metronome({ bearerToken: 'x', baseURL: base });
  const byAlertCustomer = new Map<string, Set<string>>();
  const firstArrival = new Map<string, number>();
  let badSignatures = 0;
  for (const w of receiver.received) {
    try {
      verifier.webhooks.unwrap(w.body, w.headers as Record<string, string>, secret);
    } catch {
      badSignatures++;
    }
    const a = alertOf.get(String(w.properties.alert_id));
    if (!a || w.answered !== 200) continue;
    const key = `${a.customer}:${a.kind}`;
    (byAlertCustomer.get(key) ?? byAlertCustomer.set(key, new Set()).get(key)!).add(w.id);
    if (!firstArrival.has(key)) firstArrival.set(key, w.at);
  }
  const twice = [...byAlertCustomer.values()].filter((ids) => ids.size > 1).length;
  const missed = [...crossedAt.keys()].filter((k) => !byAlertCustomer.has(k)).length;
  const unexpected = [...byAlertCustomer.keys()].filter((k) => !crossedAt.has(k)).length;
  const latencies = [...crossedAt.entries()].filter(([k]) => firstArrival.has(k)).map(([k, okAt]) => firstArrival.get(k)! - okAt);
  // Where the time goes: crossing 200 → notification written (rating + evaluation) → arrival
  // (dispatch: endpoints fixed, first attempt made by the dispatcher, HTTP).
  const stamps = new Map((await admin.query(`select properties ->> 'alert_id' as alert_id, extract(epoch from created_at) * 1000 as created from outbound_event where type like 'alerts.%'`)).rows
    .map((r) => [String(r.alert_id), { created: Number(r.created) }]));
  const stages = { evaluate: [] as number[], deliver: [] as number[] };
  for (const [alertId, a] of alertOf) {
    const key = `${a.customer}:${a.kind}`;
    const st = stamps.get(alertId);
    const okAt = crossedAt.get(key);
    const arrived = firstArrival.get(key);
    if (!st || okAt === undefined || arrived === undefined) continue;
    stages.evaluate.push(st.created - okAt);
    stages.deliver.push(arrived - st.created);
  }
  const slowLine = slow ? `a second endpoint answering after ${SLOW_MS / 1000} s got ${slow.received.length + slow.stats.held} requests (at most ${slow.stats.maxHeld} at once), ${slow.stats.abandoned} given up by the sender; the latency above is the fast endpoint's` : 'none';
  const stage = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(0)} / p99 ${pct(xs, 99).toFixed(0)} ms`;
  log(`stages: evaluate ${stage(stages.evaluate)}, deliver ${stage(stages.deliver)}`);
  log(`alerts: ${crossedAt.size} crossings, ${latencies.length} delivered, p50 ${pct(latencies, 50)} ms, p99 ${pct(latencies, 99)} ms, max ${Math.max(...latencies)} ms; fired twice ${twice}, missed ${missed}, unexpected ${unexpected}, bad signatures ${badSignatures}`);

  // ---- what the idle system costs (rater, outbound loops polling), before entitlements ----
  await new Promise((r) => setTimeout(r, 5000));
  const idle0 = { api: cpuSeconds(api.pid!), worker: cpuSeconds(worker.pid!), temporal: cpuSeconds(temporal.pid ?? 0), pg: pgCpu.sample() };
  await new Promise((r) => setTimeout(r, 10_000));
  const idle = { api: cpuSeconds(api.pid!) - idle0.api, worker: cpuSeconds(worker.pid!) - idle0.worker, temporal: cpuSeconds(temporal.pid ?? 0) - idle0.temporal, pg: pgCpu.sample() - idle0.pg };
  log(`idle for 10 s: API ${idle.api.toFixed(2)} s, worker ${idle.worker.toFixed(2)} s, PostgreSQL ${idle.pg.toFixed(2)} s, Temporal ${idle.temporal.toFixed(2)} s of CPU`);

  log('entitlements, after the load');
  const entAfter = await measureEntitlements();
  const entFailed = entQuiet.bad + entAfter.bad;

  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, PostgreSQL ${(await admin.query('show server_version')).rows[0].server_version} and the Temporal dev server on the same host`;
  const cpu = { api: cpu1.api - cpu0.api, worker: cpu1.worker - cpu0.worker, temporal: cpu1.temporal - cpu0.temporal, pg: cpu1.pg - cpu0.pg, bench: (cpu1.self.user + cpu1.self.system) / 1e6 };
  const lines = [
    `# bench:alerts — ${new Date().toISOString()}`,
    '',
    '| measure | result |',
    '|---|---|',
    `| machine | ${machine} |`,
    `| load | ${sent.toLocaleString('en-US')} events in ${loadSeconds.toFixed(1)} s (${(sent / loadSeconds).toFixed(0)} events/s, target ${RATE}), ${BATCH} a request, ${CUSTOMERS} customers, ${failed} failed requests; 1 API process, 1 worker |`,
    `| alerts | ${alertOf.size} (a spend and a usage alert per customer); ${crossedAt.size} crossed by the load |`,
    `| **crossing event's 200 → webhook arrival** | **p50 ${pct(latencies, 50)} ms, p99 ${pct(latencies, 99)} ms**, max ${Math.max(...latencies)} ms over ${latencies.length} crossings |`,
    `| slow endpoint beside it | ${slowLine} |`,
    `| where the time goes | 200 → crossing recorded with its notification (rating pass + evaluation round) ${stage(stages.evaluate)}; → webhook arrived (dispatch, first attempt by the dispatcher) ${stage(stages.deliver)} |`,
    `| exactly once | fired twice: ${twice}; missed: ${missed}; fired without a crossing: ${unexpected}; signatures failing the SDK's unwrap: ${badSignatures} |`,
    `| CPU during load + delivery (${spanS.toFixed(0)} s, ${(2 * spanS).toFixed(0)} core-s) | API ${cpu.api.toFixed(0)} s, worker ${cpu.worker.toFixed(0)} s, PostgreSQL ${cpu.pg.toFixed(0)} s, Temporal ${cpu.temporal.toFixed(0)} s, bench (load client + receiver) ${cpu.bench.toFixed(0)} s |`,
    `| idle system (10 s, no load) | CPU: API ${idle.api.toFixed(2)} s, worker ${idle.worker.toFixed(2)} s, PostgreSQL ${idle.pg.toFixed(2)} s, Temporal ${idle.temporal.toFixed(2)} s |`,
    `| **entitlements**, before the load | **${entQuiet.line} |`,
    `| entitlements, right after the load (PostgreSQL vacuuming 400k new rows, the worker settling) | ${entAfter.line.replace('**', '')} |`,
    '',
  ];
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'alerts-latest.md'), lines.join('\n'));
  console.log(lines.join('\n'));
  if (twice || missed || unexpected || badSignatures || failed || entFailed) process.exitCode = 1;
  agent.destroy();
  entAgent.destroy();
  await admin.end();
  await orm.close();
} catch (err) {
  console.error(`[bench] failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
} finally {
  for (const c of children) await stopChild(c);
  for (const s of stops) await s().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
}
