import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import pg from 'pg';
import { Contract, CustomerIngestAlias } from '../db/entities.js';
import { newId } from '../db/ids.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, uniqueName } from './stack.js';

/**
 * The console at scale, through HTTP: sessions per token are capped, the finance pages' live
 * feed is one LISTEN connection per API process driven by the tables' notices (no query per
 * open page), and the customers page and draft revenue cover every customer (5,000 here).
 */
describe('console: sessions, the live feed and 5,000 customers', () => {
  const MAX_SESSIONS = 3;
  // The live feed's connection is probed every second (ACCRUE_CONSOLE_FEED_PROBE).
  const h = useSdkApp('console_scale', { env: { ACCRUE_CONSOLE_MAX_SESSIONS: String(MAX_SESSIONS), ACCRUE_CONSOLE_FEED_PROBE: '1s' } });
  const token = async (scope: string) => (await http(h.app, 'POST', '/v1/accrue/tokens', { token: h.app.adminToken, body: { name: uniqueName(scope), scope } })).json.data.token as string;
  const login = (t: string) => http(h.app, 'POST', '/v1/accrue/console/sessions', { body: { token: t } });

  test('one token holds at most ACCRUE_CONSOLE_MAX_SESSIONS sessions, even when its logins race', async () => {
    const reader = await token('read');
    const logins = await Promise.all(Array.from({ length: 2 * MAX_SESSIONS }, () => login(reader)));
    expect(logins.map((r) => r.status).sort()).toEqual([...Array(MAX_SESSIONS).fill(201), ...Array(MAX_SESSIONS).fill(429)]);
    const refused = logins.find((r) => r.status === 429)!;
    expect(refused.json.message).toMatch(new RegExp(`already holds ${MAX_SESSIONS} open console sessions.*ACCRUE_CONSOLE_MAX_SESSIONS`));
    // Another token is not held back; ending a session makes room for one more.
    expect((await login(await token('read'))).status).toBe(201);
    const one = logins.find((r) => r.status === 201)!.json.data.session_token as string;
    expect((await http(h.app, 'POST', '/v1/accrue/console/sessions/end', { token: one })).status).toBe(200);
    expect((await login(reader)).status).toBe(201);
    expect((await login(reader)).status).toBe(429);
  });

  /** A write to the invoice table (one that changes no row: what changed is for the page to read again). */
  const touchInvoices = () => h.orm.em.fork().execute(`update invoice set status = status where false`);
  const count = (events: string[], name: string) => events.filter((e) => e === name).length;
  /** The API's feed connection, found by its application_name. */
  const feedBackend = async () => (await h.orm.em.fork().execute<{ pid: number }[]>(
    `select pid from pg_stat_activity where datname = current_database() and application_name = 'accrue console feed'`)).map((r) => r.pid);

  // First of this file's streams: the API process's feed starts with it.
  test('a stream says ready only once the feed listens: a change committed right after ready is told', async () => {
    const session = (await login(await token('finance'))).json.data.session_token as string;
    // A connection of our own made now, and the API's pool used just now (it keeps idle
    // connections for 10 s), both keep working while PostgreSQL takes no new connection.
    const db = new pg.Client({ connectionString: h.dbUrl });
    await db.connect();
    let told: Promise<unknown> | undefined;
    try {
      const backend = (await db.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      const postmaster = Number(/^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${backend}/status`, 'utf8'))![1]);
      expect((await http(h.app, 'GET', '/v1/accrue/console/me', { token: session })).status).toBe(200);
      const url = `${h.app.baseURL}/v1/accrue/console/events`;
      // The postmaster paused: the feed's connection is stuck in its accept queue, so the feed
      // cannot listen yet.
      process.kill(postmaster, 'SIGSTOP');
      let stream: Awaited<ReturnType<typeof openStream>>;
      try {
        // A change committed the moment the stream says `ready`.
        stream = await openStream(url, session, (name) => {
          if (name === 'ready') told ??= db.query(`update invoice set status = status where false`);
        });
        await eventually('the stream open', async () => expect(stream.blocks).toBeGreaterThan(0));
        expect(stream.events).toEqual([]);
      } finally {
        process.kill(postmaster, 'SIGCONT');
      }
      try {
        await eventually('ready once the feed listens', async () => expect(stream.events[0]).toBe('ready'));
        await told;
        await eventually('the change after ready told', async () => expect(stream.events).toContain('changed'), 15_000);
      } finally {
        stream.close();
      }
    } finally {
      await told?.catch(() => undefined);
      await db.end();
    }
  });

  test('every open finance page hears a change through one shared LISTEN connection', async () => {
    const session = (await login(await token('finance'))).json.data.session_token as string;
    const streams = await Promise.all(Array.from({ length: 5 }, () => openStream(`${h.app.baseURL}/v1/accrue/console/events`, session)));
    try {
      await eventually('every stream ready', async () => expect(streams.every((s) => s.events.includes('ready'))).toBe(true));
      const listening = async () => (await h.orm.em.fork().execute<{ n: number }[]>(
        `select count(*)::int as n from pg_stat_activity where datname = current_database() and query ilike 'listen accrue_console%'`))[0]!.n;
      expect(await listening()).toBe(1);
      // A write to the invoice table (here one that changes no row: what changed is for the page
      // to read again) reaches every page.
      await h.orm.em.fork().execute(`update invoice set status = status where false`);
      await eventually('every stream told', async () => expect(streams.every((s) => s.events.includes('changed'))).toBe(true));
      expect(await listening()).toBe(1);
    } finally {
      for (const s of streams) s.close();
    }
  });

  test('a feed connection PostgreSQL ends is made again and every open stream told ready; changes are told again', async () => {
    const session = (await login(await token('finance'))).json.data.session_token as string;
    const stream = await openStream(`${h.app.baseURL}/v1/accrue/console/events`, session);
    try {
      await eventually('ready', async () => expect(stream.events).toContain('ready'));
      const ready = count(stream.events, 'ready');
      const killed = await h.orm.em.fork().execute<{ ok: boolean }[]>(
        `select pg_terminate_backend(pid) as ok from pg_stat_activity where datname = current_database() and application_name = 'accrue console feed'`);
      expect(killed).toEqual([{ ok: true }]);
      // Committed while the feed is away: no notice reaches it, so the stream is told `ready`.
      await touchInvoices();
      await eventually('ready again', async () => expect(count(stream.events, 'ready')).toBeGreaterThan(ready), 15_000);
      const seen = stream.events.length;
      await touchInvoices();
      await eventually('a later change told', async () => expect(stream.events.slice(seen)).toContain('changed'), 15_000);
      expect(await feedBackend()).toHaveLength(1);
    } finally {
      stream.close();
    }
  });

  test('a feed connection that stops answering is dropped after ACCRUE_CONSOLE_FEED_PROBE, made again, and every stream told ready', async () => {
    const session = (await login(await token('finance'))).json.data.session_token as string;
    const stream = await openStream(`${h.app.baseURL}/v1/accrue/console/events`, session);
    try {
      await eventually('ready', async () => expect(stream.events).toContain('ready'));
      const ready = count(stream.events, 'ready');
      const [pid] = await feedBackend();
      expect(pid).toBeDefined();
      // The feed's backend paused: its socket stays open, nothing answers (a dead peer, a cut
      // network). A change committed now is never told through that connection.
      process.kill(pid!, 'SIGSTOP');
      try {
        await touchInvoices();
        await eventually('ready after the feed connection is made again', async () => expect(count(stream.events, 'ready')).toBeGreaterThan(ready), 20_000);
        expect(await feedBackend()).toContain(pid);
        const seen = stream.events.length;
        await touchInvoices();
        await eventually('a later change told', async () => expect(stream.events.slice(seen)).toContain('changed'), 15_000);
      } finally {
        process.kill(pid!, 'SIGCONT');
      }
      await eventually('the dropped connection gone', async () => expect(await feedBackend()).not.toContain(pid));
      expect(await feedBackend()).toHaveLength(1);
    } finally {
      stream.close();
    }
  });

  test('5,000 customers: the customers page counts and pages through all of them; draft revenue counts every customer', async () => {
    const N = 5_000;
    const WITH_CONTRACTS = 600;
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['scale_call'] } });
    const product = await h.client.v1.contracts.products.create({ name: 'Scale calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 2, starting_at: monthStart(-1) });
    const prefix = uniqueName('scale');
    const ids = (await h.orm.em.fork().execute<{ id: string }[]>(`
      insert into customer (id, name, custom_fields, created_at, updated_at)
      select gen_random_uuid(), ? || ' ' || lpad(n::text, 5, '0'), '{}', now(), now() from generate_series(1, ?) n
      returning id::text as id`, [prefix, N])).map((r) => r.id);
    const em = h.orm.em.fork();
    const start = new Date(monthStart(0));
    for (const [i, id] of ids.slice(0, WITH_CONTRACTS).entries()) {
      em.create(CustomerIngestAlias, { alias: `${prefix}-${i}`, customerId: id, position: 0 });
      em.create(Contract, {
        id: newId(), customerId: id, rateCardId: card.data.id, startingAt: start, endingBefore: null,
        usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, createdAt: new Date(), terms: {},
      });
    }
    await em.flush();
    await em.execute(`insert into customer_event_key (key, customer_id) select alias, customer_id from customer_ingest_alias where alias like ? on conflict do nothing`, [`${prefix}-%`]);
    // One call each, this month: every customer with a contract owes 2 cents on its draft.
    for (let b = 0; b < WITH_CONTRACTS; b += 100) {
      await h.client.v1.usage.ingest({ usage: Array.from({ length: 100 }, (_, j) => ({ transaction_id: `${prefix}-call-${b + j}`, customer_id: `${prefix}-${b + j}`, event_type: 'scale_call', timestamp: new Date().toISOString() })) });
    }

    // Every customer, each once, a page at a time, with the total count on every page.
    const reader = await token('read');
    const seen = new Set<string>();
    let next: string | null = '';
    let pages = 0;
    while (next !== null) {
      const r = await http(h.app, 'GET', `/v1/accrue/console/customers?limit=500${next ? `&next_page=${next}` : ''}`, { token: reader });
      expect(r.status).toBe(200);
      expect(r.json.total_count).toBeGreaterThanOrEqual(N);
      for (const c of r.json.data as { id: string }[]) {
        expect(seen.has(c.id)).toBe(false);
        seen.add(c.id);
      }
      next = r.json.next_page;
      pages++;
    }
    const [all] = await h.orm.em.fork().execute<{ n: number }[]>('select count(*)::int as n from customer where archived_at is null');
    expect(seen.size).toBe(all!.n);
    expect(pages).toBeGreaterThanOrEqual(N / 500);
    expect(ids.every((id) => seen.has(id))).toBe(true);

    // Draft revenue: 600 customers × 2 cents, once they are rated.
    const today = new Date().toISOString().slice(0, 10);
    await eventually('draft revenue of every customer', async () => {
      const r = await http(h.app, 'GET', `/v1/accrue/console/revenue?from=${today}&to=${today}`, { token: reader });
      expect(r.status).toBe(200);
      const scale = (r.json.data.draft as { product: string; values: number[] }[]).filter((s) => s.product === 'Scale calls');
      expect(scale.map((s) => s.values)).toEqual([[2 * WITH_CONTRACTS]]);
    }, 120_000);
  });
});

/**
 * An SSE stream read with node:http; `events` lists the event names received so far, `blocks`
 * counts what was received (events and comment lines), `onEvent` is called as each event arrives.
 */
function openStream(url: string, bearer: string, onEvent: (name: string) => void = () => undefined): Promise<{ events: string[]; readonly blocks: number; close: () => void }> {
  return new Promise((resolve, reject) => {
    const events: string[] = [];
    let blocks = 0;
    const req = request(url, { headers: { authorization: `Bearer ${bearer}`, accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream answered ${res.statusCode}`));
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const m = /^event: (\S+)/m.exec(buf.slice(0, i));
          blocks++;
          if (m) {
            events.push(m[1]!);
            onEvent(m[1]!);
          }
          buf = buf.slice(i + 2);
        }
      });
      res.on('error', () => undefined);
      resolve({ events, get blocks() { return blocks; }, close: () => req.destroy() });
    });
    req.on('error', (err) => (events.length ? undefined : reject(err)));
    req.end();
  });
}
