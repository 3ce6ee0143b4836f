import Metronome from '@metronome/sdk';
import pg from 'pg';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Client, Connection } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createCollectorActivities } from '../activities/collector-activities.js';
import { newId } from '../db/ids.js';
import { ownDatabaseIdentity, runCollectorQuery, SOURCE_LIMITS, withSource } from '../db/usage-collector.js';
import { createTestDatabase, eventually, http, startApp, testStack, uniqueName, type RunningApp } from './stack.js';

/**
 * Pull-based ingestion: a usage collector's Temporal Schedule runs read-only SQL against a
 * source PostgreSQL (a real database here), turns rows into events with deterministic ids and
 * ingests them — each window once, even when it is run again.
 */
/** The same server and database as `url`, as another role. */
function withUser(url: string, user: string, password: string): string {
  const u = new URL(url);
  u.username = user;
  u.password = password;
  return u.toString();
}

function withPort(url: string, port: string): string {
  const u = new URL(url);
  u.port = port;
  return u.toString();
}

describe('usage collector', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  let source: pg.Client;
  let sourceUrl: string;
  /** The source as a plain role: SELECT on api_calls, and CREATE on its schema, so an escaped write would succeed. */
  let readerUrl: string;
  let reader: string;
  let accrueUrl: string;
  let connection: Connection;
  const hourMs = 3_600_000;
  const thisHour = Math.floor(Date.now() / hourMs) * hourMs;

  beforeAll(async () => {
    const db = await createTestDatabase('collector');
    orm = db.orm;
    accrueUrl = db.url;
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
    reader = uniqueName('reader').toLowerCase();
    await source.query(`create role ${reader} login password 'reader-pw'`);
    await source.query(`grant select on api_calls to ${reader}`);
    await source.query(`grant create on schema public to ${reader}`);
    readerUrl = withUser(sourceUrl, reader, 'reader-pw');
    connection = await Connection.connect({ address: testStack().temporalAddress });
  });
  afterAll(async () => {
    await app?.stop();
    await source?.query(`drop owned by ${reader}`).catch(() => undefined);
    await source?.end();
    const admin = new pg.Client({ connectionString: testStack().postgresUrl });
    await admin.connect();
    await admin.query(`drop role if exists ${reader}`).catch(() => undefined);
    await admin.end();
    await connection?.close();
    await orm?.close();
  });

  const query = `select tenant as customer_id, $1::timestamptz as timestamp, model, sum(calls) as calls
                   from api_calls where at >= $1 and at < $2 group by tenant, model order by tenant, model`;

  test('refuses a query that writes, lacks columns or cannot reach its source; nothing is stored', async () => {
    const base = { name: 'bad', source_database_url: readerUrl, query, event_type: 'api_usage', interval_seconds: 3600 };
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ ...base, query: 'delete from api_calls' }, 'query', /read-only SELECT/],
      [{ ...base, query: 'select tenant as customer_id from api_calls' }, 'query', /timestamp column/],
      [{ ...base, source_database_url: readerUrl.replace(/\/[^/?]+$/, '/no_such_db') }, 'source_database_url', /cannot connect/],
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

  const tableExists = async (db: pg.Client | MikroORM, table: string) => {
    const sql = `select to_regclass('public.${table}') is not null as present`;
    const rows = 'em' in db ? await db.em.fork().execute<{ present: boolean }[]>(sql) : (await db.query<{ present: boolean }>(sql)).rows;
    return rows[0]!.present;
  };
  /** Closes the wrapping subquery, commits out of the READ ONLY transaction and writes. */
  const stacked = (table: string) => `select 'x' as customer_id, now() as timestamp) q; commit; create table ${table} (x int); select * from (select 1`;

  test('stacked statements cannot commit out of the READ ONLY transaction, on the source or on Accrue itself', async () => {
    const base = { name: 'escape', query, event_type: 'api_usage', interval_seconds: 3600 };
    // A plain role on the source: the simple protocol used to run all four statements.
    const res = await http(app, 'POST', '/v1/accrue/usage-collectors', { token: app.adminToken, body: { ...base, source_database_url: readerUrl, query: stacked('escaped_reader') } });
    expect({ escaped: await tableExists(source, 'escaped_reader'), status: res.status, field: res.json.field }).toEqual({ escaped: false, status: 400, field: 'query' });
    expect(res.json.message).toMatch(/single SELECT statement/);
    // Accrue's own database as the embedded stack's superuser: the escape was a superuser shell (COPY ... TO PROGRAM).
    const own = await http(app, 'POST', '/v1/accrue/usage-collectors', { token: app.adminToken, body: { ...base, source_database_url: accrueUrl, query: stacked('escaped_accrue') } });
    expect({ escaped: await tableExists(orm, 'escaped_accrue'), status: own.status, field: own.json.field }).toEqual({ escaped: false, status: 400, field: 'source_database_url' });

    // A collector stored before these checks existed is refused by the worker too, not run.
    const env = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') }); // the activity Context only; the activity is real
    const acts = createCollectorActivities({ orm, mailer: undefined as never, invoiceGracePeriodMs: 0 });
    const stored = async (sql: string) => {
      const id = newId();
      await orm.em.fork().execute(
        `insert into usage_collector (id, name, source_url, query, event_type, interval_seconds, collected_until, created_at) values (?, 'old', ?, ?, 'api_usage', 3600, ?, now())`,
        [id, readerUrl, sql, new Date(thisHour - hourMs)]);
      return id;
    };
    const plain = await stored(`select 'x' as customer_id, now() as timestamp; commit; create table escaped_worker (x int); select 'x' as customer_id, now() as timestamp`);
    await expect(env.run(acts.collectUsage, { collectorId: plain })).rejects.toThrow(/syntax error/);
    const closing = await stored(stacked('escaped_worker'));
    await expect(env.run(acts.collectUsage, { collectorId: closing })).rejects.toThrow(/single SELECT statement/);
    expect(await tableExists(source, 'escaped_worker')).toBe(false);
    await orm.em.fork().execute('delete from usage_collector where id in (?, ?)', [plain, closing]);
  });

  test('a row PostgreSQL cannot store (NUL inside a json column) fails the run for good instead of on every retry', async () => {
    const env = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
    const acts = createCollectorActivities({ orm, mailer: undefined as never, invoiceGracePeriodMs: 0 });
    const id = newId();
    await orm.em.fork().execute(
      `insert into usage_collector (id, name, source_url, query, event_type, interval_seconds, collected_until, created_at) values (?, 'json nul', ?, ?, 'api_usage', 3600, ?, now())`,
      [id, readerUrl, `select 'tenant-a' as customer_id, $1::timestamptz as timestamp, '{"note": "a\\u0000b"}'::json as meta`, new Date(thisHour - hourMs)]);
    const failure = await env.run(acts.collectUsage, { collectorId: id }).then(() => undefined, (err: unknown) => err as ApplicationFailure);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect([failure!.nonRetryable, failure!.message]).toEqual([true, expect.stringMatching(/row 0: column meta\.note must not contain the NUL character/)]);
    await orm.em.fork().execute('delete from usage_collector where id = ?', [id]);
  });

  test('rows are held to the ingest window: a row with its own transaction_id outside it is skipped, counted on the collector, and the cursor moves on', async () => {
    // Its key would be gone after the retention window, so a re-emitted copy would count twice.
    const env = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
    const acts = createCollectorActivities({ orm, mailer: undefined as never, invoiceGracePeriodMs: 0, lateUsageWindowMs: 34 * 86_400_000 });
    const stored = async (sql: string) => {
      const id = newId();
      await orm.em.fork().execute(
        `insert into usage_collector (id, name, source_url, query, event_type, interval_seconds, collected_until, created_at) values (?, 'window', ?, ?, 'api_usage', 3600, ?, now())`,
        [id, readerUrl, sql, new Date(thisHour - hourMs)]);
      return id;
    };
    const keys = async (ids: string[]) => (await orm.em.fork().execute<{ transaction_id: string }[]>(
      `select transaction_id from event_key where transaction_id = any(?::text[]) order by 1`, [`{${ids.join(',')}}`])).map((r) => r.transaction_id);
    for (const c of [{ txid: 'window-old', ts: `now() - interval '40 days'` }, { txid: 'window-ahead', ts: `now() + interval '2 days'` }]) {
      const id = await stored(`select * from (values ('tenant-window', '${c.txid}-fresh', now() - interval '1 hour', 1), ('tenant-window', '${c.txid}', ${c.ts}, 2)) r(customer_id, transaction_id, timestamp, calls)`);
      expect(await env.run(acts.collectUsage, { collectorId: id })).toEqual({ windows: 1, events: 1, outsideWindow: 1 });
      // The row inside the window is stored, the one outside never is; the cursor moved past the window.
      expect(await keys([c.txid, `${c.txid}-fresh`])).toEqual([`${c.txid}-fresh`]);
      const read = await http(app, 'GET', `/v1/accrue/usage-collectors/${id}`, { token: app.adminToken });
      expect(read.json.data).toMatchObject({ collected_until: new Date(thisHour).toISOString(), last_run_events: 1, last_run_outside_window: 1, rows_outside_window: 1 });
      // A rerun of the same window (the cursor set back) skips it again: never stored, so never counted twice.
      await orm.em.fork().execute('update usage_collector set collected_until = ? where id = ?', [new Date(thisHour - hourMs), id]);
      expect(await env.run(acts.collectUsage, { collectorId: id })).toEqual({ windows: 1, events: 1, outsideWindow: 1 });
      expect(await keys([c.txid, `${c.txid}-fresh`])).toEqual([`${c.txid}-fresh`]);
      expect((await http(app, 'GET', `/v1/accrue/usage-collectors/${id}`, { token: app.adminToken })).json.data.rows_outside_window).toBe(2);
      await orm.em.fork().execute('delete from usage_collector where id = ?', [id]);
    }
    // A collector cannot start in windows older than the ingest window, less a day of margin (this API's is 400 days).
    const start = async (daysAgo: number) => http(app, 'POST', '/v1/accrue/usage-collectors', { token: app.adminToken, body: { name: 'old start', source_database_url: readerUrl, query, event_type: 'api_usage', interval_seconds: 3600, starting_at: new Date(thisHour - daysAgo * 24 * hourMs).toISOString() } });
    const res = await start(500);
    expect([res.status, res.json.field, res.json.message]).toEqual([400, 'starting_at', expect.stringMatching(/older than the 400-day ingest window/)]);
    expect((await start(399.5)).status).toBe(400);
  });

  test('refuses superuser sources and Accrue itself; connection failures all read alike', async () => {
    const base = { name: 'refused', query, event_type: 'api_usage', interval_seconds: 3600 };
    const post = (url: string) => http(app, 'POST', '/v1/accrue/usage-collectors', { token: app.adminToken, body: { ...base, source_database_url: url } });
    const superuser = await post(sourceUrl);
    expect([superuser.status, superuser.json.field, superuser.json.message]).toEqual([400, 'source_database_url', expect.stringMatching(/a superuser or a member of one/)]);
    const fileReader = uniqueName('files').toLowerCase();
    await source.query(`create role ${fileReader} login password 'pw' in role pg_read_server_files`);
    try {
      expect((await post(withUser(sourceUrl, fileReader, 'pw'))).json.message).toMatch(/pg_read_server_files/);
    } finally {
      await source.query(`drop role ${fileReader}`);
    }
    const ownAsReader = await post(withUser(accrueUrl, reader, 'reader-pw'));
    expect([ownAsReader.status, ownAsReader.json.field, ownAsReader.json.message]).toEqual([400, 'source_database_url', expect.stringMatching(/Accrue's own database/)]);
    const ssl = await post(`${readerUrl}?sslrootcert=/etc/passwd`);
    expect([ssl.status, ssl.json.message]).toEqual([400, expect.stringMatching(/must not set sslrootcert/)]);

    // No database, a closed port, a port that is not PostgreSQL (the API's own HTTP port): one
    // answer, so the collector cannot tell what listens where.
    const apiPort = new URL(app.baseURL).port;
    const unreachable = [readerUrl.replace(/\/[^/?]+$/, '/no_such_db'), withPort(readerUrl, '1'), withPort(readerUrl, apiPort)];
    const answers = await Promise.all(unreachable.map(post));
    for (const a of answers) {
      expect([a.status, a.json.field]).toEqual([400, 'source_database_url']);
      expect(a.json.message).not.toMatch(/ECONNREFUSED|does not exist|no_such_db|:1\b|127\.0\.0\.1|socket|ended|timeout/i);
    }
    expect(new Set(answers.map((a) => a.json.message)).size).toBe(1);
    expect((await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from usage_collector'))[0]!.n).toBe('0');
  });

  test('each window is capped in rows and time, with settings a connection string cannot lift', async () => {
    const own = await ownDatabaseIdentity(orm.em.fork());
    const start = new Date(thisHour - hourMs);
    const end = new Date(thisHour);
    const run = (sql: string, maxRows: number, url = readerUrl, limits = SOURCE_LIMITS) => withSource(url, own, (c) => runCollectorQuery(c, sql, start, end, maxRows), limits);
    const six = `select 'c' as customer_id, $1::timestamptz as timestamp, n from generate_series(1, 6) n`;
    expect((await run(six, 6)).rows).toHaveLength(6);
    await expect(run(six, 5)).rejects.toThrow(/query: returns more than 5 rows for the window/);

    const settings = `select current_setting('statement_timeout') as statement_timeout, current_setting('idle_in_transaction_session_timeout') as idle,
                             current_setting('transaction_read_only') as read_only`;
    const lifted = `${readerUrl}?options=${encodeURIComponent('-c statement_timeout=0 -c idle_in_transaction_session_timeout=0')}`;
    expect((await run(settings, 1, lifted)).rows).toEqual([{ statement_timeout: '1min', idle: '30s', read_only: 'on' }]);

    const started = Date.now();
    await expect(run('select pg_sleep(10)', 1, readerUrl, { ...SOURCE_LIMITS, statementTimeoutMs: 300 })).rejects.toThrow(/statement timeout/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  test('collects each whole window once, on schedule or on demand, and reruns are deduplicated', async () => {
    const a = await client.v1.customers.create({ name: 'Tenant A', ingest_aliases: ['tenant-a'] });
    const metric = await client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'SUM', aggregation_key: 'calls', event_type_filter: { in_values: ['api_usage'] }, group_keys: [['model']] });
    const created = await http(app, 'POST', '/v1/accrue/usage-collectors', { token: app.adminToken, body: {
      name: 'warehouse calls', source_database_url: readerUrl, query, event_type: 'api_usage', interval_seconds: 3600, starting_at: new Date(thisHour - 3 * hourMs).toISOString(),
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
