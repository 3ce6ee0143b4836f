import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { migrate, openOrm } from '../db/orm.js';
import { ROOT } from '../stack/config.js';
import { freePort, waitFor } from '../stack/net.js';
import { startPostgres } from '../stack/postgres.js';
import { spawnService, stopChild } from '../stack/services.js';
import { startTemporal } from '../stack/temporal.js';

/**
 * `npm run bench:ingest`: the ingest + rating benchmark. Starts its own PostgreSQL (durable
 * settings: fsync and synchronous_commit on, so a 200 means committed), Temporal, API processes
 * and a worker; drives POST /v1/ingest from a separate load process over loopback; then checks
 * every customer's total exactly against what the load generator sent.
 *
 *   BENCH_SECONDS (20)  BENCH_API_PROCESSES (2)  BENCH_CONCURRENCY (32)  BENCH_LAG_RATE (50000)
 *   BENCH_INGEST_ONLY=1 (start the rater after phase 1)  BENCH_PROFILE=<dir> (V8 CPU profiles of
 *   the API processes)  BENCH_VERBOSE=1 (every probe)  BENCH_DEBUG=1 (rating cursor every second)
 */
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const API_PROCESSES = Number(process.env.BENCH_API_PROCESSES ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const LAG_RATE = Number(process.env.BENCH_LAG_RATE ?? 50_000);
const CUSTOMERS = 1000;
const log = (m: string) => console.log(`[bench] ${m}`);

interface LoadResult { requests: number; failed: number; events: number; uniqueEvents: number; seconds: number; eventsPerSec: number; p50: number; p99: number; cpuSeconds: number; prebuildCpuSeconds: number; machineCpuSeconds: number; connectionErrors: string[]; retried: number; expected: Record<string, string> }

function runLoad(args: object): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'load.js'), JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load exited ${code}`))));
  });
}

/** CPU seconds (user + system) of a process and its threads, from /proc. */
function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}
/** CPU seconds of PostgreSQL: every live server process, plus the backends that exited (the postmaster's reaped children). */
function postgresCpuSeconds(postmaster: number): number {
  let total = postgresPids().reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  try {
    const f = readFileSync(`/proc/${postmaster}/stat`, 'utf8').split(') ')[1]!.split(' ');
    total += (Number(f[13]) + Number(f[14])) / 100;
  } catch { /* gone */ }
  return total;
}
function statusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m?.[1] ?? 0);
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
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

const work = mkdtempSync(join(tmpdir(), 'accrue-bench-'));
chmodSync(work, 0o755);
const children: ChildProcess[] = [];
let stops: (() => Promise<void>)[] = [];
try {
  const [pgPort, tPort] = await Promise.all([freePort(), freePort()]);
  const [postgres, temporal] = await Promise.all([
    // pg_stat_statements: where PostgreSQL's time goes in phase 1 (reported below).
    startPostgres({ dataDir: join(work, 'pg'), port: pgPort, settings: ['shared_preload_libraries=pg_stat_statements', 'pg_stat_statements.track=all'] }),
    startTemporal({ bin: process.env.ACCRUE_TEMPORAL_BIN!, port: tPort }),
  ]);
  stops = [() => temporal.stop(), () => postgres.stop()];
  const orm = await openOrm(postgres.url, { poolMax: 2 });
  await migrate(orm);
  const admin = new pg.Client({ connectionString: postgres.url });
  await admin.connect();
  await admin.query(`alter system set max_wal_size = '4GB'`);
  await admin.query('create extension if not exists pg_stat_statements');
  await admin.query('select pg_reload_conf()');

  const token = `bench-${Date.now()}`;
  const ports = await Promise.all(Array.from({ length: API_PROCESSES }, () => freePort()));
  const env = {
    ...process.env, DATABASE_URL: postgres.url, TEMPORAL_ADDRESS: temporal.address, SMTP_URL: 'smtp://127.0.0.1:9',
    ACCRUE_ADMIN_TOKEN: token, ACCRUE_TASK_QUEUE: 'bench', ACCRUE_INGEST_MAX_AGE: '34d',
  };
  // BENCH_PROFILE=dir writes a V8 CPU profile of each API process there (for `where the time goes`).
  const profile = process.env.BENCH_PROFILE ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE}` } : {};
  const apis = ports.map((port) => spawnService('api', { ...env, ...profile, PORT: String(port) }, { quiet: !process.env.BENCH_VERBOSE }));
  // BENCH_INGEST_ONLY=1 starts the worker (the rater) only after phase 1, to measure ingest alone.
  const ingestOnly = process.env.BENCH_INGEST_ONLY === '1';
  let worker = ingestOnly ? undefined : spawnService('worker', env, { quiet: true });
  children.push(...apis, ...(worker ? [worker] : []));
  const targets = ports.map((p) => `http://127.0.0.1:${p}`);
  for (const t of targets) await waitFor('API', async () => { if ((await fetch(`${t}/health`)).status !== 200) throw new Error('not yet'); });

  const H = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const prefix = `b${Date.now().toString(36)}`;
  // Customers with ingest aliases, and the metric, before any event: no backfill in the way.
  await admin.query(`insert into customer (id, name) select gen_random_uuid(), 'bench ' || i from generate_series(0, ${CUSTOMERS - 1}) i`);
  await admin.query(`insert into customer_ingest_alias (alias, customer_id, position)
                     select '${prefix}-c' || (row_number() over (order by name) - 1), id, 0 from customer where name like 'bench %'`);
  await admin.query(`insert into customer (id, name) values (gen_random_uuid(), 'probe')`);
  const probeId = (await admin.query(`select id from customer where name = 'probe'`)).rows[0].id as string;
  const metric = await (await fetch(`${targets[0]}/v1/billable-metrics/create`, { method: 'POST', headers: H, body: JSON.stringify({
    name: 'tokens', aggregation_type: 'SUM', aggregation_key: 'tokens', group_keys: [['model'], ['model', 'region']],
  }) })).json() as { data: { id: string } };
  await new Promise((r) => setTimeout(r, 2500)); // the API's metric cache

  async function caughtUp(timeoutMs = 300_000): Promise<number> {
    const t0 = Date.now();
    await waitFor('rating to catch up', async () => {
      const r = await admin.query(`select exists (select 1 from event e, rating_cursor c where e.xid >= c.xid) as pending`);
      if (r.rows[0].pending) throw new Error('pending');
    }, timeoutMs, 50);
    return Date.now() - t0;
  }

  // Phase 1: sustained throughput at full speed.
  log(`phase 1: ${SECONDS} s at full speed, ${CONCURRENCY} connections over ${API_PROCESSES} API processes`);
  const pids = { api: apis.map((a) => a.pid!), worker: worker?.pid ?? 0, postgres: postgresPids(), temporal: temporal.pid ?? 0 };
  const cpu0 = { api: pids.api.map(cpuSeconds), worker: cpuSeconds(pids.worker), pg: postgresCpuSeconds(postgres.pid!), temporal: cpuSeconds(pids.temporal), self: process.cpuUsage() };
  let pgPeakRssKb = 0;
  const sampler = setInterval(() => { pgPeakRssKb = Math.max(pgPeakRssKb, postgresPids().reduce((s, p) => s + statusKb(p, 'VmRSS'), 0)); }, 500);
  await admin.query('select pg_stat_statements_reset()');
  const full = await runLoad({ targets, token, seconds: SECONDS, concurrency: CONCURRENCY, customers: CUSTOMERS, seed: 1, prefix });
  const cpu1 = { api: pids.api.map(cpuSeconds), worker: cpuSeconds(pids.worker), pg: postgresCpuSeconds(postgres.pid!), temporal: cpuSeconds(pids.temporal), self: process.cpuUsage(cpu0.self) };
  if (!worker) {
    worker = spawnService('worker', env, { quiet: true });
    children.push(worker);
    pids.worker = worker.pid!;
  }
  const statements = (await admin.query<{ ms: number; calls: string; q: string }>(
    `select total_exec_time as ms, calls::text, regexp_replace(query, '\\s+', ' ', 'g') as q from pg_stat_statements order by total_exec_time desc limit 6`)).rows;
  const drainMs = await caughtUp();
  log(`phase 1: ${full.eventsPerSec.toFixed(0)} events/s, p50 ${full.p50.toFixed(1)} ms, p99 ${full.p99.toFixed(1)} ms, ${full.failed} failed; rating drained ${drainMs} ms after`);

  // Exact verification: every customer's SUM equals what the generator sent (unique events only).
  const got = new Map((await admin.query(
    `select k.alias, (sum(u.value_sum) * 1000)::numeric(40,0)::text as milli from usage_hourly u
       join customer_ingest_alias k on k.customer_id = u.customer_id where u.metric_id = $1 group by k.alias`, [metric.data.id])).rows.map((r) => [r.alias as string, r.milli as string]));
  const wrong = Object.entries(full.expected).filter(([alias, milli]) => got.get(alias) !== milli);
  const storedEvents = Number((await admin.query('select count(*) from event')).rows[0].count);
  // Ingest statements that met a concurrent request's ids and ran again (db/events.ts): rolled back transactions.
  const rollbacks = Number((await admin.query(`select xact_rollback from pg_stat_database where datname = current_database()`)).rows[0].xact_rollback);
  log(`transactions rolled back so far (ingest batches retried after a concurrent duplicate): ${rollbacks} of ${full.requests} requests`);

  // The same machine's bare PostgreSQL for the same rows, with the rest idle: (a) one server-side
  // INSERT … SELECT into a table with a unique index on transaction_id (no protocol, no parsing,
  // one commit: PostgreSQL's own ceiling for these rows), and (b) the same rows sent by clients as
  // durable 100-row INSERTs (ON CONFLICT DO NOTHING) over 8 connections, with no API and no rater.
  log('bare PostgreSQL: the same rows, server-side and from clients');
  await admin.query(`create table bench_bare (transaction_id text primary key, customer_id text not null, event_type text not null, ts timestamptz not null, properties jsonb not null)`);
  let t0 = performance.now();
  await admin.query('insert into bench_bare select transaction_id, customer_id, event_type, ts, properties from event');
  const bareServer = storedEvents / ((performance.now() - t0) / 1000);
  await admin.query('truncate bench_bare');
  const sample = (await admin.query<{ t: string; c: string; e: string; ts: string; p: string }>(
    `select transaction_id as t, customer_id as c, event_type as e, ts::text as ts, properties::text as p from event limit 300000`)).rows;
  const clientPool = new pg.Pool({ connectionString: postgres.url, max: 8 });
  const pg0 = postgresCpuSeconds(postgres.pid!);
  const self0 = process.cpuUsage();
  t0 = performance.now();
  let nextRow = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let i = (nextRow += 100) - 100; i < sample.length; i = (nextRow += 100) - 100) {
      const b = sample.slice(i, i + 100);
      await clientPool.query({ name: 'bare', text: `insert into bench_bare select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[]) on conflict do nothing`,
        values: [b.map((r) => r.t), b.map((r) => r.c), b.map((r) => r.e), b.map((r) => r.ts), b.map((r) => r.p)] });
    }
  }));
  const clientSecs = (performance.now() - t0) / 1000;
  const bareClient = sample.length / clientSecs;
  const pgBareCpu = postgresCpuSeconds(postgres.pid!) - pg0;
  const selfBare = process.cpuUsage(self0);
  await clientPool.end();
  await admin.query('drop table bench_bare');
  const bareRow = `server-side INSERT … SELECT ${bareServer.toFixed(0)} rows/s; from clients (8 connections, 100-row durable INSERTs) ${bareClient.toFixed(0)} rows/s `
    + `(PostgreSQL ${((pgBareCpu / sample.length) * 1e6).toFixed(1)} µs and client ${(((selfBare.user + selfBare.system) / sample.length)).toFixed(1)} µs of CPU per row)`;
  log(bareRow);

  // Phase 2: rating lag (event accepted → visible in /v1/usage) at paced rates: the target rate,
  // or, when ingest cannot reach it on this machine, a sweep below the measured maximum.
  const maxRate = Math.floor((full.eventsPerSec * 0.9) / 1000) * 1000;
  const rates = maxRate >= LAG_RATE ? [LAG_RATE] : [0.25, 0.5, 0.75, 1].map((f) => Math.max(1000, Math.floor((maxRate * f) / 1000) * 1000));
  const lagRows: [string, string][] = maxRate >= LAG_RATE ? [] : [[`rating lag at ${LAG_RATE} events/s`, `not measured: 90 % of the sustained rate (${maxRate} events/s) is below it; measured at a sweep below instead`]];
  const hourStart = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000);
  let n = 0;
  for (const [i, rate] of rates.entries()) {
    log(`phase 2: rating lag at ${rate} events/s for ${SECONDS} s`);
    const paced = runLoad({ targets, token, seconds: SECONDS, concurrency: CONCURRENCY, ratePerSec: rate, customers: CUSTOMERS, seed: 10 + i, prefix });
    await new Promise((r) => setTimeout(r, 3000)); // the load process builds its batches first
    const debug = process.env.BENCH_DEBUG ? setInterval(async () => {
      const d = (await admin.query(`select pg_snapshot_xmin(pg_current_snapshot())::text as xmin, (select xid::text from rating_cursor) as cursor,
        (select count(*) from event e, rating_cursor c where e.xid >= c.xid) as unrated,
        (select max(now() - xact_start)::text from pg_stat_activity where state <> 'idle' and datname = current_database()) as oldest,
        (select string_agg(distinct state || ' ' || left(query, 60), ' | ') from pg_stat_activity where datname = current_database() and now() - xact_start > interval '1 second') as slow`)).rows[0];
      log(JSON.stringify(d));
    }, 1000) : undefined;
    const lags: number[] = [];
    const until = Date.now() + (SECONDS - 4) * 1000;
    while (Date.now() < until) {
      n++;
      const res = await fetch(`${targets[0]}/v1/ingest`, { method: 'POST', headers: H, body: JSON.stringify([{
        transaction_id: `${prefix}-probe-${n}`, customer_id: probeId, event_type: 'llm_call', timestamp: new Date().toISOString(), properties: { tokens: '1', model: 'probe', region: 'probe' },
      }]) });
      const accepted = performance.now();
      if (res.status !== 200) throw new Error(`probe ingest ${res.status}`);
      for (;;) {
        const u = await (await fetch(`${targets[1 % targets.length]}/v1/usage`, { method: 'POST', headers: H, body: JSON.stringify({
          starting_on: hourStart.toISOString(), ending_before: new Date(hourStart.getTime() + 2 * 3_600_000).toISOString(), window_size: 'NONE',
          customer_ids: [probeId], billable_metrics: [{ id: metric.data.id }],
        }) })).json() as { data: { value: number }[] };
        if ((u.data[0]?.value ?? 0) >= n) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      lags.push(performance.now() - accepted);
      if (process.env.BENCH_VERBOSE) log(`probe ${n}: ${lags[lags.length - 1]!.toFixed(0)} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const pacedResult = await paced;
    if (debug) clearInterval(debug);
    await caughtUp();
    lagRows.push([`rating lag p50 / p99 at ${rate} events/s`, `${pct(lags, 50).toFixed(0)} ms / ${pct(lags, 99).toFixed(0)} ms over ${lags.length} probes (load achieved ${pacedResult.eventsPerSec.toFixed(0)} events/s)`]);
  }
  clearInterval(sampler);

  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, PostgreSQL ${(await admin.query('show server_version')).rows[0].server_version} on the same host`;
  const cpuUse = {
    api: cpu1.api.reduce((s, v, i) => s + v - cpu0.api[i]!, 0),
    worker: cpu1.worker - cpu0.worker,
    pg: cpu1.pg - cpu0.pg,
    // While the load process was sending (it measures the machine itself: its batch building before that is left out).
    machine: full.machineCpuSeconds,
    temporal: cpu1.temporal - cpu0.temporal,
    self: (cpu1.self.user + cpu1.self.system) / 1e6,
  };
  const rows: [string, string][] = [
    ['machine', machine],
    ['setup', `${API_PROCESSES} API processes, 1 worker${ingestOnly ? ' (started after phase 1: ingest measured alone)' : ''}, load generator in its own process, ${CONCURRENCY} keep-alive connections, batches of 100 events, ${CUSTOMERS} customers, 10 % duplicate retries, 5 % late events, 2 group keys`],
    ['sustained accepted events/s (phase 1)', `${full.eventsPerSec.toFixed(0)} over ${full.seconds.toFixed(1)} s (${full.events} events, ${full.failed} failed requests${full.retried ? `, ${full.retried} sent again after a lost connection (${full.connectionErrors.join(', ')})` : ''})`],
    ['request latency p50 / p99 (phase 1)', `${full.p50.toFixed(1)} ms / ${full.p99.toFixed(1)} ms`],
    ['rating drained after phase 1', `${drainMs} ms`],
    ['totals checked exactly', wrong.length === 0 ? `all ${Object.keys(full.expected).length} customers equal (${full.uniqueEvents} unique of ${full.events} sent; ${storedEvents} stored)` : `${wrong.length} customers DIFFER`],
    ...lagRows,
    ['bare PostgreSQL, same rows, same machine', bareRow],
    ['Accrue ÷ bare PostgreSQL', `${((full.eventsPerSec / bareServer) * 100).toFixed(1)} % of the server-side rate, ${((full.eventsPerSec / bareClient) * 100).toFixed(1)} % of the client-side rate`],
    ['CPU seconds in phase 1 (API / worker / PostgreSQL / Temporal / load client / bench; whole machine)', `${cpuUse.api.toFixed(1)} / ${cpuUse.worker.toFixed(1)} / ${cpuUse.pg.toFixed(1)} / ${cpuUse.temporal.toFixed(1)} / ${full.cpuSeconds.toFixed(1)} / ${cpuUse.self.toFixed(1)}; ${cpuUse.machine.toFixed(1)} busy of ${(cpus().length * full.seconds).toFixed(0)} available`],
    ['CPU µs per accepted event in phase 1 (API / worker / PostgreSQL / load client)', [cpuUse.api, cpuUse.worker, cpuUse.pg, full.cpuSeconds].map((c) => ((c / full.events) * 1e6).toFixed(1)).join(' / ')],
    ['PostgreSQL statements in phase 1 by execution time (pg_stat_statements)', statements.map((st) => `${(st.ms / 1000).toFixed(1)} s in ${st.calls} × ${st.q.slice(0, 60).replaceAll('|', '\\|')}…`).join('; ')],
    ['peak memory (RSS)', `API ${pids.api.map((p) => `${(statusKb(p, 'VmHWM') / 1024).toFixed(0)} MB`).join(' + ')}, worker ${(statusKb(pids.worker, 'VmHWM') / 1024).toFixed(0)} MB, PostgreSQL ${(pgPeakRssKb / 1024).toFixed(0)} MB (all backends)`],
  ];
  const table = ['| measure | result |', '|---|---|', ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join('\n');
  console.log(`\n${table}\n`);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'ingest-latest.md'), `# bench:ingest — ${new Date().toISOString()}\n\n${table}\n`);
  await admin.end();
  await orm.close();
  if (wrong.length) {
    console.error('[bench] totals differ:', wrong.slice(0, 5));
    process.exitCode = 1;
  }
} finally {
  await Promise.all(children.map((c) => stopChild(c)));
  for (const stop of stops) await stop().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
}

