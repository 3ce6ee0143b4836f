import { gzipSync } from 'node:zlib';
import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { BillableMetric } from '../db/entities.js';
import { stopChild } from '../stack/services.js';
import { expectAggregatesMatchRecount } from './recount.js';
import { createTestDatabase, eventually, http, startApp, uniqueName, type RunningApp } from './stack.js';

/**
 * Metering through the official Metronome SDK against the real API + worker: ingest, metrics,
 * customers and usage queries, exactly once with the worker SIGKILLed mid-rating, and usage that
 * agrees with a recount over raw events.
 */
describe('metering through the Metronome SDK', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  const hour = (h: number) => new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000 - 2 * 86_400_000 + h * 3_600_000).toISOString();

  beforeAll(async () => {
    const db = await createTestDatabase('metering');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, ingestMaxAge: '34d' });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    await app?.stop();
    await orm?.close();
  });

  async function rated(): Promise<void> {
    await eventually('rating to catch up', async () => {
      const [r] = await orm.em.fork().execute<{ pending: boolean }[]>(
        `select exists (select 1 from event e, rating_cursor c where e.xid >= c.xid) or exists (select 1 from billable_metric where backfill_status <> 'DONE') as pending`);
      if (r!.pending) {
        const [d] = await orm.em.fork().execute<Record<string, string>[]>(
          `select (select xid::text from rating_cursor) as cursor, pg_snapshot_xmin(pg_current_snapshot())::text as xmin,
                  (select count(*)::text from event e, rating_cursor c where e.xid >= c.xid) as unrated,
                  (select string_agg(backfill_status, ',') from billable_metric) as backfills,
                  (select string_agg(state || ':' || coalesce(backend_xid::text, '-') || ':' || left(query, 40), ' | ') from pg_stat_activity where datname = current_database() and state <> 'idle') as activity`);
        throw new Error(`pending ${JSON.stringify(d)}`);
      }
    }, 60_000);
  }

  test('customers, metrics and usage queries with the SDK', async () => {
    const acme = await client.v1.customers.create({ name: 'Acme', ingest_aliases: ['acme-prod'] });
    const beta = await client.v1.customers.create({ name: 'Beta' });
    await client.v1.customers.setIngestAliases({ customer_id: beta.data.id, ingest_aliases: ['beta-1', 'beta-2'] });
    expect((await client.v1.customers.retrieve({ customer_id: beta.data.id })).data.ingest_aliases).toEqual(['beta-1', 'beta-2']);
    const listed = [];
    for await (const c of client.v1.customers.list({ limit: 1 })) listed.push(c.name); // pages of one
    expect(listed).toEqual(['Acme', 'Beta']);

    const tokens = await client.v1.billableMetrics.create({
      name: 'tokens', aggregation_type: 'SUM', aggregation_key: 'tokens', event_type_filter: { in_values: ['llm'] },
      group_keys: [['model'], ['model', 'region']],
    });
    const users = await client.v1.billableMetrics.create({ name: 'active users', aggregation_type: 'UNIQUE', aggregation_key: 'user' });
    const peak = await client.v1.billableMetrics.create({ name: 'peak GPUs', aggregation_type: 'MAX', aggregation_key: 'gpus', event_type_filter: { in_values: ['gpu'] } });
    const seats = await client.v1.billableMetrics.create({ name: 'seats', aggregation_type: 'LATEST', aggregation_key: 'seats', event_type_filter: { in_values: ['seats'] } });
    expect((await client.v1.billableMetrics.retrieve({ billable_metric_id: tokens.data.id })).data).toMatchObject({ name: 'tokens', aggregation_type: 'SUM', group_keys: [['model'], ['model', 'region']] });

    const e = (id: string, customer: string, type: string, h: number, props: Record<string, unknown>) =>
      ({ transaction_id: `m-${id}`, customer_id: customer, event_type: type, timestamp: hour(h), properties: props });
    await client.v1.usage.ingest({ usage: [
      e('1', 'acme-prod', 'llm', 1, { tokens: 100, model: 'large', region: 'eu', user: 'ann' }),
      e('2', acme.data.id, 'llm', 1, { tokens: '0.5', model: 'small', region: 'eu', user: 'bob' }),
      e('3', 'acme-prod', 'llm', 26, { tokens: 10, model: 'large', region: 'us', user: 'ann' }),
      e('1', 'acme-prod', 'llm', 1, { tokens: 100, model: 'large', region: 'eu', user: 'ann' }), // duplicate in the batch
      e('4', 'beta-2', 'gpu', 3, { gpus: 8, user: 'cy' }),
      e('5', 'beta-1', 'gpu', 2, { gpus: 12 }),
      e('6', 'beta-1', 'seats', 4, { seats: 5 }),
      e('7', 'beta-1', 'seats', 5, { seats: 3 }),
    ] });
    await client.v1.usage.ingest({ usage: [e('3', 'acme-prod', 'llm', 26, { tokens: 10, model: 'large', region: 'us', user: 'ann' })] }); // a retry
    await rated();

    const daily = [];
    for await (const u of client.v1.usage.list({ starting_on: hour(0), ending_before: hour(48), window_size: 'DAY', billable_metrics: [{ id: tokens.data.id, group_by: { key: 'model' } }] })) daily.push(u);
    expect(daily.map((u) => [u.customer_id, u.start_timestamp, u.value, u.groups])).toEqual([
      [acme.data.id, hour(0), 100.5, { large: 100, small: 0.5 }],
      [acme.data.id, hour(24), 10, { large: 10 }],
    ]);
    const all = [];
    for await (const u of client.v1.usage.list({ starting_on: hour(0), ending_before: hour(48), window_size: 'NONE', customer_ids: [beta.data.id] })) all.push(u);
    expect(Object.fromEntries(all.map((u) => [u.billable_metric_name, u.value]))).toEqual({ 'tokens': 0, 'active users': 1, 'peak GPUs': 12, 'seats': 3 });

    const groups = [];
    for await (const g of client.v1.usage.listWithGroups({ billable_metric_id: tokens.data.id, customer_id: acme.data.id, window_size: 'NONE', starting_on: hour(0), ending_before: hour(48), group_key: ['model', 'region'] })) groups.push(g);
    expect(groups.map((g) => [g.group, g.value]).sort()).toEqual([[{ model: 'large', region: 'eu' }, 100], [{ model: 'large', region: 'us' }, 10], [{ model: 'small', region: 'eu' }, 0.5]].sort());
    const hourly = [];
    for await (const g of client.v1.usage.listWithGroups({ billable_metric_id: users.data.id, customer_id: acme.data.id, window_size: 'HOUR', starting_on: hour(0), ending_before: hour(48) })) hourly.push([g.starting_on, g.value]);
    expect(hourly).toEqual([[hour(1), 2], [hour(26), 1]]);

    const found = await client.v1.usage.search({ transactionIds: ['m-1', 'm-4', 'nope'] });
    const m1 = found.filter((f) => f.transaction_id === 'm-1');
    expect(m1.map((f) => f.is_duplicate).sort()).toEqual([false, true]);
    expect(m1[0]!.matched_customer).toEqual({ id: acme.data.id, name: 'Acme' });
    expect(m1[0]!.matched_billable_metrics!.map((m) => m.name).sort()).toEqual(['active users', 'tokens']);
    expect(found.find((f) => f.transaction_id === 'm-4')!.matched_customer!.id).toBe(beta.data.id);

    // Events for an alias nobody has yet are kept, and counted once the alias exists.
    await client.v1.usage.ingest({ usage: [e('8', 'gamma-soon', 'llm', 6, { tokens: 7, model: 'large', region: 'eu' })] });
    await rated();
    const gamma = await client.v1.customers.create({ name: 'Gamma', ingest_aliases: ['gamma-soon'] });
    await eventually('the early event to be rated for gamma', async () => {
      const u = [];
      for await (const x of client.v1.usage.list({ starting_on: hour(0), ending_before: hour(48), window_size: 'NONE', customer_ids: [gamma.data.id], billable_metrics: [{ id: tokens.data.id }] })) u.push(x.value);
      if (u[0] !== 7) throw new Error(`gamma usage ${u[0]}`);
    });

    // A metric created after the events applies to them too, with visible progress.
    const late = await client.v1.billableMetrics.create({ name: 'late count', aggregation_type: 'COUNT' });
    await eventually('the backfill to finish', async () => {
      const m = (await http(app, 'GET', `/v1/billable-metrics/${late.data.id}`, { token: app.adminToken })).json.data;
      if (m.backfill.status !== 'DONE') throw new Error(JSON.stringify(m.backfill));
      expect(m.backfill).toEqual({ status: 'DONE', events_processed: 8, events_total: 8 });
    });
    const lateUsage = [];
    for await (const x of client.v1.usage.list({ starting_on: hour(0), ending_before: hour(48), window_size: 'NONE', customer_ids: [acme.data.id], billable_metrics: [{ id: late.data.id }] })) lateUsage.push(x.value);
    expect(lateUsage).toEqual([3]);

    await client.v1.billableMetrics.archive({ id: peak.data.id });
    const active = [];
    for await (const m of client.v1.billableMetrics.list()) active.push(m.name);
    expect(active.sort()).toEqual(['active users', 'late count', 'seats', 'tokens']);
    await client.v1.customers.archive({ id: gamma.data.id });
    const archived = [];
    for await (const c of client.v1.customers.list({ only_archived: true })) archived.push(c.name);
    expect(archived).toEqual(['Gamma']);
    expect((await client.v1.customers.listBillableMetrics({ customer_id: acme.data.id })).data).toEqual([]);
  });

  test('ingest refuses what cannot be billed, and takes gzip', async () => {
    await client.v1.billableMetrics.create({ name: 'bytes', aggregation_type: 'SUM', aggregation_key: 'bytes', event_type_filter: { in_values: ['egress'] } });
    await new Promise((r) => setTimeout(r, 2100)); // the API's metric cache
    const ev = (id: string, props: Record<string, unknown>, ts = new Date().toISOString()) => ({ transaction_id: `v-${id}`, customer_id: 'x', event_type: 'egress', timestamp: ts, properties: props });
    const bad = await http(app, 'POST', '/v1/ingest', { token: app.adminToken, body: [ev('ok', { bytes: '10' }), ev('nan', { bytes: 'lots' })] });
    expect(bad.status).toBe(400);
    expect(bad.json.details).toEqual([{ index: 1, field: '[1].properties.bytes', message: expect.stringMatching(/must be a number for SUM metrics.*bytes/) }]);
    const future = await http(app, 'POST', '/v1/ingest', { token: app.adminToken, body: [ev('f', {}, new Date(Date.now() + 25 * 3_600_000).toISOString())] });
    expect([future.status, future.json.field]).toEqual([400, '[0].timestamp']);
    const old = await http(app, 'POST', '/v1/ingest', { token: app.adminToken, body: [ev('o', {}, new Date(Date.now() - 35 * 86_400_000).toISOString())] });
    expect([old.status, old.json.message]).toEqual([400, expect.stringMatching(/34-day ingest window/)]);
    const n = (await orm.em.fork().execute<{ n: string }[]>(`select count(*)::text as n from event where transaction_id like 'v-%'`))[0]!.n;
    expect(n).toBe('0');

    const gz = await fetch(`${app.baseURL}/v1/ingest`, {
      method: 'POST',
      headers: { authorization: `Bearer ${app.adminToken}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: gzipSync(JSON.stringify([ev('gz', { bytes: 5 })])),
    });
    expect(gz.status).toBe(200);
    const huge = await http(app, 'POST', '/v1/ingest', { token: app.adminToken, rawBody: JSON.stringify([ev('big', { blob: 'x'.repeat(1_100_000) })]) });
    expect([huge.status, huge.json.field]).toEqual([413, 'body']);
  });

  test('exactly once while the worker is SIGKILLed mid-rating; usage agrees with a recount', async () => {
    const c = await client.v1.customers.create({ name: 'Load', ingest_aliases: [uniqueName('load')] });
    const metric = await client.v1.billableMetrics.create({ name: 'load tokens', aggregation_type: 'SUM', aggregation_key: 'tokens', group_keys: [['shard']] });
    const alias = (await client.v1.customers.retrieve({ customer_id: c.data.id })).data.ingest_aliases[0]!;
    const sends: Promise<unknown>[] = [];
    for (let b = 0; b < 60; b++) {
      const usage = Array.from({ length: 100 }, (_, i) => ({
        transaction_id: `load-${b}-${i}`, customer_id: alias, event_type: 'load', timestamp: hour((b * 7 + i) % 40),
        properties: { tokens: `${i}.25`, shard: `s${i % 4}` },
      }));
      sends.push(client.v1.usage.ingest({ usage }));
      if (b % 10 === 0) sends.push(client.v1.usage.ingest({ usage: usage.slice(0, 30) })); // retries
      if (b === 20 || b === 40) {
        app.worker.kill('SIGKILL');
        await stopChild(app.worker);
        await app.startWorker();
      }
    }
    await Promise.all(sends);
    await rated();
    const m = await orm.em.fork().findOneOrFail(BillableMetric, { id: metric.data.id });
    await expectAggregatesMatchRecount(orm.em, m);
    const u = [];
    for await (const x of client.v1.usage.list({ starting_on: hour(0), ending_before: hour(48), window_size: 'NONE', customer_ids: [c.data.id], billable_metrics: [{ id: metric.data.id }] })) u.push(x.value);
    // 60 batches × (0.25 + 1.25 + … + 99.25) = 60 × 4975
    expect(u).toEqual([298_500]);
  });
});
