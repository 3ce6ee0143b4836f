import type Metronome from '@metronome/sdk';
import pg from 'pg';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, monthStart } from './stack.js';
import { billedCustomer, signedEvent, stripeCustomer, stripeEnv, testStripe } from './stripe/fixtures.js';

/**
 * Money already received stays where it was received: a paid (or partly paid) invoice is not
 * voided — so regenerate cannot bill its period again — until its payments are refunded, and a
 * void racing a payment lets only one of them through.
 */
describe('paid invoices: void and regenerate', () => {
  // This Accrue's own Stripe key.
  const appKey = 'sk_test_accrue_paid_invoices';
  const h = useSdkApp('paid_invoices', { env: stripeEnv({ STRIPE_SECRET_KEY: appKey }) });
  const stripe = testStripe();
  const p0 = monthStart(-1);

  const invoiceJson = async (customerId: string, invoiceId: string) => {
    const r = await http(h.app, 'GET', `/v1/customers/${customerId}/invoices/${invoiceId}`, { token: h.app.adminToken });
    if (r.status !== 200) throw new Error(`invoice ${r.status}: ${r.text}`);
    return r.json.data;
  };
  const pay = (invoiceId: string, body: unknown) => http(h.app, 'POST', `/v1/accrue/invoices/${invoiceId}/payments`, { token: h.app.adminToken, body });
  const voidInvoice = (id: string) => http(h.app, 'POST', '/v1/invoices/void', { token: h.app.adminToken, body: { id } });
  const regenerate = (id: string) => http(h.app, 'POST', '/v1/invoices/regenerate', { token: h.app.adminToken, body: { id } });
  const invoicesOfPeriod = async (contractId: string) => h.orm.em.fork().execute<{ id: string; status: string; total: string }[]>(
    'select id::text as id, status, total::text as total from invoice where contract_id = ? and period_start = ? order by frozen_at', [contractId, p0]);

  /** A customer with last month's usage worth `calls` × 4000¢ (and a Stripe billing config when asked). */
  const customerWithUsage = async (o: { calls?: number; stripe?: 'charge_automatically' | 'send_invoice'; card?: 'pays' | 'declines' } = {}) => {
    const c = await billedCustomer(h.client, 4000);
    let stripeCustomerId: string | undefined;
    if (o.stripe) {
      stripeCustomerId = await stripeCustomer(stripe, o.card ?? 'pays');
      await h.client.v1.customers.billingConfig.create({ customer_id: c.customerId, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId, stripe_collection_method: o.stripe });
    }
    await h.client.v1.usage.ingest({ usage: Array.from({ length: o.calls ?? 1 }, (_, i) => ({ transaction_id: `${c.alias}-${i}`, customer_id: c.alias, event_type: 'call', timestamp: new Date(Date.parse(p0) + 3_600_000 + i * 1000).toISOString() })) });
    return { ...c, stripeCustomerId: stripeCustomerId! };
  };
  /** Its contract from last month, and last month's invoice once finalized and emailed. */
  const contractFor = async (c: Awaited<ReturnType<typeof customerWithUsage>>) => {
    const contract = await h.client.v1.contracts.create({ customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: p0, approval_policy: { mode: 'NEVER' } } as unknown as Metronome.V1.ContractCreateParams);
    const invoiceId = await eventually('last month\'s invoice finalized and emailed', async () => {
      const inv = (await h.client.v1.customers.invoices.list({ customer_id: c.customerId })).data.find((i) => i.start_timestamp === p0);
      expect(inv?.status).toBe('FINALIZED');
      expect((await mailTo(c.billingEmail)).filter((m) => m.subject?.startsWith('Your invoice'))).toHaveLength(1);
      return inv!.id;
    }, 90_000);
    return { ...c, contractId: contract.data.id, invoiceId };
  };
  const setUp = async (o: Parameters<typeof customerWithUsage>[0] = {}) => contractFor(await customerWithUsage(o));

  test('paid in full, then void: 409 naming the payment, the invoice stays FINALIZED and PAID, regenerate has nothing to bill again', async () => {
    const s = await setUp();
    expect(await invoiceJson(s.customerId, s.invoiceId)).toMatchObject({ total: 4000, payment_status: 'UNPAID' });
    expect((await pay(s.invoiceId, { amount: 4000, reference: 'wire-4000' })).status).toBe(201);
    const refused = await voidInvoice(s.invoiceId);
    expect([refused.status, refused.json.message]).toEqual([409, expect.stringMatching(/"wire-4000" \(4000\).*refund the payments first/)]);
    expect(await invoiceJson(s.customerId, s.invoiceId)).toMatchObject({ status: 'FINALIZED', payment_status: 'PAID', amount_due: 0 });
    expect((await regenerate(s.invoiceId)).status).toBe(409);
    expect(await invoicesOfPeriod(s.contractId)).toEqual([{ id: s.invoiceId, status: 'FINALIZED', total: '4000' }]);
    // Archiving the contract with its invoices voided is refused the same way, and archives nothing.
    const archive = await http(h.app, 'POST', '/v1/contracts/archive', { token: h.app.adminToken, body: { contract_id: s.contractId, customer_id: s.customerId, void_invoices: true } });
    expect([archive.status, archive.json.message]).toEqual([409, expect.stringMatching(/^void_invoices: .*"wire-4000" \(4000\)/)]);
    expect((await h.orm.em.fork().execute<{ archived_at: Date | null }[]>('select archived_at from contract where id = ?', [s.contractId]))[0]!.archived_at).toBeNull();
    expect((await invoiceJson(s.customerId, s.invoiceId)).status).toBe('FINALIZED');
    expect((await mailTo(s.billingEmail)).filter((m) => m.subject?.includes('$40.00'))).toHaveLength(1);
  });

  test('partly paid, then void: 409 naming the payment; voided first, a payment is refused; an unpaid void regenerates once', async () => {
    const partly = await setUp();
    expect((await pay(partly.invoiceId, { amount: 1500, reference: 'wire-part' })).status).toBe(201);
    const refused = await voidInvoice(partly.invoiceId);
    expect([refused.status, refused.json.message]).toEqual([409, expect.stringContaining(`invoice ${partly.invoiceId} has payments "wire-part" (1500)`)]);
    expect(await invoiceJson(partly.customerId, partly.invoiceId)).toMatchObject({ status: 'FINALIZED', payment_status: 'PARTIALLY_PAID', amount_due: 2500 });

    // The other order: voided while unpaid, then a payment arrives: refused, nothing recorded.
    const unpaid = await setUp();
    expect((await voidInvoice(unpaid.invoiceId)).status).toBe(200);
    const late = await pay(unpaid.invoiceId, { amount: 4000, reference: 'wire-late' });
    expect([late.status, late.json.field]).toEqual([400, 'invoice_id']);
    expect(await h.orm.em.fork().execute('select * from invoice_payment where invoice_id = ?', [unpaid.invoiceId])).toEqual([]);
    const regenerated = await regenerate(unpaid.invoiceId);
    expect(regenerated.status).toBe(200);
    await eventually('the regenerated invoice finalized', async () => {
      expect((await invoicesOfPeriod(unpaid.contractId)).map((i) => i.status)).toEqual(['VOID', 'FINALIZED']);
    });
  });

  test('a void and a payment racing on one invoice: exactly one of them goes through', async () => {
    const s = await setUp();
    // Hold the invoice's row lock so both requests queue behind it, then let them go together.
    const holder = new pg.Client({ connectionString: h.dbUrl });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('select id from invoice where id = $1 for update', [s.invoiceId]);
      const voiding = voidInvoice(s.invoiceId);
      const paying = pay(s.invoiceId, { amount: 4000, reference: 'wire-race' });
      await eventually('both requests waiting on the invoice row', async () => {
        const { rows } = await holder.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
        expect(rows[0].n).toBe(2);
      });
      await holder.query('commit');
      const [v, p] = await Promise.all([voiding, paying]);
      const paid = await h.orm.em.fork().execute<{ reference: string }[]>('select reference from invoice_payment where invoice_id = ?', [s.invoiceId]);
      const status = (await invoicesOfPeriod(s.contractId))[0]!.status;
      if (v.status === 200) {
        expect([p.status, status, paid]).toEqual([400, 'VOID', []]);
      } else {
        expect([v.status, p.status, status, paid]).toEqual([409, 201, 'FINALIZED', [{ reference: 'wire-race' }]]);
      }
    } finally {
      await holder.end();
    }
  });

  test('paid through Stripe: void refused until Stripe reports the charge refunded in full, then voided and regenerated', async () => {
    const s = await setUp({ stripe: 'charge_automatically' });
    const paid = await eventually('paid through Stripe', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.external_invoice?.external_status, j.payment_status]).toEqual(['PAID', 'PAID']);
      return j;
    }, 90_000);
    const stripeInvoiceId = paid.external_invoice.invoice_id as string;
    const refused = await voidInvoice(s.invoiceId);
    expect([refused.status, refused.json.message]).toEqual([409, expect.stringContaining(`"stripe:${stripeInvoiceId}" (4000)`)]);
    const webhook = (e: { body: string; headers: Record<string, string> }) => fetch(`${h.app.baseURL}/v1/accrue/webhooks/stripe`, { method: 'POST', headers: e.headers, body: e.body });
    const [charge] = (await stripe.charges.list({ customer: (await stripe.invoices.retrieve(stripeInvoiceId)).customer as string })).data;
    // Refunded in part: still refused, naming what is left.
    expect((await webhook(signedEvent('charge.refunded', { id: charge!.id, object: 'charge', invoice: stripeInvoiceId, amount: 4000, amount_refunded: 1000, refunded: false }))).status).toBe(200);
    const partly = await voidInvoice(s.invoiceId);
    expect([partly.status, partly.json.message]).toEqual([409, expect.stringContaining('(4000), 1000 refunded')]);
    expect((await webhook(signedEvent('charge.refunded', { id: charge!.id, object: 'charge', invoice: stripeInvoiceId, amount: 4000, amount_refunded: 4000, refunded: true }))).status).toBe(200);
    expect((await voidInvoice(s.invoiceId)).status).toBe(200);
    expect((await regenerate(s.invoiceId)).status).toBe(200);
  });
});
