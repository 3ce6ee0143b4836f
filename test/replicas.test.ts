import type { ChildProcess } from 'node:child_process';
import { hostname } from 'node:os';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Dec } from '../billing/money.js';
import { freePort } from '../stack/net.js';
import { spawnService, stopChild } from '../stack/services.js';
import { ratingWorkflowId } from '../workflows/search-attributes.js';
import { createTestDatabase, eventually, http, startApp, testStack, uniqueName, type RunningApp } from './stack.js';

/**
 * Replicas: two API processes and two worker processes on one database, one Temporal and one task
 * queue. Usage is ingested through both APIs at once (duplicates re-sent through the other API,
 * the same batch sent to both at the same moment) while the worker running the rater is
 * SIGKILLed and replaced. Totals are exact, every unique transaction id is stored once, one
 * rating workflow runs, and the rating lock (LOCK TABLE rating_cursor, db/rating.ts) has one
 * holder at a time: the killed worker until the kill, then the live worker Temporal hands the
 * retried activity to — never both, never anyone else.
 *
 * Each process sets its own PGAPPNAME, so pg_stat_activity names the process of every session.
 */
const PENDING_ACTIVITY_STATE_STARTED = 2; // temporal.api.enums.v1.PendingActivityState

interface Proc { name: string; proc: ChildProcess; identity: string }
interface Sample { phase: 'before-kill' | 'after-kill' | 'after-handover'; holders: { pid: number; app: string }[] }

