import type { MikroORM } from '@mikro-orm/postgresql';
import { BillableMetric, Customer, CustomerIngestAlias } from './entities.js';
import { insertEvents, type NewEvent } from './events.js';
import { newId } from './ids.js';
import { insertMetric, type NewMetric } from './metrics.js';
import { backfillChunk, ratePass, ratingBacklog } from './rating.js';
import { NUMERIC_RE } from './metric-sql.js';
import { isDecimalString } from '../billing/money.js';
import { createTestDatabase } from '../test/stack.js';
import { expectAggregatesMatchRecount } from '../test/recount.js';

/**
 * The rater on real PostgreSQL: aggregates equal a recount over raw events (I1) under
 * duplicates, out-of-order and late events, raters running concurrently, customers that appear
 * after their events, and metrics created after the events they apply to.
 */
describe('rating exactly once', () => {
  let orm: MikroORM;
  const base = Date.UTC(2026, 10, 1);

  beforeAll(async () => {
    orm = (await createTestDatabase('rating')).orm;
  });
  afterAll(async () => orm?.close());

  async function customer(aliases: string[]): Promise<string> {
    const em = orm.em.fork();
    const id = newId();
    em.create(Customer, { id, name: `c-${aliases[0]}`, customFields: {}, createdAt: new Date(), updatedAt: new Date() });
    await em.flush();
    aliases.forEach((alias, position) => em.create(CustomerIngestAlias, { alias, customerId: id, position }));
    await em.flush();
    return id;
  }

  async function metric(m: Omit<NewMetric, 'id' | 'customFields'>): Promise<BillableMetric & NewMetric> {
    const id = newId();
    await insertMetric(orm.em.fork(), { id, customFields: {}, ...m });
    return (await orm.em.fork().findOneOrFail(BillableMetric, { id })) as BillableMetric & NewMetric;
  }

  // Deterministic pseudo-random events: several customers (by id and alias), hours out of order,
  // compound group keys, decimal strings and numbers, some events no metric matches.
  function events(n: number, seed: number, keys: string[]): NewEvent[] {
    let x = seed;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
    return Array.from({ length: n }, (_, i) => {
      const props: Record<string, unknown> = {
        region: ['eu', 'us', 'ap'][Math.floor(rnd() * 3)],
        model: ['large', 'small'][Math.floor(rnd() * 2)],
        tokens: rnd() < 0.5 ? Math.floor(rnd() * 1000) : `${Math.floor(rnd() * 1000)}.${Math.floor(rnd() * 1000)}`,
        user: `u${Math.floor(rnd() * 40)}`,
        seats: Math.floor(rnd() * 100),
      };
      if (rnd() < 0.05) delete props.model;
      return {
        transactionId: `s${seed}-${i}`,
        customerId: keys[Math.floor(rnd() * keys.length)]!,
        eventType: rnd() < 0.9 ? 'llm' : 'other',
        timestamp: new Date(base + Math.floor(rnd() * 48 * 3600) * 1000).toISOString(),
        properties: props,
      };
    });
  }

  async function ingestConcurrently(all: NewEvent[]): Promise<void> {
    const batches: NewEvent[][] = [];
    for (let i = 0; i < all.length; i += 100) batches.push(all.slice(i, i + 100));
    // Four "connections" at once; every batch is sent twice (a client retry) in another order.
    const lanes = [0, 1, 2, 3].map(async (lane) => {
      for (let b = lane; b < batches.length; b += 4) await insertEvents(orm.em.fork(), batches[b]!);
      for (let b = batches.length - 1 - lane; b >= 0; b -= 4) await insertEvents(orm.em.fork(), batches[b]!);
    });
    await Promise.all(lanes);
  }

  // Rates until every stored event is below the cursor and nothing unmatched can be matched.
  // (Idle passes alone are no proof: the cursor waits for the oldest running transaction in the
  // whole cluster, which another test's database may be holding.)
  async function rateUntilIdle(raters: number): Promise<void> {
    const pending = async () => (await ratingBacklog(orm.em.fork())) || (await orm.em.fork().execute<{ p: boolean }[]>(
      'select exists (select 1 from event_unmatched u join customer_event_key k on k.key = u.customer_key) as p'))[0]!.p;
    await Promise.all(Array.from({ length: raters }, async () => {
      while (await pending()) {
        const r = await ratePass(orm.em.fork(), 700);
        if (r.events === 0 && r.rematched === 0) await new Promise((res) => setTimeout(res, 10));
      }
    }));
  }

  test('PostgreSQL and TypeScript agree on what is a number, and numeric holds every one of them', async () => {
    const cases = ['1', ' 2.5 ', '-.5', '+3.', '1e999', '-1E-999', '9'.repeat(100), `${'1'.repeat(100)}.${'2'.repeat(100)}e-999`,
      '1e1000', '1e1000000', '1'.repeat(101), `.${'1'.repeat(101)}`, 'many', '1e', '0x10', 'NaN', 'Infinity', ''];
    const em = orm.em.fork();
    for (const v of cases) {
      const [r] = await em.execute<{ sql: boolean }[]>('select ? ~ ? as sql', [v, NUMERIC_RE]);
      expect([v, r!.sql]).toEqual([v, isDecimalString(v)]);
      if (r!.sql) await em.execute('select (?::numeric * 9223372036854775807)::text', [v]); // a sum of 2^63 of them still fits
    }
  });

  test('aggregates equal the recount for every metric type, concurrently rated', async () => {
    const a = await customer(['alpha', 'alpha-2']);
    const b = await customer(['beta']);
    const keys = [a, 'alpha', 'alpha-2', b, 'beta', 'ghost'];
    const metrics = await Promise.all([
      metric({ name: 'count', aggregationType: 'COUNT', aggregationKey: null, eventTypeFilter: { in_values: ['llm'] }, propertyFilters: [], groupKeys: [['region'], ['region', 'model']] }),
      metric({ name: 'sum', aggregationType: 'SUM', aggregationKey: 'tokens', eventTypeFilter: null, propertyFilters: [{ name: 'model', exists: true }], groupKeys: [['model']] }),
      metric({ name: 'max', aggregationType: 'MAX', aggregationKey: 'tokens', eventTypeFilter: { not_in_values: ['other'] }, propertyFilters: [], groupKeys: [] }),
      metric({ name: 'unique', aggregationType: 'UNIQUE', aggregationKey: 'user', eventTypeFilter: null, propertyFilters: [{ name: 'region', in_values: ['eu', 'us'] }], groupKeys: [['region']] }),
      metric({ name: 'latest', aggregationType: 'LATEST', aggregationKey: 'seats', eventTypeFilter: null, propertyFilters: [{ name: 'model', not_in_values: ['small'] }], groupKeys: [] }),
    ]);

    const all = events(4000, 7, keys);
    let ingesting = true;
    const raters = Promise.all([0, 1, 2].map(async () => { // raters race the ingest
      while (ingesting) await ratePass(orm.em.fork(), 700);
    }));
    await ingestConcurrently(all);
    ingesting = false;
    await raters;
    await rateUntilIdle(3);
    const n = (await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from event'))[0]!.n;
    expect(Number(n)).toBe(4000); // duplicates stored once
    for (const m of metrics) expect(await expectAggregatesMatchRecount(orm.em, m)).toBeGreaterThan(10);
    const unmatched = (await orm.em.fork().execute<{ unmatched: string }[]>('select count(*)::text as unmatched from event_unmatched'))[0]!.unmatched;
    expect(Number(unmatched)).toBeGreaterThan(0); // the ghost's events wait

    // The ghost becomes a customer: its waiting events are rated, once.
    await customer(['ghost']);
    await rateUntilIdle(2);
    await rateUntilIdle(2);
    for (const m of metrics) await expectAggregatesMatchRecount(orm.em, m);
    const left = (await orm.em.fork().execute<{ left: string }[]>('select count(*)::text as left from event_unmatched'))[0]!.left;
    expect(Number(left)).toBe(0);

    // A metric created now applies to every event already ingested (backfill), while new events
    // keep arriving and being rated live.
    const late = await metric({ name: 'late', aggregationType: 'SUM', aggregationKey: 'seats', eventTypeFilter: null, propertyFilters: [], groupKeys: [['region']] });
    expect(late.backfillStatus).toBe('RUNNING');
    expect(late.backfillEventsTotal).toBe(4000);
    const more = events(600, 99, keys);
    const live = (async () => {
      await ingestConcurrently(more);
      await rateUntilIdle(2);
    })();
    let chunk;
    do chunk = await backfillChunk(orm.em.fork(), late.id, 450); while (!chunk.done);
    await live;
    await rateUntilIdle(1);
    expect(chunk).toEqual({ done: true, processed: 4000, total: 4000 });
    const [state] = await orm.em.fork().execute<Record<string, string>[]>(
      `select (select xid::text from rating_cursor) as cursor, pg_snapshot_xmin(pg_current_snapshot())::text as xmin,
              (select max(xid)::text from event) as max_xid, (select count(*)::text from event e, rating_cursor c where e.xid >= c.xid) as unrated`);
    if (process.env.ACCRUE_TEST_VERBOSE) console.log('rating state', state);
    for (const m of [...metrics, late]) await expectAggregatesMatchRecount(orm.em, m);
  });
});
