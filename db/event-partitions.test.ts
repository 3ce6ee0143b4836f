import type { MikroORM } from '@mikro-orm/postgresql';
import pg from 'pg';
import { Customer, CustomerIngestAlias } from './entities.js';
import { eventPartitions, maintainEventPartitions } from './event-partitions.js';
import { ingestStats, insertEvents, type NewEvent } from './events.js';
import { newId } from './ids.js';
import { insertMetric } from './metrics.js';
import { backfillChunk, ratePass, ratingBacklog } from './rating.js';
import { createTestDatabase } from '../test/stack.js';

/**
 * Events partitioned by ingestion day (Migration20261211100000_event_partitions): deduplication
 * stays exact across partitions and under concurrent requests, and retention drops whole
 * partitions past the window while aggregates, unrated events and events still waiting for
 * their customer are kept.
 */
describe('event partitions', () => {
  let orm: MikroORM;
  let url: string;
  let pool: pg.Pool;
  const DAY = 86_400_000;
  const dayName = (ms: number) => `event_p${new Date(ms).toISOString().slice(0, 10).replaceAll('-', '')}`;
  const sql = async <T = Record<string, unknown>>(q: string, params: unknown[] = []) => (await pool.query(q, params)).rows as T[];

  beforeAll(async () => {
    ({ orm, url } = await createTestDatabase('partitions'));
    pool = new pg.Pool({ connectionString: url, max: 4 });
  });
  afterAll(async () => {
    await pool?.end();
    await orm?.close();
  });

  const ev = (id: string, customer: string, tokens: number, ts = new Date().toISOString()): NewEvent =>
    ({ transactionId: id, customerId: customer, eventType: 'llm', timestamp: ts, properties: { tokens } });
  /** An event stored as ingest would have stored it on an earlier day (its own transaction). */
  async function storedOn(day: number, e: NewEvent): Promise<void> {
    await sql('select event_partition_ensure($1::date)', [new Date(day).toISOString().slice(0, 10)]);
    await sql(`with k as (insert into event_key (transaction_id, ingested_at) values ($1, $5))
               insert into event (transaction_id, customer_id, event_type, ts, properties, ingested_at) values ($1, $2, $3, $4, $6, $5)`,
      [e.transactionId, e.customerId, e.eventType, e.timestamp, new Date(day + 3_600_000).toISOString(), JSON.stringify(e.properties)]);
  }
  async function customer(alias: string): Promise<string> {
    const em = orm.em.fork();
    const id = newId();
    em.create(Customer, { id, name: alias, customFields: {}, createdAt: new Date(), updatedAt: new Date() });
    await em.flush();
    em.create(CustomerIngestAlias, { alias, customerId: id, position: 0 });
    await em.flush();
    return id;
  }
  /**
   * Rates until nothing is waiting. A pass may find nothing while some other database's
   * transaction holds back the cluster-wide xmin (the shared test cluster), so this waits on
   * the backlog itself, not on an empty pass.
   */
  async function rateAll(): Promise<void> {
    const pending = async () => (await ratingBacklog(orm.em.fork())) || (await sql<{ p: boolean }>(
      'select exists (select 1 from event_unmatched u join customer_event_key k on k.key = u.customer_key) as p'))[0]!.p;
    const until = Date.now() + 60_000;
    while (await pending()) {
      if (Date.now() > until) throw new Error('rating did not catch up in 60 s');
      const r = await ratePass(orm.em.fork(), 10_000);
      if (r.events === 0 && r.rematched === 0) await new Promise((res) => setTimeout(res, 20));
    }
  }
  const where = async (id: string) => (await sql<{ p: string }>(`select tableoid::regclass::text as p from event where transaction_id = $1`, [id])).map((r) => r.p);
  const tokens = async (customerId: string) =>
    (await sql<{ v: string | null }>(`select sum(value_sum)::text as v from usage_hourly where customer_id = $1`, [customerId]))[0]!.v;

  test('the migration leaves today and the next week partitioned, ingest writes today\'s partition', async () => {
    const names = (await eventPartitions(orm.em.fork())).map((p) => p.name);
    const today = Math.floor(Date.now() / DAY) * DAY;
    for (let d = 0; d <= 7; d++) expect(names).toContain(dayName(today + d * DAY));
    expect(await insertEvents(pool, [ev('today-1', 'nobody', 1)])).toBe(1);
    expect(await where('today-1')).toEqual([dayName(Date.now())]);
  });

  test('a transaction_id stored in an older partition is a duplicate today, whatever its payload', async () => {
    const threeDaysAgo = Math.floor(Date.now() / DAY) * DAY - 3 * DAY;
    await storedOn(threeDaysAgo, ev('x-old', 'dup-cust', 5));
    expect(await insertEvents(pool, [ev('x-old', 'dup-cust', 7), ev('x-new', 'dup-cust', 1), ev('x-new', 'dup-cust', 2)])).toBe(1);
    expect(await where('x-old')).toEqual([dayName(threeDaysAgo)]);
    expect(await where('x-new')).toEqual([dayName(Date.now())]);
    const dups = await sql<{ transaction_id: string }>(`select transaction_id from event_duplicate where transaction_id in ('x-old', 'x-new') order by 1`);
    expect(dups.map((d) => d.transaction_id)).toEqual(['x-new', 'x-old']);
    // The same rows through MikroORM (collectors): the same answer.
    expect(await insertEvents(orm.em.fork(), [ev('x-old', 'dup-cust', 9), ev('x-orm', 'dup-cust', 1)])).toBe(1);
    expect(Number((await sql<{ n: string }>(`select count(*)::text as n from event where transaction_id like 'x-%'`))[0]!.n)).toBe(3);
  });

  test('a batch that meets a concurrent request\'s uncommitted ids waits for it and stores each id once', async () => {
    for (const outcome of ['commit', 'rollback'] as const) {
      const holder = new pg.Client({ connectionString: url });
      await holder.connect();
      const id = `c-${outcome}`;
      await holder.query('begin');
      await holder.query(`with k as (insert into event_key (transaction_id) values ($1))
                          insert into event (transaction_id, customer_id, event_type, ts, properties) values ($1, 'conc', 'llm', now(), '{"tokens": 1}')`, [id]);
      const retries = ingestStats.conflictRetries;
      let removed = 0;
      const onRemove = () => removed++;
      pool.on('remove', onRemove);
      const pending = insertEvents(pool, [ev(id, 'conc', 2), ev(`${id}-other`, 'conc', 3)]);
      // The batch is blocked on the holder's key (a lock wait), not finished.
      await waitFor(async () => (await sql<{ n: string }>(
        `select count(*)::text as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%insert into event_key%' and pid <> pg_backend_pid()`))[0]!.n === '1');
      await holder.query(outcome);
      await holder.end();
      expect(await pending).toBe(outcome === 'commit' ? 1 : 2);
      expect(ingestStats.conflictRetries).toBe(retries + (outcome === 'commit' ? 1 : 0));
      // The unique violation did not cost the pool its connection (a new login per conflict).
      pool.off('remove', onRemove);
      expect(removed).toBe(0);
      expect(await where(id)).toHaveLength(1);
      expect(await where(`${id}-other`)).toHaveLength(1);
      const payload = (await sql<{ t: string }>(`select properties->>'tokens' as t from event where transaction_id = $1`, [id]))[0]!.t;
      expect(payload).toBe(outcome === 'commit' ? '1' : '2');
    }
  });

  test('retention drops partitions past the window, parks events still waiting for a customer, and keeps aggregates', async () => {
    const now = Date.now();
    const old = Math.floor(now / DAY) * DAY - 40 * DAY;
    const older = old - DAY;
    const known = await customer('ret-known');
    await insertMetric(orm.em.fork(), { id: newId(), name: 'ret tokens', aggregationType: 'SUM', aggregationKey: 'tokens', eventTypeFilter: { in_values: ['llm'] }, propertyFilters: [], groupKeys: [], customFields: {} });
    await rateAll();
    // Two old days: one rated, one whose events the rater has not reached yet.
    // A transaction elsewhere in the cluster (as other test files' are) holds back the rater's
    // xmin for a moment: passes find nothing until it ends, and rateAll must wait it out.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    await holder.query('begin');
    await holder.query('select pg_current_xact_id()');
    await storedOn(old, ev('r-rated', 'ret-known', 3, new Date(old).toISOString()));
    await storedOn(old, ev('r-waiting', 'ret-later', 4, new Date(old).toISOString()));
    setTimeout(() => void holder.query('commit').then(() => holder.end()), 300);
    await rateAll();
    expect(await tokens(known)).toBe('3');
    await storedOn(older, ev('r-unrated', 'ret-known', 5, new Date(older).toISOString()));
    const retentionMs = 36 * DAY;
    const first = await maintainEventPartitions(orm.em.fork(), { now: new Date(now), aheadDays: 7, retentionMs });
    expect(first.retired).toEqual(expect.arrayContaining([
      { partition: dayName(old), result: 'dropped, 1 unmatched events parked' },
      { partition: dayName(older), result: 'holds unrated events' },
    ]));
    expect((await sql<{ r: string | null }>('select to_regclass($1)::text as r', [dayName(old)]))[0]!.r).toBeNull();
    expect((await sql<{ r: string | null }>('select to_regclass($1)::text as r', [dayName(older)]))[0]!.r).toBe(dayName(older));
    expect(await tokens(known)).toBe('3'); // aggregates keep the history
    expect(await where('r-rated')).toEqual([]);
    expect(await where('r-waiting')).toEqual(['event_default']);
    // Keys past the window go, except a parked event's: a retry of it is still a duplicate.
    const keys = async () => (await sql<{ transaction_id: string }>(`select transaction_id from event_key where transaction_id like 'r-%' order by 1`)).map((k) => k.transaction_id);
    expect(await keys()).toEqual(['r-unrated', 'r-waiting']);
    expect(await insertEvents(pool, [ev('r-waiting', 'ret-later', 4)])).toBe(0);

    // The customer appears: the parked event is rated once; the unrated day is rated and retired next time.
    const later = await customer('ret-later');
    await rateAll();
    expect(await tokens(later)).toBe('4');
    expect(await tokens(known)).toBe('8');
    const second = await maintainEventPartitions(orm.em.fork(), { now: new Date(now), aheadDays: 7, retentionMs });
    expect(second.retired).toEqual(expect.arrayContaining([{ partition: dayName(older), result: 'dropped' }]));
    expect(second.purged.defaultPartition).toBe(1);
    expect(await keys()).toEqual([]);
    expect(await where('r-waiting')).toEqual([]);
    expect([await tokens(known), await tokens(later)]).toEqual(['8', '4']);
    // Nothing left to do: a repeated run changes nothing.
    const third = await maintainEventPartitions(orm.em.fork(), { now: new Date(now), aheadDays: 7, retentionMs });
    expect(third).toEqual({ created: [], retired: [], purged: { defaultPartition: 0, keys: 0, duplicates: 0 } });
  });

  test('a day with no partition lands in the default partition and is never lost', async () => {
    const far = Math.floor(Date.now() / DAY) * DAY - 20 * DAY;
    await sql(`with k as (insert into event_key (transaction_id, ingested_at) values ('no-part', $1))
               insert into event (transaction_id, customer_id, event_type, ts, properties, ingested_at) values ('no-part', 'x', 'llm', now(), '{}', $1)`, [new Date(far).toISOString()]);
    expect(await where('no-part')).toEqual(['event_default']);
    expect((await sql<{ r: string }>('select event_partition_ensure($1::date) as r', [new Date(far).toISOString().slice(0, 10)]))[0]!.r).toBe('rows in default partition');
  });

  test('a partition a metric backfill has yet to read is kept until the backfill passed it', async () => {
    const now = Date.now();
    const day = Math.floor(now / DAY) * DAY - 50 * DAY;
    const known = await customer('bf-known');
    await storedOn(day, ev('bf-old', 'bf-known', 7, new Date(day).toISOString()));
    await rateAll();
    // A metric created now: the rater has passed bf-old, so only the metric's backfill counts it.
    const metricId = newId();
    await insertMetric(orm.em.fork(), { id: metricId, name: 'bf tokens', aggregationType: 'SUM', aggregationKey: 'tokens', eventTypeFilter: { in_values: ['llm'] }, propertyFilters: [], groupKeys: [], customFields: {} });
    const counted = async () => (await sql<{ v: string | null }>(`select sum(value_sum)::text as v from usage_hourly where customer_id = $1 and metric_id = $2`, [known, metricId]))[0]!.v;
    const exists = async () => (await sql<{ r: string | null }>('select to_regclass($1)::text as r', [dayName(day)]))[0]!.r !== null;
    expect(await counted()).toBeNull();

    const retentionMs = 36 * DAY;
    const first = await maintainEventPartitions(orm.em.fork(), { now: new Date(now), aheadDays: 7, retentionMs });
    expect(first.retired).toEqual([{ partition: dayName(day), result: `a metric backfill still reads it (billable metric ${metricId})` }]);
    expect(await exists()).toBe(true);

    for (let i = 0; !(await backfillChunk(orm.em.fork(), metricId, 10_000)).done; i++) if (i > 1000) throw new Error('the backfill does not end');
    expect(await counted()).toBe('7');
    const second = await maintainEventPartitions(orm.em.fork(), { now: new Date(now), aheadDays: 7, retentionMs });
    expect(second.retired).toEqual([{ partition: dayName(day), result: 'dropped' }]);
    expect(await exists()).toBe(false);
    expect(await counted()).toBe('7');
  });

  test('rows of the default partition a metric backfill has yet to read are kept until the backfill passed them', async () => {
    const now = Date.now();
    const day = Math.floor(now / DAY) * DAY - 55 * DAY; // a day with no partition: as on an upgraded install
    const known = await customer('bfd-known');
    await sql(`with k as (insert into event_key (transaction_id, ingested_at) values ('bfd-old', $1))
               insert into event (transaction_id, customer_id, event_type, ts, properties, ingested_at) values ('bfd-old', 'bfd-known', 'llm', $1, '{"tokens": 5}', $1)`, [new Date(day + 3_600_000).toISOString()]);
    expect(await where('bfd-old')).toEqual(['event_default']);
    await rateAll();
    const metricId = newId();
    await insertMetric(orm.em.fork(), { id: metricId, name: 'bfd tokens', aggregationType: 'SUM', aggregationKey: 'tokens', eventTypeFilter: { in_values: ['llm'] }, propertyFilters: [], groupKeys: [], customFields: {} });
    const counted = async () => (await sql<{ v: string | null }>(`select sum(value_sum)::text as v from usage_hourly where customer_id = $1 and metric_id = $2`, [known, metricId]))[0]!.v;
    expect(await counted()).toBeNull();

    const retentionMs = 36 * DAY;
    await maintainEventPartitions(orm.em.fork(), { now: new Date(now), aheadDays: 7, retentionMs });
    expect(await where('bfd-old')).toEqual(['event_default']);

    for (let i = 0; !(await backfillChunk(orm.em.fork(), metricId, 10_000)).done; i++) if (i > 1000) throw new Error('the backfill does not end');
    expect(await counted()).toBe('5');
    const second = await maintainEventPartitions(orm.em.fork(), { now: new Date(now), aheadDays: 7, retentionMs });
    expect(second.purged.defaultPartition).toBeGreaterThanOrEqual(1);
    expect(await where('bfd-old')).toEqual([]);
    expect(await counted()).toBe('5');
  });
});

async function waitFor(probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
