import type Metronome from '@metronome/sdk';
import { stripeItems } from '../billing/stripe-items.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, monthStart, uniqueName } from './stack.js';
import { billedCustomer, signedEvent, stripeCustomer, stripeEnv, stripeFaults, stripeFaultsLeft, stripeSendsWebhooksTo, testStripe } from './stripe/fixtures.js';

/**
 * Payments through Stripe, end to end against the run's Stripe-protocol server (localstripe, which
 * also sends its own signed webhooks to this Accrue): a finalized invoice becomes a Stripe invoice
 * with one item per line in integer cents and is charged; `send_invoice` invoices wait for a
 * payment reported by a signed `invoice.paid`; a declined card runs dunning to ARREARS and a
 * payment restores the contract; a void reaches Stripe; Stripe failing with 500 and 429 for a
 * while loses and doubles nothing; bad and unsigned webhooks change nothing.
 */
describe('Stripe: invoices sent, charged, paid and dunned', () => {
  const finance = `${uniqueName('finance')}@example.test`;
  // This Accrue's own Stripe key: the faults below are scoped to it (the server is shared).
  const appKey = 'sk_test_accrue_stripe_suite';
  const h = useSdkApp('stripe', { env: stripeEnv({ STRIPE_SECRET_KEY: appKey, ACCRUE_DUNNING_SCHEDULE: '2s,2s', ACCRUE_FINANCE_EMAIL: finance }) });
  const stripe = testStripe();
  const p0 = monthStart(-1);

  beforeAll(async () => {
    await stripeSendsWebhooksTo(uniqueName('accrue'), `${h.app.baseURL}/v1/accrue/webhooks/stripe`);
  });

  const invoiceJson = async (customerId: string, invoiceId: string) => {
    const r = await http(h.app, 'GET', `/v1/customers/${customerId}/invoices/${invoiceId}`, { token: h.app.adminToken });
    if (r.status !== 200) throw new Error(`invoice ${r.status}: ${r.text}`);
    return r.json.data;
  };
  const lifecycle = async (contractId: string) => (await http(h.app, 'GET', `/v1/accrue/contracts/${contractId}/lifecycle`, { token: h.app.adminToken })).json.data.state as string;
  const payments = async (invoiceId: string) => h.orm.em.fork().execute<{ reference: string; amount: string; source: string }[]>(
    'select reference, amount::text as amount, source from invoice_payment where invoice_id = ? order by recorded_at', [invoiceId]);
  const webhook = (e: { body: string; headers: Record<string, string> }) => fetch(`${h.app.baseURL}/v1/accrue/webhooks/stripe`, { method: 'POST', headers: e.headers, body: e.body });

  /** A customer billed through Stripe with last month's usage, and its contract (last month's close starts at once). */
  const setUp = async (o: { card: 'pays' | 'declines' | 'none'; method: 'charge_automatically' | 'send_invoice'; price: number; calls: number; beforeContract?: () => Promise<void> }) => {
    const c = await billedCustomer(h.client, o.price);
    const stripeCustomerId = await stripeCustomer(stripe, o.card);
    await h.client.v1.customers.billingConfig.create({ customer_id: c.customerId, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId, stripe_collection_method: o.method });
    await h.client.v1.usage.ingest({ usage: Array.from({ length: o.calls }, (_, i) => ({ transaction_id: `${c.alias}-${i}`, customer_id: c.alias, event_type: 'call', timestamp: new Date(Date.parse(p0) + 3_600_000 + i * 1000).toISOString() })) });
    await o.beforeContract?.();
    const contract = await h.client.v1.contracts.create({ customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: p0, approval_policy: { mode: 'NEVER' } } as unknown as Metronome.V1.ContractCreateParams);
    const invoiceId = await eventually('last month\'s invoice finalized', async () => {
      const inv = (await h.client.v1.customers.invoices.list({ customer_id: c.customerId })).data.find((i) => i.start_timestamp === p0);
      expect(inv?.status).toBe('FINALIZED');
      return inv!.id;
    }, 90_000);
    return { ...c, stripeCustomerId, contractId: contract.data.id, invoiceId };
  };

  test('charge_automatically: one Stripe invoice, an item per line in whole cents adding up to the total, charged once, paid in Accrue', async () => {
    const s = await setUp({ card: 'pays', method: 'charge_automatically', price: 12.5, calls: 3 }); // 37.5 cents of usage
    const inv = await eventually('paid through Stripe', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.external_invoice?.external_status, j.payment_status]).toEqual(['PAID', 'PAID']);
      return j;
    }, 90_000);
    expect(inv.external_invoice).toEqual({ billing_provider: 'stripe', invoice_id: expect.stringMatching(/^in_/), external_status: 'PAID', hosted_invoice_url: expect.stringContaining(inv.external_invoice.invoice_id) });
    const si = await stripe.invoices.retrieve(inv.external_invoice.invoice_id);
    expect([si.status, si.total, si.currency, si.collection_method, si.metadata?.accrue_invoice_id]).toEqual(['paid', Number(inv.total), 'usd', 'charge_automatically', s.invoiceId]);
    const lines = (await stripe.invoices.listLineItems(si.id!)).data.map((l) => l.amount);
    const expected = stripeItems((inv.line_items as { name: string; total: number }[]).map((l) => ({ name: l.name, total: String(l.total) })), String(inv.total));
    expect(lines).toEqual(expected.map((i) => i.amount));
    expect(lines.every(Number.isInteger)).toBe(true);
    expect(lines.reduce((a, b) => a + b, 0)).toBe(Number(inv.total));
    // localstripe's own invoice.paid webhooks arrive too: still one payment.
    await new Promise((r) => setTimeout(r, 2500));
    expect(await payments(s.invoiceId)).toEqual([{ reference: `stripe:${si.id}`, amount: String(inv.total), source: 'STRIPE' }]);
    expect((await stripe.invoices.list({ customer: s.stripeCustomerId })).data).toHaveLength(1);
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data).toHaveLength(1);
    const config = await h.client.v1.customers.billingConfig.retrieve({ customer_id: s.customerId, billing_provider_type: 'stripe' });
    expect(config.data).toEqual({ billing_provider_customer_id: s.stripeCustomerId, stripe_collection_method: 'charge_automatically' });
  });

  test('send_invoice: open at Stripe until a signed invoice.paid arrives; replays, unsigned and wrongly signed webhooks change nothing', async () => {
    const s = await setUp({ card: 'none', method: 'send_invoice', price: 100, calls: 2 });
    const open = await eventually('sent to Stripe, open', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.external_invoice?.external_status, j.payment_status, j.dunning?.status]).toEqual(['FINALIZED', 'UNPAID', 'ACTIVE']);
      return j;
    }, 90_000);
    // Dunning waits for the due date of a send_invoice invoice.
    expect(open.dunning).toEqual({ status: 'ACTIVE', step: 0, steps: 3, next_attempt_at: open.due_at });
    const si = await stripe.invoices.retrieve(open.external_invoice.invoice_id);
    expect([si.status, si.collection_method, si.total]).toEqual(['open', 'send_invoice', 200]);

    const paid = signedEvent('invoice.paid', { ...si, status: 'paid', amount_paid: si.total, amount_remaining: 0 });
    const unsigned = await fetch(`${h.app.baseURL}/v1/accrue/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: paid.body });
    expect([unsigned.status, ((await unsigned.json()) as { message: string }).message]).toEqual([400, expect.stringMatching(/^stripe-signature: header is missing/)]);
    const forged = signedEvent('invoice.paid', { ...si, status: 'paid' }, { secret: 'whsec_not_ours' });
    const wrong = await webhook(forged);
    expect([wrong.status, ((await wrong.json()) as { message: string }).message]).toEqual([400, expect.stringMatching(/^stripe-signature: does not verify/)]);
    const tampered = await webhook({ body: paid.body.replace('"paid"', '"paid" '), headers: paid.headers });
    expect(tampered.status).toBe(400);
    expect(await payments(s.invoiceId)).toEqual([]);
    expect((await invoiceJson(s.customerId, s.invoiceId)).payment_status).toBe('UNPAID');

    const first = await webhook(paid);
    expect([first.status, await first.json()]).toEqual([200, { received: true, outcome: 'payment recorded' }]);
    const again = await webhook(paid);
    expect([again.status, await again.json()]).toEqual([200, { received: true, duplicate: true, outcome: 'payment recorded' }]);
    expect(await payments(s.invoiceId)).toEqual([{ reference: `stripe:${si.id}`, amount: '200', source: 'STRIPE' }]);
    await eventually('dunning ended by the payment', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.payment_status, j.external_invoice.external_status, j.dunning?.status]).toEqual(['PAID', 'PAID', 'PAID']);
    });

    // A refund of the charge: recorded once, announced once.
    const refund = signedEvent('charge.refunded', { id: 'ch_refund_test', object: 'charge', invoice: si.id, amount: 200, amount_refunded: 50, refunded: false });
    for (let i = 0; i < 2; i++) expect((await webhook(refund)).status).toBe(200);
    expect(await h.orm.em.fork().execute('select reference, amount::text as amount from invoice_refund where invoice_id = ?', [s.invoiceId])).toEqual([{ reference: 'stripe:ch_refund_test', amount: '50' }]);
    expect(await h.orm.em.fork().execute(`select count(*)::int as n from outbound_event where type = 'accrue.invoice.refunded' and properties::text like ?`, [`%${s.invoiceId}%`])).toEqual([{ n: 1 }]);
    // A refund as newer API versions send it (no charge.invoice): found through the invoice payments of its payment intent.
    const charged = await setUp({ card: 'pays', method: 'charge_automatically', price: 9, calls: 1 });
    const chargedInv = await eventually('paid through Stripe', async () => {
      const j = await invoiceJson(charged.customerId, charged.invoiceId);
      expect(j.external_invoice?.external_status).toBe('PAID');
      return j;
    }, 90_000);
    const [ch] = (await stripe.charges.list({ customer: charged.stripeCustomerId })).data;
    const refundNew = signedEvent('charge.refunded', { id: ch!.id, object: 'charge', payment_intent: ch!.payment_intent, amount: 9, amount_refunded: 9, refunded: true });
    const refunded = await webhook(refundNew);
    expect([refunded.status, ((await refunded.json()) as { outcome: string }).outcome]).toEqual([200, 'refund recorded']);
    expect(await h.orm.em.fork().execute('select reference, amount::text as amount from invoice_refund where invoice_id = ?', [chargedInv.id])).toEqual([{ reference: `stripe:${ch!.id}`, amount: '9' }]);
    // Other events and other invoices are acknowledged and ignored.
    const other = await webhook(signedEvent('customer.created', { id: 'cus_x', object: 'customer' }));
    expect([other.status, ((await other.json()) as { outcome: string }).outcome]).toEqual([200, 'ignored: customer.created is not handled']);
    const foreign = await webhook(signedEvent('invoice.paid', { id: 'in_not_ours', object: 'invoice', metadata: {} }));
    expect([foreign.status, ((await foreign.json()) as { outcome: string }).outcome]).toEqual([200, 'ignored: not an Accrue invoice']);
  });

  test('voiding the Accrue invoice voids its Stripe copy and stops its dunning', async () => {
    const s = await setUp({ card: 'none', method: 'send_invoice', price: 100, calls: 1 });
    const open = await eventually('sent to Stripe, open', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect(j.external_invoice?.external_status).toBe('FINALIZED');
      return j;
    }, 90_000);
    const voided = await http(h.app, 'POST', '/v1/invoices/void', { token: h.app.adminToken, body: { id: s.invoiceId } });
    expect(voided.status).toBe(200);
    await eventually('void at Stripe', async () => {
      expect((await stripe.invoices.retrieve(open.external_invoice.invoice_id)).status).toBe('void');
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.status, j.external_invoice.external_status, j.dunning?.status]).toEqual(['VOID', 'VOID', 'STOPPED']);
    });
  });

  test('a declined card: dunning on schedule (customer emailed at each attempt), finance told and ARREARS after the last; a payment restores the contract', async () => {
    const s = await setUp({ card: 'declines', method: 'charge_automatically', price: 100, calls: 3 });
    const exhausted = await eventually('dunning exhausted', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.external_invoice?.external_status, j.payment_status, j.dunning?.status]).toEqual(['PAYMENT_FAILED', 'UNPAID', 'EXHAUSTED']);
      return j;
    }, 90_000);
    expect(exhausted.dunning).toEqual({ status: 'EXHAUSTED', step: 3, steps: 3, next_attempt_at: null });
    await eventually('the contract in arrears', async () => expect(await lifecycle(s.contractId)).toBe('ARREARS'), 30_000);
    const dunningMails = (await mailTo(s.billingEmail)).filter((m) => /^Payment failed/.test(m.subject ?? ''));
    expect(dunningMails.map((m) => m.subject).sort()).toEqual([1, 2, 3].map((n) => `Payment failed: $3.00 for invoice ${s.invoiceId} (attempt ${n} of 3)`));
    expect(dunningMails[0]!.text).toContain(exhausted.external_invoice.hosted_invoice_url);
    await eventually('finance told', async () => expect((await mailTo(finance)).filter((m) => m.subject === `Stripe Co: invoice ${s.invoiceId} unpaid after 3 payment attempts`)).toHaveLength(1));
    // The first charge and two retries, all declined; one Stripe invoice.
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data).toHaveLength(3);
    expect((await stripe.invoices.list({ customer: s.stripeCustomerId })).data).toHaveLength(1);

    const si = await stripe.invoices.retrieve(exhausted.external_invoice.invoice_id);
    expect((await webhook(signedEvent('invoice.paid', { ...si, status: 'paid' }))).status).toBe(200);
    await eventually('restored', async () => {
      expect(await lifecycle(s.contractId)).toBe('ACTIVE');
      expect((await invoiceJson(s.customerId, s.invoiceId)).payment_status).toBe('PAID');
    }, 30_000);
  });

  test('Stripe answering 500 (after doing the work) and then 429 for a while: nothing lost, nothing doubled', async () => {
    const s = await setUp({
      card: 'pays', method: 'charge_automatically', price: 7, calls: 5,
      beforeContract: async () => {
        await stripeFaults(appKey, 500, 3, 'after');
        await stripeFaults(appKey, 429, 2, 'before');
      },
    });
    const inv = await eventually('paid through Stripe despite the faults', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.external_invoice?.external_status, j.payment_status]).toEqual(['PAID', 'PAID']);
      return j;
    }, 120_000);
    expect(await stripeFaultsLeft(appKey)).toBe(0);
    const invoices = (await stripe.invoices.list({ customer: s.stripeCustomerId })).data;
    expect(invoices.map((i) => [i.id, i.total, i.status])).toEqual([[inv.external_invoice.invoice_id, 35, 'paid']]);
    expect((await stripe.invoices.listLineItems(invoices[0]!.id!)).data.map((l) => l.amount)).toEqual([35]);
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data).toHaveLength(1);
    expect(await payments(s.invoiceId)).toHaveLength(1);
  });

  test('billing config: the Stripe customer must exist, the collection method must be one Accrue supports; retrieve and delete', async () => {
    const c = await billedCustomer(h.client, 1);
    const bad = async (body: Record<string, unknown>, field: string, message: RegExp) => {
      const r = await http(h.app, 'POST', `/v1/customers/${c.customerId}/billing-config/stripe`, { token: h.app.adminToken, body });
      expect([r.status, r.json.field, r.json.message]).toEqual([400, field, expect.stringMatching(message)]);
    };
    await bad({ billing_provider_customer_id: 'cus_doesnotexist' }, 'billing_provider_customer_id', /Stripe has no customer cus_doesnotexist/);
    await bad({ billing_provider_customer_id: 'acct_123' }, 'billing_provider_customer_id', /must be a Stripe customer id/);
    await bad({}, 'billing_provider_customer_id', /required/);
    const stripeCustomerId = await stripeCustomer(stripe, 'none');
    await bad({ billing_provider_customer_id: stripeCustomerId, stripe_collection_method: 'auto_charge_payment_intent' }, 'stripe_collection_method', /not supported by Accrue/);
    await bad({ billing_provider_customer_id: stripeCustomerId, stripe_collection_method: 'cash' }, 'stripe_collection_method', /must be one of/);
    expect((await http(h.app, 'GET', `/v1/customers/${c.customerId}/billing-config/stripe`, { token: h.app.adminToken })).status).toBe(404);
    await h.client.v1.customers.billingConfig.create({ customer_id: c.customerId, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId, stripe_collection_method: 'send_invoice' });
    expect((await h.client.v1.customers.billingConfig.retrieve({ customer_id: c.customerId, billing_provider_type: 'stripe' })).data).toEqual({ billing_provider_customer_id: stripeCustomerId, stripe_collection_method: 'send_invoice' });
    await h.client.v1.customers.billingConfig.delete({ customer_id: c.customerId, billing_provider_type: 'stripe' });
    expect((await http(h.app, 'GET', `/v1/customers/${c.customerId}/billing-config/stripe`, { token: h.app.adminToken })).status).toBe(404);
    // The key never shows in an answer or an error.
    const r = await http(h.app, 'POST', `/v1/customers/${c.customerId}/billing-config/stripe`, { token: h.app.adminToken, body: { billing_provider_customer_id: 'cus_doesnotexist' } });
    expect(r.text).not.toContain('sk_test');
  });
});
