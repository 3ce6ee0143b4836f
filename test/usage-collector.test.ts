import Metronome from '@metronome/sdk';
import pg from 'pg';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Client, Connection } from '@temporalio/client';
import { createTestDatabase, eventually, http, startApp, testStack, uniqueName, type RunningApp } from './stack.js';

/**
 * Pull-based ingestion: a usage collector's Temporal Schedule runs read-only SQL against a
 * source PostgreSQL (a real database here), turns rows into events with deterministic ids and
 * ingests them — each window once, even when it is run again.
 */
describe('usage collector', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  let source: pg.Client;
  let sourceUrl: string;
  let connection: Connection;
  const hourMs = 3_600_000;
  const thisHour = Math.floor(Date.now() / hourMs) * hourMs;

  beforeAll(async () => {
    const db = await createTestDatabase('collector');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
    const name = uniqueName('source').toLowerCase();
    const admin = new pg.Client({ connectionString: testStack().postgresUrl });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    sourceUrl = testStack().postgresUrl.replace(/\/[^/]+$/, `/${name}`);
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query('create table api_calls (tenant text not null, at timestamptz not null, calls int not null, model text not null)');
    for (let h = 1; h <= 3; h++) {
      for (let i = 0; i < 10; i++) {
        await source.query('insert into api_calls values ($1, $2, $3, $4)', [i % 2 ? 'tenant-a' : 'tenant-b', new Date(thisHour - h * hourMs + i * 60_000), h * 10 + i, i % 3 ? 'large' : 'small']);
      }
    }
    connection = await Connection.connect({ address: testStack().temporalAddress });
  });
  afterAll(async () => {
    await app?.stop();
    await source?.end();
    await connection?.close();
    await orm?.close();
  });

  const query = `select tenant as customer_id, $1::timestamptz as timestamp, model, sum(calls) as calls
                   from api_calls where at >= $1 and at < $2 group by tenant, model order by tenant, model`;

  test('refuses a query that writes, lacks columns or cannot reach its source; nothing is stored', async () => {
    const base = { name: 'bad', source_database_url: sourceUrl, query, event_type: 'api_usage', interval_seconds: 3600 };
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ ...base, query: 'delete from api_calls' }, 'query', /read-only SELECT/],
      [{ ...base, query: 'select tenant as customer_id from api_calls' }, 'query', /timestamp column/],
      [{ ...base, source_database_url: sourceUrl.replace(/\/[^/]+$/, '/no_such_db') }, 'source_database_url', /cannot connect/],
      [{ ...base, interval_seconds: 0 }, 'interval_seconds', /whole number/],
      [{ ...base, starting_at: new Date(thisHour + 60_000).toISOString() }, 'starting_at', /window boundary/],
    ];
    for (const [body, field, message] of cases) {
      const res = await http(app, 'POST', '/v1/accrue/usage-collectors', { token: app.adminToken, body });
      expect([res.status, res.json.field]).toEqual([400, field]);
      expect(res.json.message).toMatch(message);
    }
    const n = (await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from usage_collector'))[0]!.n;
    expect(n).toBe('0');
    expect((await source.query('select count(*) from api_calls')).rows[0].count).toBe('30');
  });

  test('collects each whole window once, on schedule or on demand, and reruns are deduplicated', async () => {
    const a = await client.v1.customers.create({ name: 'Tenant A', ingest_aliases: ['tenant-a'] });
    const metric = await client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'SUM', aggregation_key: 'calls', event_type_filter: { in_values: ['api_usage'] }, group_keys: [['model']] });
    const created = await http(app, 'POST', '/v1/accrue/usage-collectors', { token: app.adminToken, body: {
      name: 'warehouse calls', source_database_url: sourceUrl, query, event_type: 'api_usage', interval_seconds: 3600, starting_at: new Date(thisHour - 3 * hourMs).toISOString(),
    } });
    expect(created.status).toBe(200);
    const collector = created.json.data;
    expect(collector).not.toHaveProperty('source_database_url');
    const temporal = new Client({ connection });
    const schedule = await temporal.schedule.getHandle(collector.schedule_id).describe();
    expect(schedule.spec.intervals).toMatchObject([{ every: 3_600_000 }]);

    expect((await http(app, 'POST', `/v1/accrue/usage-collectors/${collector.id}/run`, { token: app.adminToken })).status).toBe(202);
    await eventually('three windows collected', async () => {
      const c = (await http(app, 'GET', `/v1/accrue/usage-collectors/${collector.id}`, { token: app.adminToken })).json.data;
      if (c.collected_until !== new Date(thisHour).toISOString()) throw new Error(c.collected_until);
    });
    const count = async () => Number((await orm.em.fork().execute<{ n: string }[]>(`select count(*)::text as n from event where transaction_id like 'collector:%'`))[0]!.n);
    expect(await count()).toBe(12); // 3 windows × 2 tenants × 2 models

    // Run every window again (as after a crash between ingest and cursor): nothing is counted twice.
    await orm.em.fork().execute('update usage_collector set collected_until = ?', [new Date(thisHour - 3 * hourMs)]);
    await http(app, 'POST', `/v1/accrue/usage-collectors/${collector.id}/run`, { token: app.adminToken });
    await eventually('the rerun to finish', async () => {
      const c = (await http(app, 'GET', `/v1/accrue/usage-collectors/${collector.id}`, { token: app.adminToken })).json.data;
      if (c.collected_until !== new Date(thisHour).toISOString()) throw new Error(c.collected_until);
    });
    expect(await count()).toBe(12);

    const want = Number((await source.query(`select sum(calls) from api_calls where tenant = 'tenant-a'`)).rows[0].sum);
    await eventually('tenant A usage to equal the source', async () => {
      const u = [];
      for await (const x of client.v1.usage.list({ starting_on: new Date(thisHour - 3 * hourMs).toISOString(), ending_before: new Date(thisHour).toISOString(), window_size: 'NONE', customer_ids: [a.data.id], billable_metrics: [{ id: metric.data.id }] })) u.push(x.value);
      expect(u).toEqual([want]);
    });

    expect((await http(app, 'POST', `/v1/accrue/usage-collectors/${collector.id}/archive`, { token: app.adminToken })).status).toBe(200);
    await expect(temporal.schedule.getHandle(collector.schedule_id).describe()).rejects.toThrow();
  });
});
