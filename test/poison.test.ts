import { randomBytes } from 'node:crypto';
import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { BillableMetric } from '../db/entities.js';
import { expectAggregatesMatchRecount } from './recount.js';
import { createTestDatabase, eventually, http, startApp, type RunningApp } from './stack.js';

/**
 * Poison events against the real API and worker: ingest refuses numbers PostgreSQL numeric
 * cannot hold; an event that fails rating anyway (written straight into `event`) is quarantined,
 * visible in /v1/events/search and /health, and every other customer keeps being rated; usage
 * values come back exactly, however large.
 */
describe('poison events', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  const at = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000 - 2 * 3_600_000).toISOString();
  const from = new Date(Date.parse(at) - 86_400_000).toISOString();
  const to = new Date(Date.parse(at) + 3_600_000).toISOString();
  let tokens: string;
  const customers: Record<string, string> = {};

  beforeAll(async () => {
    const db = await createTestDatabase('poison');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
    for (const name of ['pa', 'pb', 'pc', 'pd']) customers[name] = (await client.v1.customers.create({ name, ingest_aliases: [name] })).data.id;
    tokens = (await client.v1.billableMetrics.create({ name: 'tokens', aggregation_type: 'SUM', aggregation_key: 'tokens', event_type_filter: { in_values: ['llm'] } })).data.id;
    await client.v1.billableMetrics.create({ name: 'users', aggregation_type: 'UNIQUE', aggregation_key: 'user' });
    // The API caches metrics for 2 s: wait until ingest checks the new SUM metric (a harmless non-number).
    await eventually('ingest to know the metric', async () => {
      const r = await http(app, 'POST', '/v1/ingest', { token: app.adminToken, body: [{ transaction_id: 'warm', customer_id: 'pa', event_type: 'llm', timestamp: at, properties: { tokens: 'many' } }] });
      if (r.status !== 400) throw new Error(`ingest answered ${r.status}`);
    }, 10_000);
  });
  afterAll(async () => {
    await app?.stop();
    await orm?.close();
  });

  const ingest = (events: { id: string; customer: string; props: Record<string, unknown> }[]) => http(app, 'POST', '/v1/ingest', {
    token: app.adminToken,
    body: events.map((e) => ({ transaction_id: e.id, customer_id: e.customer, event_type: 'llm', timestamp: at, properties: e.props })),
  });

  async function usage(customer: string): Promise<string> {
    const r = await http(app, 'POST', '/v1/usage', { token: app.adminToken, body: { starting_on: from, ending_before: to, window_size: 'NONE', customer_ids: [customers[customer]], billable_metrics: [{ id: tokens }] } });
    expect(r.status).toBe(200);
    return /"value":([^,}]*)/.exec(r.text)![1]!; // the value's JSON text, exactly as sent
  }

  test('ingest refuses a number PostgreSQL numeric cannot hold, naming the field', async () => {
    for (const bad of ['1e1000000', '1'.repeat(101), `0.${'1'.repeat(101)}`]) {
      const r = await ingest([{ id: `bad-${bad.length}`, customer: 'pa', props: { tokens: bad } }]);
      expect(r.status).toBe(400);
      expect(r.text).toContain('[0].properties.tokens');
      expect(r.text).toContain('out of range');
    }
    // A JSON number too large for a double arrives as its digits and is refused the same way.
    const raw = await http(app, 'POST', '/v1/ingest', { token: app.adminToken, rawBody: `[{"transaction_id": "bad-num", "customer_id": "pa", "event_type": "llm", "timestamp": "${at}", "properties": {"tokens": 1e1000000}}]` });
    expect(raw.status).toBe(400);
    expect((await orm.em.fork().execute<{ n: string }[]>(`select count(*)::text as n from event where transaction_id like 'bad-%'`))[0]!.n).toBe('0');
  });

  test('ingest refuses a UNIQUE value too long to count, naming the field, instead of accepting it for quarantine', async () => {
    const r = await ingest([{ id: 'long-user', customer: 'pa', props: { tokens: 1, user: 'u'.repeat(1025) } }]);
    expect(r.status).toBe(400);
    expect(r.text).toContain('[0].properties.user');
    expect(r.text).toContain('longer than 1024 bytes');
    expect((await ingest([{ id: 'long-ok', customer: 'pa', props: { tokens: 0, user: 'é'.repeat(512) } }])).status).toBe(200); // 1,024 bytes
  });

  test('an event that fails rating is quarantined and every other customer keeps being rated', async () => {
    // Written straight into `event`, as ingest would never accept them: a value numeric cannot
    // hold, and a UNIQUE value too large for the index of distinct values.
    await orm.em.fork().execute(
      `with k as (insert into event_key (transaction_id) values ('poison-number'), ('poison-unique'))
       insert into event (transaction_id, customer_id, event_type, ts, properties) values
         ('poison-number', 'pa', 'llm', ?, '{"tokens": "1e1000000"}'),
         ('poison-unique', 'pb', 'llm', ?, jsonb_build_object('user', ?::text, 'tokens', 2))`, [at, at, randomBytes(10_000).toString('hex')]);
    expect((await ingest([
      { id: 'ok-a', customer: 'pa', props: { tokens: 1, user: 'ann' } },
      { id: 'ok-b1', customer: 'pb', props: { tokens: 5, user: 'bob' } },
      { id: 'ok-b2', customer: 'pb', props: { tokens: '7.5' } },
    ])).status).toBe(200);
    await eventually('the other events to be rated', async () => {
      expect([await usage('pa'), await usage('pb')]).toEqual(['1', '12.5']);
    }, 20_000);

    const search = await http(app, 'POST', '/v1/events/search', { token: app.adminToken, body: { transactionIds: ['poison-number', 'poison-unique', 'ok-a'] } });
    expect(search.status).toBe(200);
    const byId = Object.fromEntries((search.json as { transaction_id: string; rated: boolean; quarantined?: { reason: string; billable_metric_id: string | null }[] }[]).map((e) => [e.transaction_id, e]));
    expect(byId['ok-a']).toMatchObject({ rated: true });
    expect(byId['ok-a']!.quarantined).toBeUndefined();
    expect(byId['poison-number']).toMatchObject({ rated: false, customer_id: 'pa', properties: { tokens: '1e1000000' } });
    expect(byId['poison-number']!.quarantined![0]!.reason).toMatch(/billable metric tokens .*out of range: 1e1000000/);
    expect(byId['poison-unique']!.quarantined![0]!.reason).toMatch(/billable metric users .*index row/);

    const health = await http(app, 'GET', '/health');
    expect(health.json).toMatchObject({ status: 'ok', quarantined_events: 2 });
    for (const m of await orm.em.fork().find(BillableMetric, {})) await expectAggregatesMatchRecount(orm.em, m);
  });

  test('a transaction_id reused with a different payload is reported, a plain retry is not', async () => {
    const send = (props: Record<string, unknown>, ts = at) => http(app, 'POST', '/v1/ingest', {
      token: app.adminToken, body: [{ transaction_id: 'reused', customer_id: 'nobody', event_type: 'llm', timestamp: ts, properties: props }],
    });
    expect((await send({ tokens: 3, region: 'eu' })).status).toBe(200);
    expect((await send({ region: 'eu', tokens: 3 })).status).toBe(200); // a retry: same payload, keys in another order
    expect((await send({ tokens: 4, region: 'eu' })).status).toBe(200); // a different payload under the same id
    expect((await send({ tokens: 3, region: 'eu' }, new Date(Date.parse(at) - 1000).toISOString())).status).toBe(200); // a different time
    const search = await http(app, 'POST', '/v1/events/search', { token: app.adminToken, body: { transactionIds: ['reused'] } });
    expect(search.json.map((e: { is_duplicate: boolean; conflicting_duplicates: number; properties: unknown }) => [e.is_duplicate, e.conflicting_duplicates, e.properties]))
      .toEqual([[false, 2, { tokens: 3, region: 'eu' }], [true, 2, { tokens: 3, region: 'eu' }], [true, 2, { tokens: 3, region: 'eu' }], [true, 2, { tokens: 3, region: 'eu' }]]);
  });

  test('usage values come back exactly, however large', async () => {
    expect((await ingest([
      { id: 'big-c1', customer: 'pc', props: { tokens: '123456789012345678901234567890.5' } },
      { id: 'big-c2', customer: 'pc', props: { tokens: '0.25' } },
      { id: 'big-d', customer: 'pd', props: { tokens: '9e999' } },
    ])).status).toBe(200);
    await eventually('the big sums to be rated', async () => {
      expect(await usage('pc')).toBe('123456789012345678901234567890.75');
      expect(await usage('pd')).toBe(`9${'0'.repeat(999)}`);
    }, 20_000);
  });
});
