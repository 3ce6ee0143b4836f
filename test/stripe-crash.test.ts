import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, eventually, http, monthStart, startApp, type RunningApp } from './stack.js';
import { billedCustomer, stripeCustomer, stripeEnv, testStripe } from './stripe/fixtures.js';

/**
 * A real worker SIGKILLed right after Stripe answered the invoice's creation (before its id is
 * recorded) and again right after Stripe charged it (before the payment is recorded): the retried
 * activity sends the same idempotency keys, so Stripe holds one invoice and one charge, and the
 * Accrue invoice is paid once.
 */
describe('crash: the worker is killed between Stripe\'s answer and recording it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'accrue-failpoints-'));
  const stripe = testStripe();
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
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
    const db = await createTestDatabase('stripecrash');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, env: stripeEnv({ ACCRUE_FAILPOINTS: '@stripe-invoice-created,@stripe-charged', ACCRUE_FAILPOINT_DIR: dir }) });
    supervise(app.worker);
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    stopping = true;
    await app?.stop();
    await orm?.close();
  });

  test('killed after the Stripe invoice was created and after it was charged: one invoice, one charge, one payment', async () => {
    const c = await billedCustomer(client, 25);
    const stripeCustomerId = await stripeCustomer(stripe, 'pays');
    await client.v1.customers.billingConfig.create({ customer_id: c.customerId, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId, stripe_collection_method: 'charge_automatically' });
    const p0 = monthStart(-1);
    await client.v1.usage.ingest({ usage: [0, 1, 2, 3].map((i) => ({ transaction_id: `${c.alias}-${i}`, customer_id: c.alias, event_type: 'call', timestamp: new Date(Date.parse(p0) + 3_600_000 + i).toISOString() })) });
    await client.v1.contracts.create({ customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: p0, approval_policy: { mode: 'NEVER' } } as unknown as Metronome.V1.ContractCreateParams);
    const inv = await eventually('paid through Stripe after two kills', async () => {
      const found = (await client.v1.customers.invoices.list({ customer_id: c.customerId })).data.find((i) => i.start_timestamp === p0);
      const j = (await http(app, 'GET', `/v1/customers/${c.customerId}/invoices/${found!.id}`, { token: app.adminToken })).json.data;
      expect([j.status, j.external_invoice?.external_status, j.payment_status]).toEqual(['FINALIZED', 'PAID', 'PAID']);
      return j;
    }, 150_000);
    expect(readdirSync(dir).sort()).toEqual(['_stripe-charged', '_stripe-invoice-created']);
    expect(kills).toHaveLength(2);
    const invoices = (await stripe.invoices.list({ customer: stripeCustomerId })).data;
    expect(invoices.map((i) => [i.id, i.total, i.status])).toEqual([[inv.external_invoice.invoice_id, 100, 'paid']]);
    expect((await stripe.invoices.listLineItems(invoices[0]!.id!)).data.map((l) => l.amount)).toEqual([100]);
    expect((await stripe.charges.list({ customer: stripeCustomerId })).data).toHaveLength(1);
    expect(await orm.em.fork().execute('select reference, amount::text as amount from invoice_payment where invoice_id = ?', [inv.id])).toEqual([{ reference: `stripe:${inv.external_invoice.invoice_id}`, amount: '100' }]);
  });
});