describe('replicas: two APIs and two workers on one database and task queue', () => {
  let orm: MikroORM;
  let dbUrl: string;
  let app: RunningApp; // API "a" (startApp), without its worker
  let apiB: ChildProcess | undefined;
  let baseB: string;
  const workers: Proc[] = [];
  let connection: Connection | undefined;
  let temporal: Client;
  let monitorDb: pg.Client | undefined;
  let monitoring = false;
  let monitor: Promise<void> | undefined;
  const quiet = process.env.ACCRUE_TEST_VERBOSE !== '1';

  function startWorker(name: string): Promise<Proc> {
    const proc = spawnService('worker', { ...app.env, PGAPPNAME: name }, { quiet });
    const w = { name, proc, identity: `${proc.pid}@${hostname()}` };
    workers.push(w);
    return new Promise((resolve, reject) => {
      let out = '';
      proc.stdout?.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('polling task queue')) resolve(w);
      });
      proc.once('exit', (code, signal) => reject(new Error(`worker ${name} exited (${code ?? signal}) before polling`)));
    });
  }

  beforeAll(async () => {
    const db = await createTestDatabase('replicas');
    orm = db.orm;
    dbUrl = db.url;
    app = await startApp({ databaseUrl: db.url, ingestMaxAge: '34d', withWorker: false, env: { PGAPPNAME: 'replicas-api-a' } });
    const portB = await freePort();
    baseB = `http://127.0.0.1:${portB}`;
    apiB = spawnService('api', { ...app.env, PORT: String(portB), PGAPPNAME: 'replicas-api-b' }, { quiet });
    await Promise.all([
      eventually('the second API to answer /health', async () => {
        const res = await fetch(`${baseB}/health`);
        if (res.status !== 200) throw new Error(`health ${res.status}`);
      }),
      startWorker('replicas-worker-1'),
      startWorker('replicas-worker-2'),
    ]);
    connection = await Connection.connect({ address: testStack().temporalAddress });
    temporal = new Client({ connection });
    monitorDb = new pg.Client({ connectionString: dbUrl, application_name: 'replicas-monitor' });
    await monitorDb.connect();
  }, 120_000);

  afterAll(async () => {
    monitoring = false; // a failed test leaves it running
    await monitor?.catch(() => undefined);
    await Promise.all([app?.stop(), apiB ? stopChild(apiB) : undefined, ...workers.map((w) => stopChild(w.proc))]);
    await monitorDb?.end();
    await connection?.close();
    await orm?.close();
  });

  test('exact totals, each event stored once, one rater at a time across a worker SIGKILL', async () => {
    const started = Date.now();
    const apiA = { baseURL: app.baseURL };
    const apiBx = { baseURL: baseB };
    const token = app.adminToken;
    const ratingId = ratingWorkflowId(app.taskQueue);

    // Customers through both APIs; the SUM metric through one.
    const aliases = [0, 1, 2].map((i) => uniqueName(`rep${i}`));
    const customerIds = new Map<string, string>();
    for (const [i, alias] of aliases.entries()) {
      const res = await http(i % 2 ? apiBx : apiA, 'POST', '/v1/customers', { token, body: { name: `Replica ${i}`, ingest_aliases: [alias] } });
      expect(res.status).toBe(200);
      customerIds.set(alias, res.json.data.id);
    }
    const created = await http(apiA, 'POST', '/v1/billable-metrics/create', {
      token, body: { name: 'replica amount', aggregation_type: 'SUM', aggregation_key: 'amount', event_type_filter: { in_values: ['replica'] } },
    });
    expect(created.status).toBe(200);
    const metricId: string = created.json.data.id;
    await eventually('the metric backfill (nothing to backfill) to finish', async () => {
      const m = (await http(apiBx, 'GET', `/v1/billable-metrics/${metricId}`, { token })).json.data;
      if (m.backfill.status !== 'DONE') throw new Error(JSON.stringify(m.backfill));
    });
    await new Promise((r) => setTimeout(r, 2100)); // both APIs' metric caches

    // The rater runs on one of the two workers.
    const raterNow = async () => {
      const d = await temporal.workflow.getHandle(ratingId).describe();
      const acts = (d.raw.pendingActivities ?? []).filter((a) => a.activityType?.name === 'rateEvents');
      expect(acts.length).toBeLessThanOrEqual(1); // one rateEvents activity at a time
      const a = acts[0];
      return { status: d.status.name, started: a?.state === PENDING_ACTIVITY_STATE_STARTED, identity: a?.lastWorkerIdentity ?? '', attempt: a?.attempt ?? 0, activityId: a?.activityId ?? '' };
    };
    const first = await eventually('rateEvents to run on a worker', async () => {
      const r = await raterNow();
      if (!r.started) throw new Error(JSON.stringify(r));
      return r;
    });

    // The lock monitor: which sessions (of which process) hold the rater's EXCLUSIVE lock on
    // rating_cursor, sample by sample. Partition upkeep takes a SHARE lock on it for a moment (it
    // conflicts with the rater's, so it cannot overlap) and runs on any worker whenever one starts.
    const samples: Sample[] = [];
    let phase: Sample['phase'] = 'before-kill';
    monitoring = true;
    monitor = (async () => {
      while (monitoring) {
        const at = phase;
        const { rows } = await monitorDb!.query<{ pid: number; app: string }>(
          `select l.pid, coalesce(a.application_name, '?') as app
             from pg_locks l left join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'relation' and l.granted and l.mode = 'ExclusiveLock'
              and l.database = (select oid from pg_database where datname = current_database())
              and l.relation = 'rating_cursor'::regclass`);
        samples.push({ phase: at, holders: rows });
        await new Promise((r) => setTimeout(r, 5));
      }
    })();

    // The usage: 80 batches of 100 events for three customers, amounts in cents (BigInt), some
    // beyond 2^53 cents' precision as doubles.
    const hourMs = 3_600_000;
    const base = Math.floor(Date.now() / hourMs) * hourMs - 30 * hourMs;
    type Ev = { transaction_id: string; customer_id: string; event_type: string; timestamp: string; properties: { amount: string } };
    const unique = new Map<string, { alias: string; cents: bigint }>();
    const cents = (s: string) => BigInt(s.replace('.', ''));
    const amount = (b: number, i: number): string => {
      if ((b * 100 + i) % 97 === 0) return `9007199254740${(b * 7 + i) % 1000}.${String((b + i) % 100).padStart(2, '0')}`;
      return `${(b * 31 + i * 17) % 5000}.${String((b * 13 + i * 7) % 100).padStart(2, '0')}`;
    };
    const batches: Ev[][] = [];
    for (let b = 0; b < 80; b++) {
      const batch: Ev[] = [];
      for (let i = 0; i < 100; i++) {
        const alias = aliases[(b + i) % aliases.length]!;
        batch.push({
          transaction_id: `rep-${b}-${i}`, customer_id: alias, event_type: 'replica',
          timestamp: new Date(base + ((b * 7 + i) % 29) * hourMs + (i % 60) * 60_000).toISOString(),
          properties: { amount: amount(b, i) },
        });
      }
      if (b % 4 === 1) batch.splice(0, 10, ...batches[b - 1]!.slice(50, 60)); // 10 of the previous batch again
      if (b % 5 === 2) batch[99] = batch[3]!; // the same event twice in one request
      for (const e of batch) {
        const prev = unique.get(e.transaction_id);
        if (prev) expect(prev.cents).toBe(cents(e.properties.amount)); // only true duplicates
        unique.set(e.transaction_id, { alias: e.customer_id, cents: cents(e.properties.amount) });
      }
      batches.push(batch);
    }
    const expected = new Map(aliases.map((a) => [a, 0n]));
    for (const { alias, cents: c } of unique.values()) expected.set(alias, expected.get(alias)! + c);

    const statuses = new Map<number, number>();
    let submitted = 0;
    let acked = 0;
    const send = async (api: { baseURL: string }, body: Ev[]) => {
      const res = await http(api, 'POST', '/v1/ingest', { token, body }).catch(() => ({ status: 0 }));
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      submitted += body.length;
    };
    let handedOver!: () => void;
    const handover = new Promise<void>((r) => { handedOver = r; });
    let next = 0;
    const lane = async () => {
      for (let b = next++; b < batches.length; b = next++) {
        if (b >= 55) await handover; // the last batches arrive after the rater moved to another worker
        const [primary, other] = b % 2 ? [apiBx, apiA] : [apiA, apiBx];
        const batch = batches[b]!;
        if (b % 6 === 0) await Promise.all([send(primary, batch), send(other, batch)]); // both APIs at the same moment
        else await send(primary, batch);
        if (b % 6 === 3) await send(other, batch.slice(20, 50)); // a retry through the other API
        acked++;
      }
    };

    // Kill the rater's worker after 25 batches, start a replacement, and wait for Temporal to
    // hand the retried activity to a live worker.
    const killer = (async () => {
      while (acked < 25) await new Promise((r) => setTimeout(r, 5));
      const now = await raterNow();
      expect(now.started).toBe(true);
      const victim = workers.find((w) => w.identity === now.identity);
      expect(victim).toBeDefined(); // Temporal's identity names one of our workers
      const survivor = workers.find((w) => w !== victim && w.proc.exitCode === null)!;
      victim!.proc.kill('SIGKILL');
      phase = 'after-kill';
      await stopChild(victim!.proc);
      expect(victim!.proc.signalCode).toBe('SIGKILL');
      const replacement = await startWorker('replicas-worker-3');
      const after = await eventually('the rater retried on a live worker', async () => {
        const r = await raterNow();
        if (!r.started || r.identity === victim!.identity || (r.activityId === now.activityId && r.attempt <= now.attempt)) throw new Error(JSON.stringify(r));
        return r;
      }, 40_000);
      phase = 'after-handover';
      handedOver();
      return { before: now, after, victim: victim!, survivor, replacement };
    })();

    // The killer first: if it fails, the lanes waiting for the handover must not hide it.
    const [{ before, after, victim, survivor, replacement }] = await Promise.all([killer, lane(), lane(), lane(), lane()]);

    await eventually('rating to catch up', async () => {
      const [r] = await orm.em.fork().execute<{ pending: boolean }[]>(
        `select exists (select 1 from event e, rating_cursor c where e.xid >= c.xid) or exists (select 1 from billable_metric where backfill_status <> 'DONE') as pending`);
      if (r!.pending) throw new Error('events still unrated');
    }, 30_000);
    await new Promise((r) => setTimeout(r, 300)); // a few more lock samples after the last pass
    monitoring = false;
    await monitor;

    // Every request was accepted; each unique transaction id is stored once, every other submission logged as a duplicate.
    expect([...statuses.keys()]).toEqual([200]);
    const one = async (sql: string, params: unknown[] = []) => (await orm.em.fork().execute<{ n: string }[]>(sql, params))[0]!.n;
    expect(await one('select count(*)::text as n from event')).toBe(String(unique.size));
    expect(await one('select count(*)::text as n from event_duplicate')).toBe(String(submitted - unique.size));
    expect(await one('select coalesce(sum(event_count), 0)::text as n from usage_hourly where metric_id = ?', [metricId])).toBe(String(unique.size));
    expect(unique.size).toBeGreaterThan(7000);

    // Exact totals per customer: the aggregates, and /v1/usage through each API (parsed without rounding).
    const show = (c: bigint) => new Dec(`${c / 100n}.${String(c % 100n).padStart(2, '0')}`).toFixed();
    const want = Object.fromEntries(aliases.map((a) => [customerIds.get(a)!, show(expected.get(a)!)]));
    const hourly = await orm.em.fork().execute<{ customer_id: string; total: string }[]>(
      'select customer_id::text, sum(value_sum)::text as total from usage_hourly where metric_id = ? group by customer_id', [metricId]);
    expect(Object.fromEntries(hourly.map((r) => [r.customer_id, new Dec(r.total).toFixed()]))).toEqual(want);
    const exact = (text: string) => JSON.parse(text, function (_k: string, v: unknown, ctx?: { source?: string }) {
      return typeof v === 'number' && ctx?.source !== undefined ? ctx.source : v;
    } as (k: string, v: unknown) => unknown) as { data: { customer_id: string; value: string }[] };
    for (const api of [apiA, apiBx]) {
      const res = await fetch(`${api.baseURL}/v1/usage`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          starting_on: new Date(base).toISOString(), ending_before: new Date(base + 30 * hourMs).toISOString(), window_size: 'NONE',
          customer_ids: [...customerIds.values()], billable_metrics: [{ id: metricId }],
        }),
      });
      expect(res.status).toBe(200);
      const rows = exact(await res.text()).data;
      expect(Object.fromEntries(rows.map((r) => [r.customer_id, new Dec(r.value).toFixed()]))).toEqual(want);
    }

    // One rating workflow: one execution of rating/<task queue>, running.
    const runs = [];
    for await (const w of temporal.workflow.list({ query: `WorkflowId = '${ratingId}'` })) runs.push(w);
    expect(runs.map((w) => w.status.name)).toEqual(['RUNNING']);
    expect((await raterNow()).status).toBe('RUNNING');

    // Temporal moved the rater off the killed worker onto a live one (survivor or replacement).
    const heir = workers.find((w) => w.identity === after.identity);
    expect(heir).toBeDefined();
    expect([survivor.name, replacement.name]).toContain(heir!.name);
    expect(heir!.proc.exitCode).toBeNull();
    expect(after.identity).not.toBe(before.identity);
    // Two workers again, both alive; both APIs alive.
    expect(workers.filter((w) => w.proc.exitCode === null && w.proc.signalCode === null).map((w) => w.name).sort()).toEqual([survivor.name, replacement.name].sort());
    expect([app.api.exitCode, apiB!.exitCode]).toEqual([null, null]);

    // The rating lock: never two holders at once, and exactly one handover — from the killed
    // worker (whom Temporal named before the kill) to the worker Temporal named after it.
    const overlapping = samples.filter((s) => new Set(s.holders.map((h) => h.pid)).size > 1 || new Set(s.holders.map((h) => h.app)).size > 1);
    expect({ overlapping: overlapping.length, first: overlapping.slice(0, 3) }).toEqual({ overlapping: 0, first: [] });
    const owners: string[] = [];
    for (const s of samples) {
      const app0 = s.holders[0]?.app;
      if (app0 && owners[owners.length - 1] !== app0) owners.push(app0);
    }
    expect(owners).toEqual([victim.name, heir!.name]);
    const held = (p: Sample['phase']) => samples.filter((s) => s.phase === p && s.holders.length > 0).length;
    expect(held('before-kill')).toBeGreaterThan(0);
    expect(held('after-handover')).toBeGreaterThan(0);
    expect(samples.filter((s) => s.phase === 'after-handover' && s.holders.some((h) => h.app !== heir!.name))).toEqual([]);

    if (!quiet) console.log(`replicas: ${samples.length} lock samples, owners ${owners.join(' -> ')}, ${Date.now() - started} ms`);
  });
});
