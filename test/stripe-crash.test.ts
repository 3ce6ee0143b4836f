import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, eventually, http, mailTo, monthStart, startApp, uniqueName, type RunningApp } from './stack.js';
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
    app = await startApp({ databaseUrl: db.url, env: stripeEnv({ ACCRUE_FAILPOINTS: '@stripe-invoice-created,@stripe-charged,@recharge-charged,@recharge-invoiced', ACCRUE_FAILPOINT_DIR: dir }) });
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

  test('killed after Stripe charged a recharge, before its commit was granted: one charge, one commit', async () => {
    const metric = await client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await client.v1.contracts.products.create({ name: uniqueName('Calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const credits = await client.v1.contracts.products.create({ name: uniqueName('Credits'), type: 'FIXED' });
    const card = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: calls.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-1) });
    const alias = uniqueName('recrash');
    const customer = await client.v1.customers.create({ name: 'Prepaid Co', ingest_aliases: [alias] });
    const stripeCustomerId = await stripeCustomer(stripe, 'pays');
    await client.v1.customers.billingConfig.create({ customer_id: customer.data.id, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId });
    const contract = await client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(0),
      commits: [{ type: 'PREPAID', product_id: credits.data.id, access_schedule: { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(12) }] } }],
      prepaid_balance_threshold_configuration: { commit: { product_id: credits.data.id }, is_enabled: true, payment_gate_config: { payment_gate_type: 'STRIPE' }, threshold_amount: 500, recharge_to_amount: 2000 },
    } as unknown as Metronome.V1.ContractCreateParams);
    const killsBefore = kills.length;
    await client.v1.usage.ingest({ usage: Array.from({ length: 7 }, (_, i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.now() - 1000).toISOString() })) });
    await eventually('recharged after the kill', async () => {
      expect(await orm.em.fork().execute('select n, amount::text as amount, status from recharge where contract_id = ?', [contract.data.id])).toEqual([{ n: 1, amount: '1700', status: 'GRANTED' }]);
    }, 150_000);
    expect(kills.length - killsBefore).toBe(1);
    expect(readdirSync(dir)).toContain('_recharge-charged');
    expect((await stripe.invoices.list({ customer: stripeCustomerId })).data.map((i) => [i.total, i.status])).toEqual([[1700, 'paid']]);
    expect((await stripe.charges.list({ customer: stripeCustomerId })).data).toHaveLength(1);
    expect(await orm.em.fork().execute(`select count(*)::int as n from balance_grant where contract_id = ? and custom_fields ->> 'accrue_recharge' = '1'`, [contract.data.id])).toEqual([{ n: 1 }]);
  });

  test('killed after an ungated recharge was granted and billed, before its invoice\'s close started: one commit, one invoice, closed and collected once', async () => {
    const metric = await client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await client.v1.contracts.products.create({ name: uniqueName('Calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const credits = await client.v1.contracts.products.create({ name: uniqueName('Credits'), type: 'FIXED' });
    const card = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: calls.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-1) });
    const alias = uniqueName('nogate');
    const customer = await client.v1.customers.create({ name: 'Ungated Co', ingest_aliases: [alias], billing_email: `${alias}@example.test` } as Metronome.V1.CustomerCreateParams);
    const stripeCustomerId = await stripeCustomer(stripe, 'pays');
    await client.v1.customers.billingConfig.create({ customer_id: customer.data.id, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId });
    const contract = await client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(0), approval_policy: { mode: 'NEVER' },
      commits: [{ type: 'PREPAID', product_id: credits.data.id, access_schedule: { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(12) }] } }],
      prepaid_balance_threshold_configuration: { commit: { product_id: credits.data.id, name: 'Top-up' }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: 500, recharge_to_amount: 2000 },
    } as unknown as Metronome.V1.ContractCreateParams);
    const killsBefore = kills.length;
    await client.v1.usage.ingest({ usage: Array.from({ length: 7 }, (_, i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.now() - 1000).toISOString() })) });
    const inv = await eventually('billed and collected after the kill', async () => {
      const scheduled = (await client.v1.customers.invoices.list({ customer_id: customer.data.id })).data.filter((i) => i.type === 'SCHEDULED');
      expect(scheduled).toHaveLength(1);
      const j = (await http(app, 'GET', `/v1/customers/${customer.data.id}/invoices/${scheduled[0]!.id}`, { token: app.adminToken })).json.data;
      expect([j.total, j.status, j.payment_status, j.external_invoice?.external_status, !!j.emailed_at]).toEqual([1700, 'FINALIZED', 'PAID', 'PAID', true]);
      return j;
    }, 150_000);
    expect(kills.length - killsBefore).toBe(1);
    expect(readdirSync(dir)).toContain('_recharge-invoiced');
    expect(await orm.em.fork().execute('select n, amount::text as amount, status from recharge where contract_id = ?', [contract.data.id])).toEqual([{ n: 1, amount: '1700', status: 'GRANTED' }]);
    expect(await orm.em.fork().execute(`select count(*)::int as n from balance_grant where contract_id = ? and custom_fields ->> 'accrue_recharge' = '1'`, [contract.data.id])).toEqual([{ n: 1 }]);
    expect(await orm.em.fork().execute(`select count(*)::int as n from invoice where contract_id = ? and type = 'SCHEDULED'`, [contract.data.id])).toEqual([{ n: 1 }]);
    expect((await stripe.invoices.list({ customer: stripeCustomerId })).data.map((i) => [i.id, i.total, i.status])).toEqual([[inv.external_invoice.invoice_id, 1700, 'paid']]);
    expect((await stripe.charges.list({ customer: stripeCustomerId })).data).toHaveLength(1);
    expect((await mailTo(`${alias}@example.test`)).filter((m) => m.subject?.endsWith('$17.00'))).toHaveLength(1);
  });
});
