import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, http, monthStart, startApp, type RunningApp } from './stack.js';

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
});
