import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { SMTPServer } from 'smtp-server';
import { addMonthsClamped } from '../billing/periods.js';
import { USD_CENTS } from '../billing/money.js';
import { BillableMetric, Contract, Customer, Product, Rate, RateCard } from '../db/entities.js';
import { insertEvents, type NewEvent } from '../db/events.js';
import { newId } from '../db/ids.js';
import { migrate, openOrm } from '../db/orm.js';
import { ratePass, ratingBacklog } from '../db/rating.js';
import { ROOT } from '../stack/config.js';
import { freePort, waitFor } from '../stack/net.js';
import { startPostgres } from '../stack/postgres.js';
import { spawnService, stopChild } from '../stack/services.js';
import { startTemporal } from '../stack/temporal.js';
import { contractWorkflow } from '../workflows/contract.js';
import { contractWorkflowId } from '../workflows/search-attributes.js';

/**
 * `npm run bench:close`: the month-end storm. N contracts whose first billing period ends at the
 * same instant T, each with usage in it, approval policy NEVER, no invoice grace period; one
 * worker process, the embedded Temporal dev server, PostgreSQL on the same host, and an SMTP server
 * in this process that counts each invoice email by its Message-ID. Every contract workflow is
 * started (and has settled into its sleep) before T; the clock runs from T until every invoice is
 * FINALIZED in PostgreSQL and its email has arrived at the SMTP server exactly once.
 *
 * Reports contracts/s and where the time goes: CPU seconds of the Temporal server, PostgreSQL, the
 * worker and the SMTP server during the storm, and the progress curve.
 *
 *   BENCH_CONTRACTS (10000)  BENCH_EVENTS_PER_CONTRACT (10)  BENCH_WORKERS (1)
 *   BENCH_LEAD_SECONDS (time from the first start to T; default 40 + 25 ms per contract)
 *   BENCH_PROFILE=<dir> (V8 CPU profiles of the worker processes)
 */
const N = Number(process.env.BENCH_CONTRACTS ?? 10_000);
const EVENTS_PER = Number(process.env.BENCH_EVENTS_PER_CONTRACT ?? 10);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 1);
const LEAD_MS = Number(process.env.BENCH_LEAD_SECONDS ?? 40 + 0.025 * N) * 1000;
const log = (m: string) => console.log(`[bench] ${new Date().toISOString().slice(11, 19)} ${m}`);

function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}
/** A process and all its descendants (the Temporal CLI runs the server as itself; PostgreSQL forks). */
function treePids(root: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      parent.set(Number(d), Number(readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]));
    } catch { /* gone */ }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [pid, pp] of parent) if (pp === out[i]) out.push(pid);
  return out;
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
/** CPU seconds of PostgreSQL: its processes come and go (one per connection), so sample often. */
class PgCpu {
  private last = new Map<number, number>();
  private total = 0;
  sample(): number {
    for (const pid of postgresPids()) {
      const now = cpuSeconds(pid);
      this.total += now - (this.last.get(pid) ?? now);
      this.last.set(pid, now);
    }
    return this.total;
  }
}

