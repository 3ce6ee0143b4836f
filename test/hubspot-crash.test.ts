import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Client, Connection } from '@temporalio/client';
import { startHubSpotFake, type HubSpotFake } from './hubspot/server.js';
import { createTestDatabase, eventually, http, monthStart, startApp, uniqueName, type RunningApp } from './stack.js';

/**
 * A real worker SIGKILLed in the middle of HubSpot work — right after the deal's contract was
 * written (before the deal is linked), right after HubSpot took a property update (before Accrue
 * recorded it), right after HubSpot created the owner's task and a deal's note (before their ids
 * were recorded): the restarted worker ends in the same state as an undisturbed one — one
 * contract, one task per transition, one note, the company showing the current facts (here under
 * a renamed property, ACCRUE_HUBSPOT_PROPERTIES).
 */
describe('crash: the worker is killed mid-sync with HubSpot', () => {
  const dir = mkdtempSync(join(tmpdir(), 'accrue-failpoints-'));
  let fake: HubSpotFake;
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  let connection: Connection;
  let temporal: Client;
  let stopping = false;
  const kills: string[] = [];
  const supervise = (worker: ChildProcess) => {
    worker.once('exit', (_code, signal) => {
      if (stopping || signal !== 'SIGKILL') return;
      kills.push(new Date().toISOString());
      void app.startWorker().then(supervise);
    });
  };

  beforeAll(async () => {
    fake = await startHubSpotFake({ token: 'pat-crash-local', clientSecret: 'hubspot-crash-secret' });
    const db = await createTestDatabase('hubspotcrash');
    orm = db.orm;
    app = await startApp({
      databaseUrl: db.url,
      env: {
        HUBSPOT_ACCESS_TOKEN: fake.token, HUBSPOT_API_BASE: fake.url, HUBSPOT_CLIENT_SECRET: fake.clientSecret,
        // An hour between refreshes: everything below reaches HubSpot because a change was signalled.
        ACCRUE_HUBSPOT_COALESCE: '300ms', ACCRUE_HUBSPOT_SYNC_INTERVAL: '1h', ACCRUE_APPROVAL_POLICY: 'NEVER',
        ACCRUE_HUBSPOT_PROPERTIES: 'lifecycle_state=billing_state',
        ACCRUE_FAILPOINTS: '@crm-contract-created,@crm-pushed,@crm-task-created,@crm-note-created', ACCRUE_FAILPOINT_DIR: dir,
      },
    });
    supervise(app.worker);
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
    connection = await Connection.connect({ address: app.env.TEMPORAL_ADDRESS! });
    temporal = new Client({ connection });
  });
  afterAll(async () => {
    stopping = true;
    await app?.stop();
    await connection?.close();
    await orm?.close();
    await fake?.close();
  });

  const won = (dealId: string) => [{ eventId: 1, subscriptionId: 1, portalId: 1, appId: 1, occurredAt: Date.now(), subscriptionType: 'deal.propertyChange', attemptNumber: 0, objectId: Number(dealId), propertyName: 'dealstage', propertyValue: 'closedwon' }];
  const hook = () => `${app.baseURL}/v1/accrue/webhooks/hubspot`;
  const tasksOn = (dealId: string) => fake.associated('deals', dealId, 'tasks').map((id) => fake.objects.tasks.get(id)!.properties.hs_task_subject);

  test('killed after the contract, after a property update and after a task: one contract, one task per transition, the facts on the company', async () => {
    const metric = await client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const product = await client.v1.contracts.products.create({ name: uniqueName('API calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 50, starting_at: monthStart(-3) });
    const company = fake.create('companies', { name: 'Crashy Corp', accrue_billing_email: 'ap@crashy.example' });
    // Started last month with a $30 commit invoiced at the start, due at once (net 0 days), renewal
    // notice 45 days ahead: it renews soon and is in arrears as soon as last month's invoice is out.
    const deal = fake.create('deals', {
      dealname: 'Crashy deal', dealstage: 'closedwon', hubspot_owner_id: '777', accrue_rate_card: card.data.id, accrue_start_date: monthStart(-1),
      accrue_term_months: '2', accrue_commit_amount: '30', accrue_renewal_notice_days: '45', accrue_net_payment_terms_days: '0',
    });
    fake.associate('deals', deal.id, 'companies', company.id);
    expect((await fake.sendWebhook(hook(), won(deal.id))).status).toBe(200);

    await eventually('arrears and renewal on the company, two tasks', async () => {
      expect(fake.objects.companies.get(company.id)!.properties).toMatchObject({ billing_state: 'ARREARS', accrue_last_invoice_total: '30.00', accrue_last_invoice_status: 'UNPAID' });
      expect(tasksOn(deal.id).sort()).toEqual(['Customer in arrears: an invoice is overdue', 'Renewal coming up: talk to the customer']);
    }, 150_000);
    expect(readdirSync(dir).sort()).toEqual(['_crm-contract-created', '_crm-pushed', '_crm-task-created']);
    expect(kills).toHaveLength(3);
    const contracts = await orm.em.fork().execute<{ id: string; customer_id: string }[]>('select id::text as id, customer_id::text as customer_id from contract where uniqueness_key = ?', [`hubspot-deal-${deal.id}`]);
    expect(contracts).toHaveLength(1);
    expect(fake.properties.companies.has('billing_state')).toBe(true);
    expect(fake.properties.companies.has('accrue_lifecycle_state')).toBe(false);

    // Paid: out of arrears on the company; no new task.
    const invoice = (await client.v1.customers.invoices.list({ customer_id: contracts[0]!.customer_id })).data.find((i) => i.status === 'FINALIZED')!;
    expect((await http(app, 'POST', `/v1/accrue/invoices/${invoice.id}/payments`, { token: app.adminToken, body: { amount: 3000, reference: 'wire' } })).status).toBe(201);
    await eventually('out of arrears', async () => expect(fake.objects.companies.get(company.id)!.properties).toMatchObject({ billing_state: 'RENEWING', accrue_last_invoice_status: 'PAID' }), 60_000);
    await new Promise((r) => setTimeout(r, 3000));
    expect(tasksOn(deal.id)).toHaveLength(2);
  });

  test('killed after HubSpot created the note on a bad deal: one note', async () => {
    const company = fake.create('companies', { name: 'Crashy Two' });
    const deal = fake.create('deals', { dealname: 'Bad deal', dealstage: 'closedwon', accrue_start_date: monthStart(0) });
    fake.associate('deals', deal.id, 'companies', company.id);
    expect((await fake.sendWebhook(hook(), won(deal.id))).status).toBe(200);
    await eventually('failed run', async () => {
      const { status } = await temporal.workflow.getHandle(`crm-deal/${deal.id}`).describe();
      expect(status.name).toBe('FAILED');
    }, 90_000);
    expect(readdirSync(dir)).toContain('_crm-note-created');
    expect(kills).toHaveLength(4);
    const notes = fake.associated('deals', deal.id, 'notes');
    expect(notes).toHaveLength(1);
    expect(fake.objects.notes.get(notes[0]!)!.properties.hs_note_body).toContain('accrue_rate_card: is missing');
  });
});
