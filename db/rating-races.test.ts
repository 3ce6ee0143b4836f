import pg from 'pg';
import type { MikroORM } from '@mikro-orm/postgresql';
import { BillableMetric, Customer, CustomerIngestAlias } from './entities.js';
import { insertEvents, type NewEvent } from './events.js';
import { newId } from './ids.js';
import { insertMetric, type NewMetric } from './metrics.js';
import { backfillChunk, ratePass, ratingBacklog } from './rating.js';
import { waitFor } from '../stack/net.js';
import { createTestDatabase } from '../test/stack.js';
import { expectAggregatesMatchRecount } from '../test/recount.js';

/**
 * Interleavings of the rater with metric creation, customer creation and backfill, forced one by
 * one with row and table locks held by a second connection, so each race happens every run:
 * aggregates still equal a recount over raw events (I1).
 */
describe('rating races', () => {
  let orm: MikroORM;
  let url: string;
  const base = Date.UTC(2026, 10, 1);
  let seq = 0;

  beforeAll(async () => {
    ({ orm, url } = await createTestDatabase('rating_races'));
  });
  afterAll(async () => orm?.close());

  async function customer(alias: string): Promise<string> {
    const em = orm.em.fork();
    const id = newId();
    em.create(Customer, { id, name: `c-${alias}`, customFields: {}, createdAt: new Date(), updatedAt: new Date() });
    await em.flush();
    em.create(CustomerIngestAlias, { alias, customerId: id, position: 0 });
    await em.flush();
    return id;
  }

  async function metric(name: string, m: Partial<NewMetric> = {}): Promise<BillableMetric & NewMetric> {
    const id = newId();
    await insertMetric(orm.em.fork(), { id, name, aggregationType: 'COUNT', aggregationKey: null, eventTypeFilter: null, propertyFilters: [], groupKeys: [], customFields: {}, ...m });
    return metricRow(id);
  }
  const metricRow = async (id: string) => (await orm.em.fork().findOneOrFail(BillableMetric, { id })) as BillableMetric & NewMetric;

  /** One transaction (one xid) of `n` events for `customerKey`, all in hour `h` of the test day. */
  async function ingest(customerKey: string, n: number, h = 0): Promise<void> {
    const batch: NewEvent[] = Array.from({ length: n }, () => ({
      transactionId: `r${seq++}`, customerId: customerKey, eventType: 'api', timestamp: new Date(base + h * 3_600_000).toISOString(), properties: { tokens: seq % 7 },
    }));
    await insertEvents(orm.em.fork(), batch);
  }

  async function rateUntilIdle(): Promise<void> {
    await waitFor('the rater to catch up', async () => {
      await ratePass(orm.em.fork(), 1000);
      const matchable = (await orm.em.fork().execute<{ p: boolean }[]>(
        'select exists (select 1 from event_unmatched u join customer_event_key k on k.key = u.customer_key) as p'))[0]!.p;
      if ((await ratingBacklog(orm.em.fork())) || matchable) throw new Error('events still waiting');
    }, 60_000, 20);
  }

  async function backfill(metricId: string): Promise<void> {
    while (!(await backfillChunk(orm.em.fork(), metricId, 5)).done);
  }

  /** A second connection holding a transaction open, to block the rater (or metric creation) at one statement. */
  async function blocker(sql: string, params: unknown[] = []): Promise<{ release(): Promise<void> }> {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('begin');
    await c.query(sql, params);
    let open = true;
    return { async release() { if (open) { open = false; await c.query('rollback'); await c.end(); } } };
  }

  /** Throws unless `n` sessions of this database wait on a lock (the interleaving is in place). */
  async function expectLockWaiters(n: number): Promise<void> {
    const rows = await orm.em.fork().execute<{ wait: string | null; state: string; query: string }[]>(
      `select wait_event_type || ':' || wait_event as wait, state, left(query, 60) as query from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`);
    if (rows.filter((r) => r.wait?.startsWith('Lock:')).length < n) throw new Error(JSON.stringify(rows));
  }
  const lockWaiters = (n: number) => waitFor(`${n} sessions waiting on a lock`, () => expectLockWaiters(n), 10_000, 10);

  const settled = async (p: Promise<unknown>) => Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), 0))]);

  test('a metric created while the rater advances counts every event rated in between', async () => {
    const c = await customer('m12');
    await ingest('m12', 3);
    await rateUntilIdle();
    // Metric creation stops just before its row is written (billable_metric locked by another session)...
    const hold = await blocker('lock table billable_metric in share mode');
    const created = metric('m12-late');
    let pass: Promise<unknown> = Promise.resolve();
    try {
      await lockWaiters(1);
      // ...while new events arrive and a rating pass runs: it must either include the new metric or wait for it.
      await ingest('m12', 4);
      pass = ratePass(orm.em.fork(), 1000);
      await waitFor('the pass to finish or to wait for the metric', async () => {
        if (!(await settled(pass))) await expectLockWaiters(2);
      }, 10_000, 10);
    } finally {
      await hold.release();
    }
    await pass;
    const m = await created;
    await backfill(m.id);
    await rateUntilIdle();
    const [count] = await orm.em.fork().execute<{ n: string }[]>('select coalesce(sum(event_count), 0)::text as n from usage_hourly where metric_id = ? and customer_id = ?', [m.id, c]);
    expect(count!.n).toBe('7');
    await expectAggregatesMatchRecount(orm.em, m);
  });

  test('a customer created between two statements of a pass is counted for every metric or parked, never half', async () => {
    const known = await customer('m11-known');
    const metrics = [await metric('m11-a'), await metric('m11-b', { aggregationType: 'SUM', aggregationKey: 'tokens' })];
    for (const m of metrics) await backfill(m.id);
    await ingest('m11-known', 1);
    await rateUntilIdle();
    await ingest('m11-known', 2);
    await ingest('m11-ghost', 5);
    // Every metric's aggregate row for the known customer's hour exists; lock them (after the
    // events committed, so this session's xid does not hold the rater back), so the next pass
    // stops in its first aggregate statement.
    const hold = await blocker('select 1 from usage_hourly where customer_id = $1 for update', [known]);
    let pass = ratePass(orm.em.fork(), 1000);
    try {
      // The pass can find nothing to rate yet when a transaction anywhere in the cluster (another
      // test's database) is older than these events — it then ends without reaching the locked
      // rows; run it again until it is the one waiting on them.
      await waitFor('a pass waiting on the locked rows', async () => {
        if (await settled(pass)) {
          pass = ratePass(orm.em.fork(), 1000);
          throw new Error('the pass ended without reaching the locked rows; again');
        }
        await expectLockWaiters(1);
      }, 30_000, 10);
      await customer('m11-ghost'); // between two statements of the pass
    } finally {
      await hold.release();
    }
    await pass;
    await rateUntilIdle();
    // Every metric, whichever the pass reached first.
    for (const m of await orm.em.fork().find(BillableMetric, {})) await expectAggregatesMatchRecount(orm.em, m as BillableMetric & NewMetric);
    const [left] = await orm.em.fork().execute<{ n: string }[]>(`select count(*)::text as n from event_unmatched`);
    expect(left!.n).toBe('0');
  });

  test('an older event that fails a new metric\'s backfill is skipped by that metric alone, and the backfill completes', async () => {
    const c = await customer('m16-old');
    await ingest('m16-old', 2);
    // Accepted before any metric read `gpus` (straight into `event` here): counted by the COUNT metrics.
    await orm.em.fork().execute(`with k as (insert into event_key (transaction_id) values ('m16-poison')) insert into event (transaction_id, customer_id, event_type, ts, properties) values ('m16-poison', 'm16-old', 'api', ?, '{"gpus": "1e1000000"}')`,
      [new Date(base).toISOString()]);
    await orm.em.fork().execute(`with k as (insert into event_key (transaction_id) values ('m16-fine')) insert into event (transaction_id, customer_id, event_type, ts, properties) values ('m16-fine', 'm16-old', 'api', ?, '{"gpus": "3"}')`,
      [new Date(base).toISOString()]);
    await rateUntilIdle();
    const gpus = await metric('m16-gpus', { aggregationType: 'SUM', aggregationKey: 'gpus' });
    await backfill(gpus.id);
    const [sum] = await orm.em.fork().execute<{ s: string }[]>('select sum(value_sum)::text as s from usage_hourly where metric_id = ? and customer_id = ?', [gpus.id, c]);
    expect(sum!.s).toBe('3');
    const q = await orm.em.fork().execute<{ transaction_id: string; metric_id: string; reason: string }[]>('select transaction_id, metric_id, reason from event_quarantine');
    expect(q).toEqual([{ transaction_id: 'm16-poison', metric_id: gpus.id, reason: expect.stringContaining('out of range: 1e1000000') }]);
    for (const m of await orm.em.fork().find(BillableMetric, {})) await expectAggregatesMatchRecount(orm.em, m as BillableMetric & NewMetric);
  });

  test('an unmatched event whose customer appears during a backfill is counted once', async () => {
    await ingest('m13-ghost', 3);
    await rateUntilIdle(); // parked in event_unmatched
    const [parked] = await orm.em.fork().execute<{ n: string }[]>(`select count(*)::text as n from event_unmatched where customer_key = 'm13-ghost'`);
    expect(parked!.n).toBe('3');
    const m = await metric('m13-late');
    expect(m.backfillStatus).toBe('RUNNING');
    await customer('m13-ghost'); // appears before the rater rematches it
    await backfill(m.id); // the backfill passes over the parked events
    await rateUntilIdle(); // and the rematch finds them
    await expectAggregatesMatchRecount(orm.em, m);
  });
});
