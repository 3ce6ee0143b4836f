import Metronome from '@metronome/sdk';
import { Client, Connection } from '@temporalio/client';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Contract, Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { contractStateQuery, type contractWorkflow } from '../workflows/contract.js';
import { contractWorkflowId } from '../workflows/search-attributes.js';
import { createTestDatabase, eventually, mailTo, monthStart, startApp, testStack, uniqueName, type RunningApp } from './stack.js';

const GRACE_MS = 15_000;

/**
 * A contract created today that starts last month, as a new user tries it: the contract first,
 * then last month's events. The past period's grace counts from the contract's creation, so those
 * events are on its invoice — under approval policy NEVER, finalized and emailed with them.
 */
describe('a backdated contract waits the grace period from its creation before closing its past periods', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  let temporal: Client;
  let connection: Connection;

  beforeAll(async () => {
    const db = await createTestDatabase('backdated');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, gracePeriod: `${GRACE_MS / 1000}s`, env: { ACCRUE_APPROVAL_POLICY: 'NEVER' } });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
    connection = await Connection.connect({ address: testStack().temporalAddress });
    temporal = new Client({ connection });
  });
  afterAll(async () => {
    await app?.stop();
    await connection?.close();
    await orm?.close();
  });

  test('events for last month ingested after the contract was created are on last month\'s invoice', async () => {
    const billingEmail = `${uniqueName('ap')}@backdated.test`;
    const alias = uniqueName('acme');
    const customer = await client.v1.customers.create({ name: 'Backdated Co', ingest_aliases: [alias], billing_email: billingEmail } as Metronome.V1.CustomerCreateParams);
    const metric = await client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'SUM', aggregation_key: 'n', event_type_filter: { in_values: ['call'] } });
    const product = await client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const rateCard = await client.v1.contracts.rateCards.create({ name: 'Standard' });
    await client.v1.contracts.rateCards.rates.add({ rate_card_id: rateCard.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 3, starting_at: monthStart(-3) });
    const [p0, p1] = [monthStart(-1), monthStart(0)];
    // The worker is up and running contract workflows (it bundles the workflow code at start).
    const other = await client.v1.customers.create({ name: 'Warm-up Co' });
    const warm = await client.v1.contracts.create({ customer_id: other.data.id, rate_card_id: rateCard.data.id, starting_at: monthStart(1) });
    await eventually('a workflow to run', async () => temporal.workflow.getHandle<typeof contractWorkflow>(contractWorkflowId(warm.data.id)).query(contractStateQuery), 120_000);

    const contract = await client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: rateCard.data.id, starting_at: p0, usage_statement_schedule: { frequency: 'MONTHLY', day: 'FIRST_OF_MONTH' },
    });
    const contractId = contract.data.id;
    const createdAt = (await orm.em.fork().findOneOrFail(Contract, { id: contractId })).createdAt.getTime();
    const invoiceId = invoiceIdFor(contractId, p0);
    const workflow = temporal.workflow.getHandle<typeof contractWorkflow>(contractWorkflowId(contractId));

    // Whichever comes first: last month frozen at once (what a grace counted from the period's end
    // does), or its close planned in the future. Only then are last month's events sent.
    const planned = await eventually('last month frozen, or its close planned ahead', async () => {
      if (await orm.em.fork().findOne(Invoice, { id: invoiceId })) return 'frozen';
      const s = await workflow.query(contractStateQuery);
      if (s.nextPeriodIndex === 0 && s.nextCloseAt && Date.parse(s.nextCloseAt) > Date.now()) return s.nextCloseAt;
      throw new Error(`not yet: ${JSON.stringify(s)}`);
    });
    expect(planned).toBe(new Date(createdAt + GRACE_MS).toISOString());

    await client.v1.usage.ingest({ usage: [{ transaction_id: `${alias}-late-1`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.parse(p0) + 5 * 3_600_000).toISOString(), properties: { n: 100 } }] });

    const finalized = await eventually('last month finalized', async () => {
      const inv = await client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: invoiceId });
      if (inv.data.status !== 'FINALIZED') throw new Error(`status ${inv.data.status}`);
      return inv.data;
    }, 60_000);
    expect([finalized.start_timestamp, finalized.end_timestamp, finalized.total]).toEqual([p0, p1, 300]);
    expect(finalized.line_items).toEqual([expect.objectContaining({ name: 'Calls', quantity: 100, total: 300 })]);
    const frozenAt = (await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId })).frozenAt!.getTime();
    expect(frozenAt).toBeGreaterThanOrEqual(createdAt + GRACE_MS);
    const mail = await eventually('the invoice email', async () => {
      const m = await mailTo(billingEmail);
      if (!m.length) throw new Error('no mail yet');
      return m;
    });
    expect(mail.map((m) => m.subject)).toEqual([`Your invoice for ${p0.slice(0, 10)} to ${p1.slice(0, 10)}: $3.00`]);
  });
});
