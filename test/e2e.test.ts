import Metronome from '@metronome/sdk';
import { Client, Connection } from '@temporalio/client';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, eventually, http, mailTo, monthStart, startApp, testStack, uniqueName, type RunningApp } from './stack.js';

/**
 * The thin slice end to end, through HTTP with the official Metronome SDK as the client:
 * customer → metric → product → rate card + rate → ingest (with duplicates) → backdated
 * contract → its past periods close → finance approves / rejects → the email arrives at the
 * real SMTP server with the right total → the invoice reads FINALIZED.
 */
describe('end to end: one contract billed through every layer', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  let temporal: Client;
  let connection: Connection;

  beforeAll(async () => {
    const db = await createTestDatabase('e2e');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, gracePeriod: '1s' });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
    connection = await Connection.connect({ address: testStack().temporalAddress });
    temporal = new Client({ connection });
  });

  afterAll(async () => {
    await app?.stop();
    await connection?.close();
    await orm?.close();
  });

  test('bills a backdated contract, approves it and emails the customer exactly the total', async () => {
    const billingEmail = `${uniqueName('ap')}@customer.test`;
    const alias = uniqueName('acme');
    const customer = await client.v1.customers.create({
      name: 'Acme AI', ingest_aliases: [alias], billing_email: billingEmail,
    } as Metronome.V1.CustomerCreateParams);
    expect(customer.data.ingest_aliases).toEqual([alias]);
    const fetched = await client.v1.customers.retrieve({ customer_id: customer.data.id });
    expect(fetched.data.name).toBe('Acme AI');

    const metric = await client.v1.billableMetrics.create({
      name: 'LLM tokens', aggregation_type: 'SUM', aggregation_key: 'tokens',
      event_type_filter: { in_values: ['llm_call'] },
      property_filters: [{ name: 'model', exists: true }],
    });
    const product = await client.v1.contracts.products.create({ name: 'Tokens', type: 'USAGE', billable_metric_id: metric.data.id });
    const rateCard = await client.v1.contracts.rateCards.create({ name: 'Standard' });
    const p0 = monthStart(-2);
    const p1 = monthStart(-1);
    const p2 = monthStart(0);
    // 2.5 cents a token, from before the contract starts.
    await client.v1.contracts.rateCards.rates.add({
      rate_card_id: rateCard.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT',
      price: 2.5, starting_at: monthStart(-3),
    });

    const at = (base: string, hours: number) => new Date(Date.parse(base) + hours * 3_600_000).toISOString();
    const ev = (id: string, ts: string, tokens: number | string, extra: Record<string, unknown> = {}) => ({
      transaction_id: `${alias}-${id}`, customer_id: alias, event_type: 'llm_call', timestamp: ts,
      properties: { tokens, model: 'large', ...extra },
    });
    // Period 0: 1000 + 1 tokens = 1001 → 2502.5 cents → 2503 after the one rounding.
    await client.v1.usage.ingest({ usage: [ev('a', at(p0, 5), 1000), ev('b', at(p0, 30), '1'), ev('a', at(p0, 5), 1000)] });
    await client.v1.usage.ingest({
      usage: [
        ev('a', at(p0, 5), 1000), // a retry of an earlier batch: counted once
        { ...ev('x', at(p0, 6), 500), event_type: 'embedding' }, // filtered out by event type
        { ...ev('y', at(p0, 7), 700), properties: { tokens: 700 } }, // no model: filtered out
        ev('c', at(p1, 1), 40), // period 1: 40 tokens → 100 cents
      ],
    });
    // Current period, by the Accrue id instead of the alias.
    await client.v1.usage.ingest({ usage: [{ ...ev('d', at(p2, 0.5), 8), customer_id: customer.data.id }] });

    const contract = await client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: rateCard.data.id, starting_at: p0,
      usage_statement_schedule: { frequency: 'MONTHLY', day: 'FIRST_OF_MONTH' },
    });

    // The contract workflow runs, visible in Temporal with its search attributes.
    const description = await temporal.workflow.getHandle(`contract/${contract.data.id}`).describe();
    expect(description.status.name).toBe('RUNNING');
    expect(description.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value])).toEqual(
      expect.arrayContaining([['ContractId', contract.data.id], ['CustomerId', customer.data.id]]),
    );

    // Both past periods close after the 1 s grace period and wait for approval.
    const closed = await eventually('two past periods to be frozen', async () => {
      const page = await client.v1.customers.invoices.list({ customer_id: customer.data.id });
      const frozen = page.data.filter((i) => (i as unknown as { approval_status: string }).approval_status === 'PENDING_APPROVAL');
      if (frozen.length !== 2) throw new Error(`${frozen.length} frozen so far`);
      return page.data;
    });
    expect(closed.map((i) => [i.start_timestamp, i.end_timestamp, i.status, i.total])).toEqual([
      [p0, p1, 'DRAFT', 2503],
      [p1, p2, 'DRAFT', 100],
      [p2, monthStart(1), 'DRAFT', 20],
    ]);
    const [inv0, inv1, current] = closed as [Metronome.V1.Customers.Invoice, Metronome.V1.Customers.Invoice, Metronome.V1.Customers.Invoice];
    expect(inv0.line_items).toEqual([expect.objectContaining({ name: 'Tokens', product_id: product.data.id, quantity: 1001, unit_price: 2.5, total: 2503 })]);
    expect((current as unknown as { approval_status: string }).approval_status).toBe('OPEN');

    // Approving an open period is refused; approving a closed one finalizes it.
    expect((await http(app, 'POST', `/v1/invoices/${current.id}/approve`, { token: app.adminToken, body: { total: 20 } })).status).toBe(404);
    // The approval names the total it approves: required, and refused when it is not the invoice's.
    const noTotal = await http(app, 'POST', `/v1/invoices/${inv0.id}/approve`, { token: app.adminToken, body: {} });
    expect([noTotal.status, noTotal.json.field]).toEqual([400, 'total']);
    expect((await http(app, 'POST', `/v1/invoices/${inv0.id}/approve`, { token: app.adminToken, body: { total: 2502 } })).status).toBe(409);
    const approved = await http(app, 'POST', `/v1/invoices/${inv0.id}/approve`, { token: app.adminToken, body: { approved_by: 'finance@vendor.test', total: 2503 } });
    expect(approved.status).toBe(200);
    expect(approved.json.data).toMatchObject({ id: inv0.id, status: 'FINALIZED', total: 2503, approval_status: 'APPROVED' });

    const mail = await eventually('the invoice email', async () => {
      const m = await mailTo(billingEmail);
      if (m.length < 1) throw new Error('no mail yet');
      return m;
    });
    expect(mail).toHaveLength(1);
    expect(mail[0]!.subject).toContain('$25.03');
    expect(mail[0]!.text).toContain('Invoice total in cents: 2503');
    expect(mail[0]!.messageId).toBe(`<invoice-${inv0.id}@accrue.local>`);

    const final0 = await client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: inv0.id });
    expect(final0.data.status).toBe('FINALIZED');
    expect(final0.data.total).toBe(2503);
    // Approving twice is a clear conflict, not a second email.
    expect((await http(app, 'POST', `/v1/invoices/${inv0.id}/approve`, { token: app.adminToken, body: { total: 2503 } })).status).toBe(409);

    // Finance rejects period 1 with a reason: it is re-frozen at once (no change yet: 100). Late
    // usage arrives; approving the 100 finance saw is refused, because the approval re-freezes it
    // and the total is now 105 — shown on the pending invoice; approving 105 finalizes it.
    const rejected = await http(app, 'POST', `/v1/invoices/${inv1.id}/reject`, { token: app.adminToken, body: { reason: 'usage for the 3rd is missing' } });
    expect(rejected.status).toBe(200);
    expect(rejected.json.data).toMatchObject({ status: 'DRAFT', approval_status: 'REJECTED', rejection_reason: 'usage for the 3rd is missing', total: 100 });
    await client.v1.usage.ingest({ usage: [ev('late', at(p1, 50), 2)] });
    const stale = await http(app, 'POST', `/v1/invoices/${inv1.id}/approve`, { token: app.adminToken, body: { total: 100 } });
    expect([stale.status, stale.json.message]).toEqual([409, expect.stringContaining('now 105')]);
    const shown = await client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: inv1.id });
    expect([shown.data.status, shown.data.total]).toEqual(['DRAFT', 105]);
    const approved1 = await http(app, 'POST', `/v1/invoices/${inv1.id}/approve`, { token: app.adminToken, body: { total: 105 } });
    expect(approved1.status).toBe(200);
    expect(approved1.json.data).toMatchObject({ status: 'FINALIZED', total: 105 });
    await eventually('the second invoice email', async () => {
      const m = await mailTo(billingEmail);
      if (m.length < 2) throw new Error('no second mail yet');
    });
    const subjects = (await mailTo(billingEmail)).map((m) => m.subject);
    expect(subjects).toHaveLength(2);
    expect(subjects).toEqual(expect.arrayContaining([`Your invoice for ${p0.slice(0, 10)} to ${p1.slice(0, 10)}: $25.03`, `Your invoice for ${p1.slice(0, 10)} to ${p2.slice(0, 10)}: $1.05`]));

    // The finalized invoice is immutable in the database itself (I3).
    await expect(orm.em.fork().execute(`update invoice set total = 1 where id = '${inv0.id}'`)).rejects.toThrow(/finalized/);
  });
});