const work = mkdtempSync(join(tmpdir(), 'accrue-bench-close-'));
chmodSync(work, 0o755);
const children: ChildProcess[] = [];
let stops: (() => Promise<void>)[] = [];
try {
  // ---- SMTP: counts invoice emails by Message-ID (headers only; nothing is parsed further) ----
  const seen = new Map<string, number>();
  let messages = 0;
  const smtp = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS'], logger: false, size: 0,
    onData(stream, _session, callback) {
      let head = '';
      stream.on('data', (c: Buffer) => { if (head.length < 8192) head += c.toString('latin1'); });
      stream.on('end', () => {
        messages++;
        const id = /^message-id:\s*<([^>]+)>/im.exec(head.split(/\r?\n\r?\n/)[0] ?? '')?.[1] ?? `unknown-${messages}`;
        seen.set(id, (seen.get(id) ?? 0) + 1);
        callback();
      });
    },
  });
  const smtpPort = await freePort();
  await new Promise<void>((r) => smtp.listen(smtpPort, '127.0.0.1', () => r()));
  stops.push(() => new Promise<void>((r) => smtp.close(() => r())));

  const [pgPort, tPort] = await Promise.all([freePort(), freePort()]);
  const [postgres, temporal] = await Promise.all([
    startPostgres({ dataDir: join(work, 'pg'), port: pgPort }),
    startTemporal({ bin: process.env.ACCRUE_TEMPORAL_BIN!, port: tPort }),
  ]);
  stops = [() => temporal.stop(), () => postgres.stop(), ...stops];
  const orm = await openOrm(postgres.url, { poolMax: 4 });
  await migrate(orm);
  const admin = new pg.Client({ connectionString: postgres.url });
  await admin.connect();

  // ---- N customers on one rate card, each with a contract whose first period ends at T ----
  const firstStartAt = Date.now() + 30_000; // seeding and rating come first
  const T = Math.ceil((firstStartAt + LEAD_MS) / 1000) * 1000;
  const startingAt = new Date(addMonthsClamped(T, -1));
  log(`seeding ${N} customers and contracts: periods [${startingAt.toISOString()}, ${new Date(T).toISOString()})`);
  const now = new Date();
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
  em.create(Rate, { id: newId(), rateCardId, productId, rateType: 'FLAT', price: '2', pricingGroupValues: {}, entitled: true, startingAt: new Date('2000-01-01T00:00:00Z'), createdAt: now });
  await em.flush();
  const contracts: { customerId: string; contractId: string }[] = [];
  const pool = new pg.Pool({ connectionString: postgres.url, max: 4 });
  pool.on('error', () => {});
  for (let b = 0; b < N; b += 500) {
    const e = orm.em.fork();
    const batch: { customerId: string; contractId: string }[] = [];
    for (let i = b; i < Math.min(N, b + 500); i++) {
      const customerId = newId();
      e.create(Customer, { id: customerId, name: `Storm ${i}`, billingEmail: `billing+${i}@storm.example`, customFields: {}, createdAt: now, updatedAt: now });
      batch.push({ customerId, contractId: newId() });
    }
    await e.flush();
    for (const c of batch) {
      e.create(Contract, {
        id: c.contractId, customerId: c.customerId, rateCardId, startingAt, endingBefore: null,
        usageStatementFrequency: 'MONTHLY', usageStatementDay: 'CONTRACT_START', customFields: {}, createdAt: now,
        terms: { approval_policy: { mode: 'NEVER' } },
      });
    }
    await e.flush();
    const events: NewEvent[] = [];
    for (const [k, c] of batch.entries()) {
      for (let j = 0; j < EVENTS_PER; j++) {
        events.push({ transactionId: `${c.customerId}-${j}`, customerId: c.customerId, eventType: 'completion', timestamp: new Date(T - 3_600_000 - ((b + k) * 7 + j) * 1000).toISOString(), properties: { tokens: 100 + j } });
      }
    }
    await insertEvents(pool, events);
    contracts.push(...batch);
  }
  while (await ratingBacklog(orm.em.fork())) await ratePass(orm.em.fork(), 200_000);
  // Each contract's invoice: Σ (100 + j) tokens × 2 cents.
  const expectedCents = (2 * (100 * EVENTS_PER + (EVENTS_PER * (EVENTS_PER - 1)) / 2)).toString();
  log(`seeded and rated ${N * EVENTS_PER} events; each invoice should total ${expectedCents} cents`);

  // ---- the worker(s) and every contract workflow, started before T ----
  const env = {
    ...process.env, DATABASE_URL: postgres.url, TEMPORAL_ADDRESS: temporal.address, SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
    ACCRUE_TASK_QUEUE: 'accrue', ACCRUE_INVOICE_GRACE_PERIOD: '0s', ACCRUE_APPROVAL_POLICY: 'NEVER',
    // Every contract and close stays cached (2 × N workflows): none is replayed when it wakes.
    ACCRUE_WORKER_MAX_CACHED_WORKFLOWS: process.env.ACCRUE_WORKER_MAX_CACHED_WORKFLOWS ?? String(Math.max(2 * N + 100, 1000)),
    // The storm's workflow tasks wait on the worker's sticky queue however long the backlog is
    // (with the SDK's 10 s they time out and come back as full-history replays: the first
    // 10,000-contract run collapsed to ~1 contract/s that way).
    ACCRUE_WORKER_STICKY_TIMEOUT: process.env.ACCRUE_WORKER_STICKY_TIMEOUT ?? '30m',
    // Two threads run workflow code (one per core): with 20,000 workflows cached, one thread was
    // the worker's limit (~1 core busy, the machine half idle, ~4 contracts/s).
    ACCRUE_WORKER_WORKFLOW_THREADS: process.env.ACCRUE_WORKER_WORKFLOW_THREADS ?? '2',
  };
  // BENCH_PROFILE=dir writes a V8 CPU profile of each worker process there (where the worker's time goes).
  const profile = process.env.BENCH_PROFILE ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE}` } : {};
  const workers = Array.from({ length: WORKERS }, () => spawnService('worker', { ...env, ...profile }, { quiet: true }));
  children.push(...workers);
  const connection = await Connection.connect({ address: temporal.address });
  const client = new Client({ connection });
  const startT0 = Date.now();
  if (startT0 > T - 5_000) throw new Error(`seeding took too long: T is ${T - startT0} ms away; raise BENCH_LEAD_SECONDS`);
  log(`starting ${N} contract workflows; T is in ${((T - startT0) / 1000).toFixed(0)} s`);
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < N) {
      const c = contracts[next++]!;
      await client.workflow.start(contractWorkflow, { workflowId: contractWorkflowId(c.contractId), taskQueue: 'accrue', args: [{ contractId: c.contractId }] });
    }
  }));
  const startedMs = Date.now() - startT0;
  // Settled: every workflow recorded its first lifecycle transition (its first activities ran).
  await waitFor('every contract workflow to settle', async () => {
    const n = Number((await admin.query('select count(*) from contract_lifecycle_transition')).rows[0].count);
    if (n < N) throw new Error(`${n} of ${N}`);
  }, Math.max(60_000, T - Date.now() + 600_000), 500);
  const settledMs = Date.now() - startT0;
  log(`started in ${(startedMs / 1000).toFixed(1)} s (${(N / (startedMs / 1000)).toFixed(0)}/s), settled in ${(settledMs / 1000).toFixed(1)} s`);
  if (Date.now() > T) log(`WARNING: the start phase ran ${((Date.now() - T) / 1000).toFixed(1)} s past T; raise BENCH_LEAD_SECONDS`);

  // ---- the storm ----
  await new Promise((r) => setTimeout(r, Math.max(0, T - Date.now())));
  const tempPids = () => (temporal.pid ? treePids(temporal.pid) : []);
  const workerPids = () => workers.flatMap((w) => treePids(w.pid!));
  const pgCpu = new PgCpu();
  const cpu0 = { temporal: tempPids().reduce((s, p) => s + cpuSeconds(p), 0), worker: workerPids().reduce((s, p) => s + cpuSeconds(p), 0), pg: pgCpu.sample(), self: process.cpuUsage() };
  const curve: string[] = [];
  let finalized = 0;
  let lastLog = 0;
  const timeoutMs = Number(process.env.BENCH_TIMEOUT_SECONDS ?? 1800) * 1000;
  for (;;) {
    await new Promise((r) => setTimeout(r, 250));
    pgCpu.sample();
    const r = (await admin.query(`select count(*) filter (where status = 'FINALIZED') as fin, count(*) as all from invoice`)).rows[0];
    finalized = Number(r.fin);
    const emailed = [...seen.keys()].filter((k) => k.startsWith('invoice-')).length;
    const elapsed = Date.now() - T;
    if (elapsed - lastLog >= 10_000) {
      lastLog = elapsed;
      const line = `${(elapsed / 1000).toFixed(0)} s: ${r.all} invoices frozen, ${finalized} finalized, ${emailed} emailed`;
      curve.push(line);
      log(line);
    }
    if (finalized >= N && emailed >= N) break;
    if (elapsed > timeoutMs) throw new Error(`not done after ${timeoutMs / 1000} s: ${finalized} finalized, ${emailed} emailed`);
  }
  const stormMs = Date.now() - T;
  const self = process.cpuUsage(cpu0.self);
  const cpu = {
    temporal: tempPids().reduce((s, p) => s + cpuSeconds(p), 0) - cpu0.temporal,
    worker: workerPids().reduce((s, p) => s + cpuSeconds(p), 0) - cpu0.worker,
    pg: pgCpu.sample() - cpu0.pg,
    smtp: (self.user + self.system) / 1e6,
  };
  // Let a duplicate that a retry might still produce arrive, then check everything exactly.
  await new Promise((r) => setTimeout(r, 5000));
  const invoiceMail = [...seen.entries()].filter(([k]) => k.startsWith('invoice-'));
  const duplicates = invoiceMail.filter(([, n]) => n > 1).length;
  const bad = (await admin.query(`select count(*) filter (where status <> 'FINALIZED' or emailed_at is null or total <> $1::numeric) as bad,
                                          count(distinct contract_id) as contracts from invoice`, [expectedCents])).rows[0];
  const expectedIds = new Set((await admin.query('select id from invoice')).rows.map((r: { id: string }) => `invoice-${r.id}@accrue.local`));
  const stray = invoiceMail.filter(([k]) => !expectedIds.has(k)).length;
  if (Number(bad.bad) || Number(bad.contracts) !== N || duplicates || stray || invoiceMail.length !== N) {
    throw new Error(`storm result wrong: ${bad.bad} invoices not finalized+emailed with ${expectedCents} cents, ${bad.contracts} contracts invoiced, `
      + `${invoiceMail.length} invoice emails (${duplicates} duplicated, ${stray} unknown)`);
  }
  const history = await client.workflow.list({ query: `WorkflowType = 'invoiceCloseWorkflow'` });
  let closes = 0;
  let closeEvents = 0;
  for await (const w of history) {
    closes++;
    if (closes <= 20) closeEvents += (await client.workflow.getHandle(w.workflowId).fetchHistory()).events?.length ?? 0;
  }

  const total = cpu.temporal + cpu.worker + cpu.pg + cpu.smtp;
  const share = (x: number) => `${x.toFixed(0)} s (${((100 * x) / total).toFixed(0)} %)`;
  const cpuModel = cpus()[0]?.model ?? 'unknown CPU';
  const pgVersion = (await admin.query('select version()')).rows[0].version as string;
  const table = [
    '| measure | result |', '|---|---|',
    `| machine | ${cpus().length} × ${cpuModel}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${pgVersion.split(' on ')[0]} and the Temporal dev server on the same host |`,
    `| storm | ${N.toLocaleString('en')} contracts, first periods all ending at ${new Date(T).toISOString()}, ${EVENTS_PER} events each, approval NEVER, grace 0, ${WORKERS} worker process${WORKERS > 1 ? 'es' : ''} |`,
    `| start phase (before T) | ${N.toLocaleString('en')} contract workflows started in ${(startedMs / 1000).toFixed(1)} s, settled in ${(settledMs / 1000).toFixed(1)} s |`,
    `| T → every invoice FINALIZED and emailed | **${(stormMs / 1000).toFixed(1)} s** (${(N / (stormMs / 1000)).toFixed(1)} contracts/s) |`,
    `| exactly once | ${invoiceMail.length.toLocaleString('en')} invoice emails at the SMTP server, one per invoice, 0 duplicates; every total ${expectedCents} cents |`,
    `| CPU during the storm (of ${(2 * stormMs / 1000).toFixed(0)} core-s) | Temporal dev server ${share(cpu.temporal)}, worker ${share(cpu.worker)}, PostgreSQL ${share(cpu.pg)}, SMTP server + bench ${share(cpu.smtp)} |`,
    `| per contract | ${(1000 * cpu.temporal / N).toFixed(1)} ms Temporal, ${(1000 * cpu.worker / N).toFixed(1)} ms worker, ${(1000 * cpu.pg / N).toFixed(1)} ms PostgreSQL; a close workflow's history ${closeEvents ? (closeEvents / Math.min(closes, 20)).toFixed(0) : '?'} events |`,
  ].join('\n');
  console.log(`\n${table}\n\nprogress:\n${curve.join('\n')}\n`);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', `close-latest${WORKERS > 1 ? `-${WORKERS}-workers` : ''}.md`),
    `# bench:close — ${new Date().toISOString()}\n\n${table}\n\nProgress after T:\n\n${curve.map((l) => `- ${l}`).join('\n')}\n`);
  await connection.close();
  await pool.end();
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
