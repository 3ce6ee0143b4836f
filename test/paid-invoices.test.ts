import type Metronome from '@metronome/sdk';
import pg from 'pg';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, monthStart, uniqueName } from './stack.js';
import { startWebhookReceiver } from './webhook-receiver.js';
import { billedCustomer, signedEvent, stripeCustomer, stripeEnv, stripeFaults, stripeFaultsClear, stripeFaultsLeft, testStripe } from './stripe/fixtures.js';

/**
 * Money already received stays where it was received: a paid (or partly paid) invoice is not
 * voided — so regenerate cannot bill its period again — until its payments are refunded, and a
 * void racing a payment lets only one of them through. On an invoice Stripe collects, Stripe asks
 * for exactly what is due: a part paid by hand is refused (before the Stripe invoice exists and
 * during its dunning), the whole amount paid by hand marks the Stripe invoice paid out of band
 * (its hosted link can no longer be paid), and a charge that got there first wins.
 */
describe('paid invoices: void, regenerate and manual payments on Stripe invoices', () => {
  // This Accrue's own Stripe key: the faults below are scoped to it (the server is shared).
  const appKey = 'sk_test_accrue_paid_invoices';
  const h = useSdkApp('paid_invoices', { env: stripeEnv({ STRIPE_SECRET_KEY: appKey, ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1', ACCRUE_WEBHOOK_RETRY_INITIAL: '200ms', ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL: '1s' }) });
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

  const payments = async (invoiceId: string) => h.orm.em.fork().execute<{ reference: string; amount: string; source: string }[]>(
    'select reference, amount::text as amount, source from invoice_payment where invoice_id = ? order by recorded_at', [invoiceId]);

  test('manual payments before the Stripe invoice exists (Stripe down): a part is refused, Stripe then charges exactly the total; the whole amount paid by hand is never sent', async () => {
    const partlyCustomer = await customerWithUsage({ stripe: 'charge_automatically' });
    const wholeCustomer = await customerWithUsage({ stripe: 'charge_automatically' });
    // Stripe answers 500 to everything this Accrue asks until the faults are dropped.
    await stripeFaults(appKey, 500, 10_000);
    let partly, whole;
    try {
      partly = await contractFor(partlyCustomer);
      expect((await invoiceJson(partly.customerId, partly.invoiceId)).external_invoice).toBeUndefined();
      const part = await pay(partly.invoiceId, { amount: 1500, reference: 'wire-part' });
      expect([part.status, part.json.message]).toEqual([409, expect.stringMatching(/^amount: invoice \S+ is collected through Stripe, which asks for the whole 4000 due/)]);
      whole = await contractFor(wholeCustomer);
      expect((await invoiceJson(whole.customerId, whole.invoiceId)).external_invoice).toBeUndefined();
      expect((await pay(whole.invoiceId, { amount: 4000, reference: 'wire-whole' })).status).toBe(201);
      expect(await stripeFaultsLeft(appKey)).toBeGreaterThan(0); // Stripe had answered nothing all along
    } finally {
      await stripeFaultsClear(appKey);
    }

    const charged = await eventually('the refused part changed nothing: charged in full through Stripe', async () => {
      const j = await invoiceJson(partly.customerId, partly.invoiceId);
      expect([j.external_invoice?.external_status, j.payment_status]).toEqual(['PAID', 'PAID']);
      return j;
    }, 120_000);
    const si = await stripe.invoices.retrieve(charged.external_invoice.invoice_id);
    expect([si.total, si.amount_paid]).toEqual([4000, 4000]);
    expect(await payments(partly.invoiceId)).toEqual([{ reference: `stripe:${si.id}`, amount: '4000', source: 'STRIPE' }]);
    await eventually('the invoice paid by hand is not sent to Stripe', async () => {
      expect((await invoiceJson(whole.customerId, whole.invoiceId)).external_invoice?.external_status).toBe('SKIPPED');
    }, 120_000);
    expect((await stripe.invoices.list({ customer: whole.stripeCustomerId })).data).toEqual([]);
    expect((await stripe.charges.list({ customer: whole.stripeCustomerId })).data).toEqual([]);
    expect(await payments(whole.invoiceId)).toEqual([{ reference: 'wire-whole', amount: '4000', source: 'MANUAL' }]);
  });

  test('manual payments during dunning: a part is refused; the whole amount marks the Stripe invoice paid out of band, which cannot be paid again, and ends the dunning', async () => {
    const s = await setUp({ stripe: 'charge_automatically', card: 'declines' });
    const dunned = await eventually('the charge declined, dunning', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.external_invoice?.external_status, j.payment_status, j.dunning?.status]).toEqual(['PAYMENT_FAILED', 'UNPAID', 'ACTIVE']);
      return j;
    }, 90_000);
    const stripeInvoiceId = dunned.external_invoice.invoice_id as string;
    const part = await pay(s.invoiceId, { amount: 1000, reference: 'wire-part' });
    expect([part.status, part.json.message]).toEqual([409, expect.stringContaining(`is collected through Stripe (${stripeInvoiceId}), which asks for the whole 4000 due`)]);
    expect((await stripe.invoices.retrieve(stripeInvoiceId)).amount_due).toBe(4000);

    const whole = await pay(s.invoiceId, { amount: 4000, reference: 'wire-whole' });
    expect([whole.status, whole.json.data]).toEqual([201, expect.objectContaining({ payment_status: 'PAID', amount_due: 0 })]);
    const si = await stripe.invoices.retrieve(stripeInvoiceId);
    expect([si.status, (si as unknown as { paid_out_of_band: boolean }).paid_out_of_band]).toEqual(['paid', true]);
    // Its hosted link cannot be paid again: Stripe refuses, nothing is charged.
    await expect(stripe.invoices.pay(stripeInvoiceId)).rejects.toThrow(/already paid/);
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data.filter((c) => c.paid)).toEqual([]);
    // The same request again is the same payment; Stripe's invoice.paid for the mark records nothing more.
    expect((await pay(s.invoiceId, { amount: 4000, reference: 'wire-whole' })).status).toBe(200);
    const webhook = await fetch(`${h.app.baseURL}/v1/accrue/webhooks/stripe`, { method: 'POST', ...signedEvent('invoice.paid', si) });
    expect([webhook.status, ((await webhook.json()) as { outcome: string }).outcome]).toEqual([200, 'already paid']);
    expect(await payments(s.invoiceId)).toEqual([{ reference: 'wire-whole', amount: '4000', source: 'MANUAL' }]);
    await eventually('dunning ended', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect([j.payment_status, j.external_invoice.external_status, j.dunning?.status]).toEqual(['PAID', 'PAID', 'PAID']);
    });
  });

  test('the customer paid the Stripe invoice first: the whole amount paid by hand is refused (409), Stripe\'s payment is recorded', async () => {
    const s = await setUp({ stripe: 'send_invoice' });
    const open = await eventually('sent to Stripe, open', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect(j.external_invoice?.external_status).toBe('FINALIZED');
      return j;
    }, 90_000);
    const stripeInvoiceId = open.external_invoice.invoice_id as string;
    expect((await stripe.invoices.pay(stripeInvoiceId)).status).toBe('paid'); // through the hosted link
    const late = await pay(s.invoiceId, { amount: 4000, reference: 'wire-late' });
    expect([late.status, late.json.message]).toEqual([409, expect.stringContaining(`was paid through Stripe (${stripeInvoiceId}) meanwhile; payment "wire-late" is not recorded`)]);
    expect(await payments(s.invoiceId)).toEqual([{ reference: `stripe:${stripeInvoiceId}`, amount: '4000', source: 'STRIPE' }]);
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data).toHaveLength(1);
  });

  test('money Stripe took that is not recorded yet: a noted out-of-band payment or a Stripe copy paid without a payment refuses void (409), and regenerate of a void whose copy Stripe paid', async () => {
    const [a, b] = await Promise.all([setUp({ stripe: 'send_invoice' }), setUp({ stripe: 'send_invoice' })]);
    const sent = (s: typeof a) => eventually('sent to Stripe, open', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect(j.external_invoice?.external_status).toBe('FINALIZED');
      return j.external_invoice.invoice_id as string;
    }, 90_000);
    const [siA, siB] = await Promise.all([sent(a), sent(b)]);
    const db = h.orm.em.fork();
    // A payment request cut off after noting its payment (Stripe may have marked the copy paid): as a crash leaves it.
    await db.execute('update invoice_external set out_of_band_payment = ?::jsonb where invoice_id = ?',
      [JSON.stringify({ reference: 'wire-cut', amount: '4000', paidAt: new Date().toISOString(), recordedBy: null }), a.invoiceId]);
    const noted = await voidInvoice(a.invoiceId);
    expect([noted.status, noted.json.message]).toEqual([409, expect.stringContaining(`invoice ${a.invoiceId} has payment "wire-cut" being settled at Stripe (${siA}) out of band`)]);
    expect((await invoiceJson(a.customerId, a.invoiceId)).status).toBe('FINALIZED');
    // Repeating that request settles it: the Stripe copy is paid out of band, the wire recorded.
    expect((await pay(a.invoiceId, { amount: 4000, reference: 'wire-cut' })).status).toBe(201);
    expect(await payments(a.invoiceId)).toEqual([{ reference: 'wire-cut', amount: '4000', source: 'MANUAL' }]);
    expect((await stripe.invoices.retrieve(siA)).status).toBe('paid');

    // Stripe paid the copy (a charge, the hosted link) and the payment is not recorded yet.
    await db.execute(`update invoice_external set external_status = 'PAID' where invoice_id = ?`, [b.invoiceId]);
    const paidAtStripe = await voidInvoice(b.invoiceId);
    expect([paidAtStripe.status, paidAtStripe.json.message]).toEqual([409, expect.stringContaining(`invoice ${b.invoiceId} is paid at Stripe (${siB}) and its payment is not recorded yet`)]);
    expect((await invoiceJson(b.customerId, b.invoiceId)).status).toBe('FINALIZED');
    // Voided while open; then Stripe reports the copy paid (a charge that got there before the void): not billed again.
    await db.execute(`update invoice_external set external_status = 'FINALIZED' where invoice_id = ?`, [b.invoiceId]);
    expect((await voidInvoice(b.invoiceId)).status).toBe(200);
    await eventually('the Stripe copy voided', async () => expect((await invoiceJson(b.customerId, b.invoiceId)).external_invoice?.external_status).toBe('VOID'));
    await db.execute(`update invoice_external set external_status = 'PAID' where invoice_id = ?`, [b.invoiceId]);
    const again = await regenerate(b.invoiceId);
    expect([again.status, again.json.message]).toEqual([409, expect.stringContaining(`invoice ${b.invoiceId} is paid at Stripe (${siB})`)]);
    expect(await invoicesOfPeriod(b.contractId)).toEqual([{ id: b.invoiceId, status: 'VOID', total: '4000' }]);
  });

  test('two settles of one manual payment at once: the one Stripe turns away keeps the note (503), and finding the copy paid out of band records the wire, never a Stripe payment', async () => {
    const s = await setUp({ stripe: 'send_invoice' });
    const stripeInvoiceId = await eventually('sent to Stripe, open', async () => {
      const j = await invoiceJson(s.customerId, s.invoiceId);
      expect(j.external_invoice?.external_status).toBe('FINALIZED');
      return j.external_invoice.invoice_id as string;
    }, 90_000);
    const noted = async () => (await h.orm.em.fork().execute<{ ref: string | null }[]>(
      `select out_of_band_payment->>'reference' as ref from invoice_external where invoice_id = ?`, [s.invoiceId]))[0]!.ref;
    // Stripe turns this request away while another holds the key (409): retried, the payment stays noted.
    await stripeFaults(appKey, 409, 1);
    const busy = await pay(s.invoiceId, { amount: 4000, reference: 'wire-both' });
    expect([busy.status, busy.json.message]).toEqual([503, expect.stringContaining('for payment "wire-both"; retry')]);
    expect([await noted(), (await stripe.invoices.retrieve(stripeInvoiceId)).status, await payments(s.invoiceId)]).toEqual(['wire-both', 'open', []]);
    // The other settle marks the copy paid out of band (its answer is its own); this one, repeated, is refused as already paid.
    expect((await stripe.invoices.pay(stripeInvoiceId, { paid_out_of_band: true })).status).toBe('paid');
    const again = await pay(s.invoiceId, { amount: 4000, reference: 'wire-both' });
    expect([again.status, again.json.data?.payment_status]).toEqual([201, 'PAID']);
    expect(await payments(s.invoiceId)).toEqual([{ reference: 'wire-both', amount: '4000', source: 'MANUAL' }]);
    expect((await invoiceJson(s.customerId, s.invoiceId)).external_invoice.external_status).toBe('PAID');
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data).toEqual([]);
  });

  test('a manual payment settled at Stripe whose record fails: the Stripe copy is not shown PAID without it; repeated, both are written', async () => {
    const s = await setUp({ stripe: 'send_invoice' });
    await eventually('sent to Stripe, open', async () => expect((await invoiceJson(s.customerId, s.invoiceId)).external_invoice?.external_status).toBe('FINALIZED'), 90_000);
    const db = h.orm.em.fork();
    // The payment's insert fails (as a database failing mid-request would), after Stripe marked the copy.
    await db.execute(`create or replace function refuse_wire_lost() returns trigger language plpgsql as $$
      begin if new.reference = 'wire-lost' then raise exception 'refused by the test'; end if; return new; end $$`);
    await db.execute('create trigger refuse_wire_lost before insert on invoice_payment for each row execute function refuse_wire_lost()');
    try {
      expect((await pay(s.invoiceId, { amount: 4000, reference: 'wire-lost' })).status).toBe(503);
      expect([(await invoiceJson(s.customerId, s.invoiceId)).external_invoice.external_status, await payments(s.invoiceId)]).toEqual(['FINALIZED', []]);
    } finally {
      await db.execute('drop trigger refuse_wire_lost on invoice_payment');
    }
    expect((await pay(s.invoiceId, { amount: 4000, reference: 'wire-lost' })).status).toBe(201);
    expect([(await invoiceJson(s.customerId, s.invoiceId)).external_invoice.external_status, await payments(s.invoiceId)])
      .toEqual(['PAID', [{ reference: 'wire-lost', amount: '4000', source: 'MANUAL' }]]);
  });

  test('amounts in outbound notifications keep every digit: an invoice total and amount due beyond what a double holds', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const endpoint = await http(h.app, 'POST', '/v1/accrue/webhook-endpoints', { token: h.app.adminToken, body: { url: receiver.url, event_types: ['invoice.finalized', 'accrue.invoice.payment_status_changed'] } });
      expect(endpoint.status).toBe(201);
      const c = await billedCustomer(h.client, 1);
      // A price of 12345678901234567890 cents a call, sent as an exact JSON number (20 digits, the most an amount may have: more than a double carries).
      const rate = await http(h.app, 'POST', '/v1/contract-pricing/rate-cards/addRate', {
        token: h.app.adminToken,
        rawBody: `{"rate_card_id":"${c.rateCardId}","product_id":"${c.productId}","entitled":true,"rate_type":"FLAT","price":12345678901234567890,"starting_at":"${monthStart(-2)}"}`,
      });
      expect(rate.status).toBe(200);
      await h.client.v1.usage.ingest({ usage: [{ transaction_id: uniqueName('big'), customer_id: c.alias, event_type: 'call', timestamp: new Date(Date.parse(p0) + 3_600_000).toISOString() }] });
      const contract = await h.client.v1.contracts.create({ customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: p0, approval_policy: { mode: 'NEVER' } } as unknown as Metronome.V1.ContractCreateParams);
      const invoiceId = await eventually('the invoice finalized', async () => {
        const [row] = await h.orm.em.fork().execute<{ id: string; total: string }[]>(`select id::text as id, total::text as total from invoice where contract_id = ? and period_start = ? and status = 'FINALIZED'`, [contract.data.id, p0]);
        expect(row?.total).toBe('12345678901234567890');
        return row!.id;
      }, 90_000);
      expect((await pay(invoiceId, { amount: 1, reference: 'one-cent' })).status).toBe(201);
      const bodies = await eventually('both notifications delivered', async () => {
        const mine = receiver.received.filter((w) => w.properties.invoice_id === invoiceId && w.answered === 200);
        const finalized = mine.find((w) => w.type === 'invoice.finalized');
        const paid = mine.find((w) => w.type === 'accrue.invoice.payment_status_changed');
        expect([finalized?.type, paid?.type]).toEqual(['invoice.finalized', 'accrue.invoice.payment_status_changed']);
        return { finalized: finalized!.body, paid: paid!.body };
      }, 60_000);
      expect(bodies.finalized).toMatch(/"total":12345678901234567890[,}]/);
      expect(bodies.paid).toMatch(/"amount_due":12345678901234567889[,}]/);
    } finally {
      await receiver.close();
    }
  });
});
