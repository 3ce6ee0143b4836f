import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { Request, Response } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { authenticate, TokenCache } from '../api/auth.js';
import { MAX_DUPLICATES_SHOWN } from '../api/limits.js';
import { MAX_JSON_DEPTH } from '../api/body-checks.js';
import { UnauthorizedError } from '../billing/errors.js';
import { ApiToken } from '../db/entities.js';
import { createToken, hashToken } from '../db/tokens.js';
import { createTestDatabase, eventually, http, monthStart, startApp, type RunningApp } from './stack.js';

/**
 * Bad input gets a 4xx whose message names the field, and nothing is written. Counts are read
 * straight from PostgreSQL before and after every request.
 */
describe('bad input', () => {
  let app: RunningApp;
  let orm: MikroORM;
  const counts = async () => {
    const rows = await orm.em.fork().execute<{ t: string; n: string }[]>(
      `select 'customer' t, count(*)::text n from customer union all select 'alias', count(*)::text from customer_ingest_alias
       union all select 'event', count(*)::text from event union all select 'metric', count(*)::text from billable_metric
       union all select 'product', count(*)::text from product union all select 'rate', count(*)::text from rate
       union all select 'contract', count(*)::text from contract union all select 'invoice', count(*)::text from invoice`);
    return Object.fromEntries(rows.map((r) => [r.t, Number(r.n)]));
  };
  let admin: string;

  beforeAll(async () => {
    const db = await createTestDatabase('badinput');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, withWorker: false });
    admin = app.adminToken;
  });

  afterAll(async () => {
    await app?.stop();
    await orm?.close();
  });

  async function rejected(method: string, path: string, opts: { body?: unknown; rawBody?: string; token?: string }, status: number, field: string | undefined, message: RegExp) {
    const before = await counts();
    const res = await http(app, method, path, { token: admin, ...opts });
    expect({ status: res.status, field: res.json?.field }).toEqual({ status, field });
    expect(res.json.message).toMatch(message);
    expect(await counts()).toEqual(before);
    return res;
  }

  test('webhook URLs on private, loopback or link-local addresses are refused (no ACCRUE_WEBHOOK_ALLOW_PRIVATE here)', async () => {
    for (const url of ['http://127.0.0.1:9/hook', 'http://localhost/hook', 'http://10.1.2.3/hook', 'http://192.168.0.10/hook', 'http://169.254.169.254/latest/meta-data', 'http://[::1]/hook', 'http://[fe80::1]/hook', 'http://[::ffff:127.0.0.1]/hook']) {
      await rejected('POST', '/v1/accrue/webhook-endpoints', { body: { url } }, 400, 'url', /private, loopback or link-local/);
    }
    await rejected('POST', '/v1/accrue/webhook-endpoints', { body: { url: 'file:///etc/passwd' } }, 400, 'url', /http\(s\) URL/);
    await rejected('POST', '/v1/accrue/webhook-endpoints', { body: { url: 'https://user:pw@example.com/hook' } }, 400, 'url', /credentials/);
    const count = await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from webhook_endpoint');
    expect(count[0]!.n).toBe('0');
  });

  test('authentication and scopes', async () => {
    expect((await http(app, 'GET', '/health')).status).toBe(200);
    await rejected('POST', '/v1/customers', { body: { name: 'x' }, token: '' }, 401, undefined, /Bearer/);
    await rejected('POST', '/v1/customers', { body: { name: 'x' }, token: 'not-a-token' }, 401, undefined, /unknown or revoked/);
    const minted = await http(app, 'POST', '/v1/accrue/tokens', { token: admin, body: { name: 'pipeline', scope: 'ingest' } });
    expect(minted.status).toBe(200);
    const ingestToken = minted.json.data.token as string;
    await rejected('POST', '/v1/customers', { body: { name: 'x' }, token: ingestToken }, 403, undefined, /scope admin/);
    const ok = await http(app, 'POST', '/v1/ingest', { token: ingestToken, body: [{ transaction_id: 'scope-1', customer_id: 'someone', event_type: 'e', timestamp: '2026-01-01T00:00:00Z' }] });
    expect(ok.status).toBe(200);
    await rejected('POST', '/v1/accrue/tokens', { body: { name: 'x', scope: 'superuser' } }, 400, 'scope', /one of admin, ingest, finance, read/);
  });

  // The API's own middleware, in process against the test database: the cache is observable here.
  test('the token cache is bounded, keeps no misses, and still refuses unknown and revoked tokens', async () => {
    const cache = new TokenCache(50, 300);
    const check = authenticate(orm, undefined, cache);
    const scopeOf = async (token: string) => {
      const req = { headers: { authorization: `Bearer ${token}` } } as unknown as Request;
      let passed = false;
      try {
        await check(req, {} as Response, () => { passed = true; });
      } catch (err) {
        if (!(err instanceof UnauthorizedError)) throw err;
      }
      return passed ? req.scope : undefined;
    };
    // 10,000 random tokens: every one refused, none kept.
    for (let i = 0; i < 10_000; i += 100) {
      const scopes = await Promise.all(Array.from({ length: 100 }, () => scopeOf(`acr_${randomBytes(24).toString('base64url')}`)));
      expect(scopes.every((s) => s === undefined)).toBe(true);
      expect(cache.size).toBe(0);
    }
    // 80 valid tokens: every one accepted; the cache holds the 50 most recently used.
    const tokens: string[] = [];
    for (let i = 0; i < 80; i++) tokens.push(await createToken(orm.em.fork(), `cache-${i}`, 'read'));
    for (const t of tokens) expect(await scopeOf(t)).toBe('read');
    expect(cache.size).toBe(50);
    expect(await scopeOf(tokens[0]!)).toBe('read'); // evicted, looked up again
    expect(cache.size).toBe(50);
    // Revoked: one not cached is refused at once; a cached one once its entry expires (300 ms here, 10 s in the API).
    await orm.em.fork().nativeUpdate(ApiToken, { tokenHash: { $in: [hashToken(tokens[1]!), hashToken(tokens[79]!)] } }, { revokedAt: new Date() });
    expect(await scopeOf(tokens[1]!)).toBeUndefined();
    await eventually('the cached, revoked token to be refused', async () => {
      if ((await scopeOf(tokens[79]!)) !== undefined) throw new Error('still accepted');
    }, 5000);
    expect(await scopeOf(tokens[78]!)).toBe('read');
  });

  test('malformed JSON, missing fields, wrong types and unknown fields on customers', async () => {
    await rejected('POST', '/v1/customers', { rawBody: '{"name": "Acme",' }, 400, 'body', /malformed JSON/);
    await rejected('POST', '/v1/customers', { body: {} }, 400, 'name', /name: is required/);
    await rejected('POST', '/v1/customers', { body: { name: 42 } }, 400, 'name', /must be a string, got number/);
    await rejected('POST', '/v1/customers', { body: { name: 'Acme', ingest_aliases: 'acme' } }, 400, 'ingest_aliases', /array of strings/);
    await rejected('POST', '/v1/customers', { body: { name: 'Acme', ingest_aliases: ['ok', 7] } }, 400, 'ingest_aliases[1]', /non-empty string/);
    await rejected('POST', '/v1/customers', { body: { name: 'Acme', billing_email: 'nope' } }, 400, 'billing_email', /email address/);
    await rejected('POST', '/v1/customers', { body: { name: 'Acme', billing_config: {} } }, 400, 'billing_config', /not a supported field/);
    await rejected('POST', '/v1/customers', { body: ['Acme'] }, 400, 'body', /JSON object/);
  });

  test('an alias taken by another customer is a conflict and leaves no half-created customer', async () => {
    const first = await http(app, 'POST', '/v1/customers', { token: admin, body: { name: 'One', ingest_aliases: ['shared-alias'] } });
    expect(first.status).toBe(200);
    await rejected('POST', '/v1/customers', { body: { name: 'Two', ingest_aliases: ['fresh', 'shared-alias'] } }, 409, undefined, /ingest_aliases/);
  });

  test('unknown ids are 404 naming the field', async () => {
    await rejected('GET', '/v1/customers/6b0c6e34-5c8d-4d5e-9a4f-000000000000', {}, 404, 'customer_id', /customer .* not found/);
    await rejected('GET', '/v1/customers/not-a-uuid', {}, 404, 'customer_id', /not found/);
    await rejected('POST', '/v1/contract-pricing/products/create', { body: { name: 'P', type: 'USAGE', billable_metric_id: '6b0c6e34-5c8d-4d5e-9a4f-000000000000' } }, 404, 'billable_metric_id', /billable metric/);
    await rejected('POST', '/v1/contracts/create', {
      body: { customer_id: '6b0c6e34-5c8d-4d5e-9a4f-000000000000', rate_card_id: '6b0c6e34-5c8d-4d5e-9a4f-000000000001', starting_at: monthStart(0) },
    }, 404, 'customer_id', /customer/);
    await rejected('POST', '/v1/invoices/6b0c6e34-5c8d-4d5e-9a4f-000000000000/approve', { body: { total: 1 } }, 404, 'invoice_id', /closed invoice/);
  });

  test('a malformed id in any UUID-typed field is a 400 naming it, never a 500', async () => {
    const customer = (await http(app, 'POST', '/v1/customers', { token: admin, body: { name: 'Ids Co' } })).json.data.id as string;
    const fixed = (await http(app, 'POST', '/v1/contract-pricing/products/create', { token: admin, body: { name: 'Ids commit', type: 'FIXED' } })).json.data.id as string;
    const card = (await http(app, 'POST', '/v1/contract-pricing/rate-cards/create', { token: admin, body: { name: 'ids card' } })).json.data.id as string;
    const access = { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(1) }] };
    const alertsBefore = await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from alert');
    await rejected('POST', '/v1/alerts/create', { body: { alert_type: 'spend_threshold_reached', name: 'gate', threshold: 10, customer_id: customer, gate_access: true, gate_product_ids: [fixed, 'not-a-uuid'] } }, 400, 'gate_product_ids[1]', /must be a UUID, got "not-a-uuid"/);
    await rejected('POST', '/v1/alerts/create', { body: { alert_type: 'spend_threshold_reached', name: 'usd', threshold: 10, customer_id: customer, credit_type_id: 'USD' } }, 400, 'credit_type_id', /must be a UUID/);
    expect(await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from alert')).toEqual(alertsBefore);
    await rejected('POST', '/v1/contract-pricing/products/create', { body: { name: 'Bundle', type: 'COMPOSITE', composite_product_ids: ['not-a-uuid'] } }, 400, 'composite_product_ids[0]', /must be a UUID/);
    await rejected('POST', '/v1/contracts/customerCredits/create', { body: { customer_id: customer, product_id: fixed, access_schedule: access, priority: 1, applicable_contract_ids: ['not-a-uuid'] } }, 400, 'applicable_contract_ids[0]', /must be a UUID/);
    await rejected('POST', '/v1/contracts/create', { body: { customer_id: customer, rate_card_id: card, starting_at: monthStart(0), credits: [{ product_id: fixed, access_schedule: access, applicable_product_ids: ['not-a-uuid'] }] } }, 400, 'credits[0].applicable_product_ids[0]', /must be a UUID/);
    await rejected('POST', '/v1/contracts/customerBalances/getNetBalance', { body: { customer_id: customer, filters: [{ ids: ['not-a-uuid'] }] } }, 400, 'filters[0].ids[0]', /must be a UUID/);
    await rejected('GET', `/v1/customers/${customer}/invoices?contract_id=not-a-uuid`, {}, 400, 'contract_id', /must be a UUID/);
    await rejected('GET', `/v1/accrue/console/invoices/${'-'.repeat(36)}/usage`, {}, 400, 'invoice_id', /UUID/);
  });

  test('every amount, price and threshold is held to one bound (20 digits before the point, 20 after): a 400 naming the field', async () => {
    const customer = (await http(app, 'POST', '/v1/customers', { token: admin, body: { name: 'Bounds Co' } })).json.data.id as string;
    const fixed = (await http(app, 'POST', '/v1/contract-pricing/products/create', { token: admin, body: { name: 'Bounds commit', type: 'FIXED' } })).json.data.id as string;
    const card = (await http(app, 'POST', '/v1/contract-pricing/rate-cards/create', { token: admin, body: { name: 'bounds card' } })).json.data.id as string;
    const alert = { alert_type: 'spend_threshold_reached', name: 'huge', customer_id: customer };
    const alertsBefore = await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from alert');
    await rejected('POST', '/v1/alerts/create', { body: { ...alert, threshold: 1e100 } }, 400, 'threshold', /at most 20 digits before the decimal point.*got 1e\+100/);
    await rejected('POST', '/v1/alerts/create', { rawBody: JSON.stringify({ ...alert, threshold: 0 }).replace('"threshold":0', '"threshold":1e400') }, 400, 'threshold', /at most 20 digits before/);
    await rejected('POST', '/v1/alerts/create', { body: { ...alert, threshold: '0.000000000000000000001' } }, 400, 'threshold', /at most 20 digits after the decimal point/);
    expect(await orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from alert')).toEqual(alertsBefore);
    const access = (amount: unknown) => ({ schedule_items: [{ amount, starting_at: monthStart(0), ending_before: monthStart(1) }] });
    const contract = { customer_id: customer, rate_card_id: card, starting_at: monthStart(0) };
    await rejected('POST', '/v1/contracts/create', { body: { ...contract, commits: [{ type: 'PREPAID', product_id: fixed, access_schedule: access('100000000000000000000') }] } }, 400, 'commits[0].access_schedule.schedule_items[0].amount', /at most 20 digits before/);
    await rejected('POST', '/v1/contracts/create', { body: { ...contract, prepaid_balance_threshold_configuration: { commit: { product_id: fixed }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: 500, recharge_to_amount: 1e30 } } }, 400, 'prepaid_balance_threshold_configuration.recharge_to_amount', /at most 20 digits before/);
    await rejected('POST', '/v1/contracts/customerCredits/create', { rawBody: `{"customer_id":"${customer}","product_id":"${fixed}","priority":1,"access_schedule":{"schedule_items":[{"amount":1e400,"starting_at":"${monthStart(0)}","ending_before":"${monthStart(1)}"}]}}` }, 400, 'access_schedule.schedule_items[0].amount', /at most 20 digits before/);
    const metric = (await http(app, 'POST', '/v1/billable-metrics/create', { token: admin, body: { name: 'bounds calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['bounds'] } } })).json.data.id as string;
    const usage = (await http(app, 'POST', '/v1/contract-pricing/products/create', { token: admin, body: { name: 'Bounds usage', type: 'USAGE', billable_metric_id: metric } })).json.data.id as string;
    const rate = { rate_card_id: card, product_id: usage, entitled: true, rate_type: 'FLAT', starting_at: monthStart(0) };
    await rejected('POST', '/v1/contract-pricing/rate-cards/addRate', { body: { ...rate, price: '0.123456789012345678912' } }, 400, 'price', /at most 20 digits after/);
    // At the bound: a price with 20 places, an amount of 20 digits.
    const ok = await http(app, 'POST', '/v1/contract-pricing/rate-cards/addRate', { token: admin, body: { ...rate, price: '0.12345678901234567891' } });
    expect(ok.status).toBe(200);
    const big = await http(app, 'POST', '/v1/alerts/create', { token: admin, body: { ...alert, threshold: '99999999999999999999' } });
    expect(big.status).toBe(200);
  });

  test('metrics, rates and contracts validate every field', async () => {
    await rejected('POST', '/v1/billable-metrics/create', { body: { name: 'm', aggregation_type: 'SUM' } }, 400, 'aggregation_key', /required for SUM/);
    await rejected('POST', '/v1/billable-metrics/create', { body: { name: 'm', aggregation_type: 'AVERAGE' } }, 400, 'aggregation_type', /one of COUNT, SUM/);
    await rejected('POST', '/v1/billable-metrics/create', { body: { name: 'm', sql: 'select 1' } }, 400, 'sql', /not supported/);
    await rejected('POST', '/v1/billable-metrics/create', { body: { name: 'm', aggregation_type: 'COUNT', property_filters: [{ name: 'x', in_values: [] }] } }, 400, 'property_filters[0].in_values', /must not be empty/);
    await rejected('POST', '/v1/contract-pricing/rate-cards/addRate', {
      body: { rate_card_id: 'x', product_id: 'y', entitled: true, rate_type: 'FLAT', price: 1, starting_at: monthStart(0) },
    }, 400, 'rate_card_id', /UUID/);
    const customer = await http(app, 'POST', '/v1/customers', { token: admin, body: { name: 'Contracts Co' } });
    const card = await http(app, 'POST', '/v1/contract-pricing/rate-cards/create', { token: admin, body: { name: 'card' } });
    const base = { customer_id: customer.json.data.id, rate_card_id: card.json.data.id, starting_at: monthStart(0) };
    await rejected('POST', '/v1/contracts/create', { body: { ...base, starting_at: 'yesterday' } }, 400, 'starting_at', /RFC 3339/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, ending_before: monthStart(-1) } }, 400, 'ending_before', /after starting_at/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, usage_statement_schedule: { frequency: 'DAILY' } } }, 400, 'usage_statement_schedule.frequency', /MONTHLY/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, usage_statement_schedule: { frequency: 'MONTHLY', day: 'CUSTOM_DATE' } } }, 400, 'usage_statement_schedule.billing_anchor_date', /required/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, subscriptions: [] } }, 400, 'subscriptions', /not a supported field/);
    const fixed = await http(app, 'POST', '/v1/contract-pricing/products/create', { token: admin, body: { name: 'Commit', type: 'FIXED' } });
    const access = { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(1) }] };
    await rejected('POST', '/v1/contracts/create', { body: { ...base, commits: [{ type: 'SOMETIMES', product_id: fixed.json.data.id, access_schedule: access }] } }, 400, 'commits[0].type', /PREPAID, POSTPAID/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, commits: [{ type: 'POSTPAID', product_id: fixed.json.data.id, access_schedule: access }] } }, 400, 'commits[0].invoice_schedule', /exactly one invoice schedule item/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, credits: [{ product_id: fixed.json.data.id, access_schedule: { schedule_items: [{ amount: 10.5, starting_at: monthStart(0), ending_before: monthStart(1) }] } }] } }, 400, 'credits[0].access_schedule.schedule_items[0].amount', /whole number of cents/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, overrides: [{ starting_at: monthStart(0), type: 'MULTIPLIER', multiplier: 0.5 }] } }, 400, 'overrides[0].product_id', /needs product_id/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, overrides: [{ starting_at: monthStart(0), type: 'OVERWRITE', product_id: fixed.json.data.id, overwrite_rate: { rate_type: 'TIERED', tiers: [{ price: 1 }, { price: 2 }] } }] } }, 400, 'overrides[0].overwrite_rate.tiers[0].size', /every tier but the last/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, scheduled_charges: [{ product_id: fixed.json.data.id, schedule: { schedule_items: [{ timestamp: monthStart(0), amount: 5, quantity: 2 }] } }] } }, 400, 'scheduled_charges[0].schedule.schedule_items[0].amount', /not both/);
    // Nothing of those refused contracts was written.
    const listed = await http(app, 'POST', '/v1/contracts/list', { token: admin, body: { customer_id: customer.json.data.id } });
    expect(listed.json.data).toEqual([]);
  });

  test('ingest: one bad event rejects the whole batch, listing each bad index', async () => {
    const good = (i: number) => ({ transaction_id: `bad-batch-${i}`, customer_id: 'c1', event_type: 'api_call', timestamp: '2026-01-01T00:00:00Z', properties: { n: 1 } });
    const res = await rejected('POST', '/v1/ingest', {
      body: [good(1), { ...good(2), timestamp: '01/02/2026' }, good(3), { ...good(4), customer_id: 12 }, { ...good(5), colour: 'red' }],
    }, 400, '[1].timestamp', /3 of 5 events are invalid; nothing was stored/);
    expect(res.json.details).toEqual([
      { index: 1, field: '[1].timestamp', message: expect.stringMatching(/RFC 3339/) },
      { index: 3, field: '[3].customer_id', message: expect.stringMatching(/must be a string/) },
      { index: 4, field: '[4].colour', message: expect.stringMatching(/not a supported field/) },
    ]);
    await rejected('POST', '/v1/ingest', { body: [] }, 400, 'body', /1 to 100 events/);
    await rejected('POST', '/v1/ingest', { body: Array.from({ length: 101 }, (_, i) => good(100 + i)) }, 400, 'body', /got 101/);
    await rejected('POST', '/v1/ingest', { body: good(1) }, 400, 'body', /JSON array/);
    await rejected('POST', '/v1/ingest', { body: [{ ...good(6), properties: [1, 2] }] }, 400, '[0].properties', /JSON object/);
    await rejected('POST', '/v1/ingest', { rawBody: '[{"transaction_id": ' }, 400, 'body', /malformed JSON/);
  });

  // PostgreSQL's text and jsonb hold no NUL and jsonb no unpaired surrogate: before the check
  // these reached the insert and failed it with a 500, which the SDK retries forever.
  test('NUL characters and unpaired surrogates in any string field are a 400 naming the event and field', async () => {
    const good = (i: number) => ({ transaction_id: `nul-${i}`, customer_id: 'c1', event_type: 'api_call', timestamp: '2026-01-01T00:00:00Z', properties: { n: 1 } });
    const res = await rejected('POST', '/v1/ingest', {
      body: [good(1), { ...good(2), properties: { region: 'eu\u0000west' } }, good(3), { ...good(4), event_type: 'call\ud800' },
        { ...good(5), properties: { nested: { ['k\u0000']: 1 } } }, { ...good(6), transaction_id: 'nul-\udc00-6' }],
    }, 400, '[1].properties.region', /NUL character.*4 strings in all/);
    expect(res.json.details).toEqual([
      { index: 1, field: '[1].properties.region', message: expect.stringMatching(/NUL/) },
      { index: 3, field: '[3].event_type', message: expect.stringMatching(/unpaired UTF-16 surrogate/) },
      { index: 4, field: '[4].properties.nested.k\u0000', message: expect.stringMatching(/the key.*NUL/) },
      { index: 5, field: '[5].transaction_id', message: expect.stringMatching(/surrogate/) },
    ]);
    // A surrogate pair (an emoji) is a well-formed string and is stored as sent.
    const emoji = await http(app, 'POST', '/v1/ingest', { token: admin, body: [{ ...good(7), properties: { mood: '\u{1F600}' } }] });
    expect(emoji.status).toBe(200);
    const stored = await orm.em.fork().execute<{ mood: string }[]>(`select properties->>'mood' as mood from event where transaction_id = 'nul-7'`);
    expect(stored).toEqual([{ mood: '\u{1F600}' }]);

    await rejected('POST', '/v1/customers', { body: { name: 'Acme\u0000' } }, 400, 'name', /NUL character/);
    await rejected('POST', '/v1/customers', { body: { name: 'Acme \ud83d' } }, 400, 'name', /unpaired UTF-16 surrogate/);
    await rejected('POST', '/v1/customers', { body: { name: 'Acme', ingest_aliases: ['ok', 'a\u0000'] } }, 400, 'ingest_aliases[1]', /NUL/);
    await rejected('POST', '/v1/billable-metrics/create', { body: { name: 'calls\u0000', aggregation_type: 'COUNT' } }, 400, 'name', /NUL/);
    await rejected('POST', '/v1/billable-metrics/create', { body: { name: 'calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['\udfff'] } } }, 400, 'event_type_filter.in_values[0]', /surrogate/);
    await rejected('GET', '/v1/customers?ingest_alias=a%00b', {}, 400, 'ingest_alias', /NUL/);
  });

  test('a page token or a path that does not decode is a 400, not a 500', async () => {
    const token = Buffer.from('2026-01-01T00:00:00.000Z|not-a-uuid').toString('base64url');
    await rejected('GET', `/v1/customers?next_page=${token}`, {}, 400, 'next_page', /not a page token/);
    await rejected('GET', `/v1/billable-metrics?next_page=${token}`, {}, 400, 'next_page', /not a page token/);
    await rejected('GET', '/v1/billable-metrics/%ZZ', {}, 400, 'path', /not URL-encoded correctly/);
  });

  test('impossible calendar dates and times are refused, not rolled over', async () => {
    const customer = await http(app, 'POST', '/v1/customers', { token: admin, body: { name: 'Dates Co' } });
    const card = await http(app, 'POST', '/v1/contract-pricing/rate-cards/create', { token: admin, body: { name: 'dates card' } });
    const base = { customer_id: customer.json.data.id, rate_card_id: card.json.data.id, starting_at: '2026-11-01T00:00:00Z' };
    // Date.parse reads 2026-11-31 as 1 December.
    await rejected('POST', '/v1/contracts/create', { body: { ...base, starting_at: '2026-11-31T00:00:00Z' } }, 400, 'starting_at', /2026-11 has 30 days/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, ending_before: '2027-02-29T00:00:00Z' } }, 400, 'ending_before', /2027-02 has 28 days/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, starting_at: '2026-11-01T24:00:00Z' } }, 400, 'starting_at', /time of day does not exist/);
    await rejected('POST', '/v1/contracts/create', { body: { ...base, starting_at: '2026-13-01T00:00:00Z' } }, 400, 'starting_at', /RFC 3339|no month 13/);
    const ev = { transaction_id: 'date-1', customer_id: 'c1', event_type: 'e', timestamp: '2026-04-31T10:00:00Z' };
    await rejected('POST', '/v1/ingest', { body: [ev] }, 400, '[0].timestamp', /2026-04 has 30 days/);
    await rejected('POST', '/v1/ingest', { body: [{ ...ev, timestamp: '2026-04-01T10:00:00+24:00' }] }, 400, '[0].timestamp', /UTC offset/);
    // A real leap day passes the calendar check (and is then refused only for being in the future).
    await rejected('POST', '/v1/ingest', { body: [{ ...ev, timestamp: '2028-02-29T10:00:00Z' }] }, 400, '[0].timestamp', /more than 24 hours in the future/);
  });

  /** Sends raw bytes (already encoded) to /v1/ingest and returns status, JSON and elapsed ms. */
  async function rawIngest(body: Buffer | string, encoding?: string) {
    const before = await counts();
    const started = Date.now();
    const res = await fetch(`${app.baseURL}/v1/ingest`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', ...(encoding ? { 'content-encoding': encoding } : {}) },
      body,
    });
    const text = await res.text();
    const ms = Date.now() - started;
    expect(await counts()).toEqual(before);
    return { status: res.status, json: JSON.parse(text) as { field?: string; message: string }, ms };
  }

  test('request limits: corrupt gzip is a 400, a gzip bomb and an oversized body are 413, deep nesting names its limit', async () => {
    const batch = JSON.stringify([{ transaction_id: 'gz-1', customer_id: 'c1', event_type: 'e', timestamp: '2026-01-01T00:00:00Z' }]);
    const corrupt = await rawIngest(Buffer.from('this is not gzip at all'), 'gzip');
    expect([corrupt.status, corrupt.json.field, corrupt.json.message]).toEqual([400, 'body', expect.stringMatching(/not valid gzip data/)]);
    const truncated = await rawIngest(gzipSync(batch).subarray(0, 20), 'gzip');
    expect([truncated.status, truncated.json.field]).toEqual([400, 'body']);
    const brotli = await rawIngest(Buffer.from('this is not brotli either'), 'br');
    expect([brotli.status, brotli.json.field, brotli.json.message]).toEqual([400, 'body', expect.stringMatching(/not valid br data/)]);

    // 64 MB of zeros compress to ~64 KB; the 1 MB limit applies to the inflated bytes.
    const bomb = await rawIngest(gzipSync(Buffer.alloc(64 * 1024 * 1024, 0x20)), 'gzip');
    expect([bomb.status, bomb.json.field, bomb.json.message]).toEqual([413, 'body', expect.stringMatching(/1048576 byte limit/)]);
    expect(bomb.ms).toBeLessThan(5000);
    const big = await rawIngest(JSON.stringify([{ transaction_id: 'big', customer_id: 'c1', event_type: 'e', timestamp: '2026-01-01T00:00:00Z', properties: { blob: 'x'.repeat(1_100_000) } }]));
    expect([big.status, big.json.field]).toEqual([413, 'body']);

    // Deep enough to overflow any recursive walk of the parsed body, and just past the limit.
    const deep = await rawIngest('['.repeat(200_000) + ']'.repeat(200_000));
    expect([deep.status, deep.json.field, deep.json.message]).toEqual([400, 'body', expect.stringMatching(new RegExp(`^body: is nested deeper than ${MAX_JSON_DEPTH} levels`))]);
    // The same with a number the exact-number reviver must keep (its recursion overflows first).
    const deepExact = await rawIngest('['.repeat(200_000) + '1.50' + ']'.repeat(200_000));
    expect([deepExact.status, deepExact.json.field, deepExact.json.message]).toEqual([400, 'body', `body: is nested deeper than ${MAX_JSON_DEPTH} levels`]);
    const nested = (n: number): unknown => (n === 0 ? 1 : { a: nested(n - 1) });
    const past = await rawIngest(JSON.stringify([{ transaction_id: 'deep', customer_id: 'c1', event_type: 'e', timestamp: '2026-01-01T00:00:00Z', properties: nested(MAX_JSON_DEPTH) }]));
    expect([past.status, past.json.field, past.json.message]).toEqual([400, 'body', expect.stringMatching(new RegExp(`nested deeper than ${MAX_JSON_DEPTH} levels`))]);
    // At the limit (array, event, then properties 30 levels deep: 32 in all) is accepted.
    const within = await http(app, 'POST', '/v1/ingest', { token: admin, body: [{ transaction_id: 'deep-ok', customer_id: 'c1', event_type: 'e', timestamp: new Date().toISOString(), properties: nested(MAX_JSON_DEPTH - 2) }] });
    expect(within.status).toBe(200);
  });

  test('JSON bodies are UTF-8: any other declared charset is a 415 naming it, and nothing is written', async () => {
    const send = async (path: string, contentType: string, body: Buffer) => {
      const before = await counts();
      const res = await fetch(`${app.baseURL}${path}`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': contentType }, body });
      const json = JSON.parse(await res.text()) as { field?: string; message: string };
      expect(await counts()).toEqual(before);
      return { status: res.status, field: json.field, message: json.message };
    };
    const utf16be = (s: string) => Buffer.from(s, 'utf16le').swap16();
    const customer = JSON.stringify({ name: 'Charset Co' });
    const events = JSON.stringify([{ transaction_id: 'charset-1', customer_id: 'c1', event_type: 'e', timestamp: new Date().toISOString() }]);
    // A raw lone surrogate: UTF-16LE bytes JSON.parse would take as a string PostgreSQL cannot store.
    const loneSurrogate = Buffer.concat([Buffer.from('{"name":"Acme ', 'utf16le'), Buffer.from([0x00, 0xd8]), Buffer.from('"}', 'utf16le')]);
    const cases: [string, string, Buffer, string][] = [
      ['/v1/customers', 'application/json; charset=utf-16be', utf16be(customer), 'utf-16be'],
      ['/v1/customers', 'application/json; charset=utf-16le', loneSurrogate, 'utf-16le'],
      ['/v1/customers', 'application/json;charset="UTF-32"', Buffer.from(customer), 'UTF-32'],
      ['/v1/customers', 'application/merge-patch+json; charset=utf-7', Buffer.from(customer), 'utf-7'],
      ['/v1/ingest', 'application/json; charset=utf-16be', utf16be(events), 'utf-16be'],
      ['/v1/ingest', 'application/json; charset=latin1', Buffer.from(events), 'latin1'],
      ['/v1/ingest', 'application/json; charset=utf8', Buffer.from(events), 'utf8'], // not a registered charset name
    ];
    for (const [path, type, body, charset] of cases) {
      expect(await send(path, type, body)).toEqual({ status: 415, field: 'content-type', message: `content-type: charset "${charset}" is not supported: JSON bodies must be UTF-8` });
    }
    // UTF-8, declared or not, is read as before.
    for (const type of ['application/json; charset=utf-8', 'application/json; charset="UTF-8"', 'application/json;charset=Utf-8 ', 'application/json']) {
      const ok = await fetch(`${app.baseURL}/v1/customers`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': type }, body: JSON.stringify({ name: `Charset ${type}` }) });
      expect(ok.status).toBe(200);
    }
  });

  test('events search and customer reads: not for ingest tokens, and duplicates are listed up to a cap', async () => {
    const minted = await http(app, 'POST', '/v1/accrue/tokens', { token: admin, body: { name: 'product server', scope: 'ingest' } });
    const ingestToken = minted.json.data.token as string;
    const ev = { transaction_id: 'dup-capped', customer_id: 'c1', event_type: 'e', timestamp: new Date().toISOString() };
    for (let i = 0; i < MAX_DUPLICATES_SHOWN + 5; i++) {
      expect((await http(app, 'POST', '/v1/ingest', { token: ingestToken, body: [ev, ev] })).status).toBe(200);
    }
    await rejected('POST', '/v1/events/search', { body: { transactionIds: ['dup-capped'] }, token: ingestToken }, 403, undefined, /scope admin or read or finance/);
    // Nor any other customer data: an ingest token lives in product servers.
    const customer = await http(app, 'POST', '/v1/customers', { token: admin, body: { name: 'Private Co' } });
    await rejected('GET', `/v1/customers/${customer.json.data.id}`, { token: ingestToken }, 403, undefined, /scope admin or read or finance/);
    const found = await http(app, 'POST', '/v1/events/search', { token: admin, body: { transactionIds: ['dup-capped'] } });
    expect(found.status).toBe(200);
    expect((found.json as { is_duplicate: boolean }[]).map((e) => e.is_duplicate)).toEqual([false, ...Array(MAX_DUPLICATES_SHOWN).fill(true)]);
  });

  test('Stripe is off here (no STRIPE_SECRET_KEY): billing configs for Stripe are a 409, other providers a 400, webhooks a 409', async () => {
    const customer = await http(app, 'POST', '/v1/customers', { token: admin, body: { name: 'Billing Co' } });
    const id = customer.json.data.id as string;
    await rejected('POST', `/v1/customers/${id}/billing-config/stripe`, { body: { billing_provider_customer_id: 'cus_123' } }, 409, undefined, /STRIPE_SECRET_KEY is not set/);
    await rejected('POST', `/v1/customers/${id}/billing-config/netsuite`, { body: { billing_provider_customer_id: 'x' } }, 400, 'billing_provider_type', /netsuite is not supported by Accrue/);
    await rejected('POST', `/v1/customers/${id}/billing-config/paypal`, { body: { billing_provider_customer_id: 'x' } }, 400, 'billing_provider_type', /must be one of/);
    await rejected('GET', `/v1/customers/${id}/billing-config/stripe`, {}, 404, 'customer_id', /billing config/);
    const hook = await http(app, 'POST', '/v1/accrue/webhooks/stripe', { rawBody: '{}' });
    expect([hook.status, hook.json.message]).toEqual([409, expect.stringMatching(/STRIPE_WEBHOOK_SECRET is not set/)]);
    // HubSpot is off too (no HUBSPOT_ACCESS_TOKEN): its webhook is a 409, nothing is verified or started.
    const crm = await http(app, 'POST', '/v1/accrue/webhooks/hubspot', { rawBody: '[]' });
    expect([crm.status, crm.json.message]).toEqual([409, expect.stringMatching(/HUBSPOT_ACCESS_TOKEN and HUBSPOT_CLIENT_SECRET must both be set/)]);
    expect(await orm.em.fork().execute('select count(*)::int as n from customer_billing_config')).toEqual([{ n: 0 }]);
    // What Stripe would charge is refused up front alike: a gated commit, an auto-recharge, a spend threshold.
    const card = await http(app, 'POST', '/v1/contract-pricing/rate-cards/create', { token: admin, body: { name: 'card' } });
    const fixed = await http(app, 'POST', '/v1/contract-pricing/products/create', { token: admin, body: { name: 'Top-up', type: 'FIXED' } });
    const base = { customer_id: id, rate_card_id: card.json.data.id, starting_at: monthStart(0) };
    const gate = { payment_gate_type: 'STRIPE' };
    const commit = { product_id: fixed.json.data.id };
    await rejected('POST', '/v1/contracts/create', {
      body: { ...base, commits: [{ type: 'PREPAID', product_id: fixed.json.data.id, payment_gate_config: gate, access_schedule: { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(1) }] } }] },
    }, 409, undefined, /^commits\[0\]\.payment_gate_config\.payment_gate_type: STRIPE is off .*STRIPE_SECRET_KEY is not set/);
    await rejected('POST', '/v1/contracts/create', {
      body: { ...base, prepaid_balance_threshold_configuration: { commit, is_enabled: true, payment_gate_config: gate, threshold_amount: 500, recharge_to_amount: 2000 } },
    }, 409, undefined, /^prepaid_balance_threshold_configuration\.payment_gate_config\.payment_gate_type: STRIPE is off .*STRIPE_SECRET_KEY is not set/);
    await rejected('POST', '/v1/contracts/create', {
      body: { ...base, spend_threshold_configuration: { commit, is_enabled: true, payment_gate_config: gate, threshold_amount: 500 } },
    }, 409, undefined, /^spend_threshold_configuration\.payment_gate_config\.payment_gate_type: STRIPE is off .*STRIPE_SECRET_KEY is not set/);
  });
});
