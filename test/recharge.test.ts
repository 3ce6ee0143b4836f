import type Metronome from '@metronome/sdk';
import { evaluateDirty, markDirty } from '../db/alerts.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, monthStart, uniqueName } from './stack.js';
import { stripeCustomer, stripeEnv, testStripe } from './stripe/fixtures.js';

/**
 * Auto-recharge of a prepaid balance (Metronome's `prepaid_balance_threshold_configuration`)
 * through Stripe: usage draws the prepaid commit down to the threshold, `recharge/<contract>/<n>`
 * charges the recharge amount through a Stripe invoice and grants the commit only once paid; a
 * declined card grants nothing, notifies `payment_gate.payment_status` and is not retried in a
 * loop; evaluators racing on the same marks start one recharge per crossing.
 */
describe('auto-recharge through Stripe', () => {
  const h = useSdkApp('recharge', { env: stripeEnv() });
  const stripe = testStripe();

  const setUp = async (card: 'pays' | 'declines', gate: 'STRIPE' | 'NONE' = 'STRIPE', invoiceMetadata?: Record<string, string>) => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await h.client.v1.contracts.products.create({ name: uniqueName('Calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const credits = await h.client.v1.contracts.products.create({ name: uniqueName('Credits'), type: 'FIXED' });
    const rateCard = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: rateCard.data.id, product_id: calls.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-1) });
    const alias = uniqueName('recharge');
    const customer = await h.client.v1.customers.create({ name: 'Prepaid Co', ingest_aliases: [alias], billing_email: `${alias}@example.test` } as Metronome.V1.CustomerCreateParams);
    const stripeCustomerId = await stripeCustomer(stripe, card);
    await h.client.v1.customers.billingConfig.create({ customer_id: customer.data.id, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId });
    const contract = await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: rateCard.data.id, starting_at: monthStart(0),
      commits: [{ type: 'PREPAID', product_id: credits.data.id, name: 'Starter credits', access_schedule: { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(12) }] } }],
      prepaid_balance_threshold_configuration: {
        commit: { product_id: credits.data.id, name: 'Auto top-up' }, is_enabled: true,
        payment_gate_config: { payment_gate_type: gate, ...(invoiceMetadata ? { stripe_config: { payment_type: 'INVOICE', invoice_metadata: invoiceMetadata } } : {}) },
        threshold_amount: 500, recharge_to_amount: 2000,
      },
      approval_policy: { mode: 'NEVER' },
    } as unknown as Metronome.V1.ContractCreateParams);
    let n = 0;
    const ingest = (count: number) => h.client.v1.usage.ingest({ usage: Array.from({ length: count }, () => ({ transaction_id: `${alias}-${n++}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.now() - 1000).toISOString() })) });
    return { customerId: customer.data.id, contractId: contract.data.id, stripeCustomerId, billingEmail: `${alias}@example.test`, ingest };
  };
  const recharges = async (contractId: string) => h.orm.em.fork().execute<{ n: number; amount: string; balance_before: string; status: string }[]>(
    'select n, amount::text as amount, balance_before::text as balance_before, status from recharge where contract_id = ? order by n', [contractId]);
  const grants = async (contractId: string) => h.orm.em.fork().execute<{ name: string; amount: string }[]>(
    `select name, access_schedule -> 'schedule_items' -> 0 ->> 'amount' as amount from balance_grant where contract_id = ? order by created_at`, [contractId]);
  const gateNotices = async (customerId: string) => (await h.orm.em.fork().execute<{ properties: { payment_status: string; amount: number } }[]>(
    `select properties from outbound_event where type = 'payment_gate.payment_status' and customer_id = ? order by created_at`, [customerId])).map((r) => [r.properties.payment_status, r.properties.amount]);

  test('the balance falls to the threshold: one Stripe invoice for the difference (carrying the gate\'s invoice_metadata), paid, then the commit is granted; above the threshold again nothing happens', async () => {
    const metadata = { po_number: 'PO-7731', cost_center: 'eng / platform' };
    const s = await setUp('pays', 'STRIPE', metadata);
    const got = await http(h.app, 'POST', '/v1/contracts/get', { token: h.app.adminToken, body: { customer_id: s.customerId, contract_id: s.contractId } });
    expect(got.json.data.current.prepaid_balance_threshold_configuration).toMatchObject({ threshold_amount: 500, recharge_to_amount: 2000, is_enabled: true });
    expect(got.json.data.current.prepaid_balance_threshold_configuration.payment_gate_config).toEqual({ payment_gate_type: 'STRIPE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: metadata } });
    await s.ingest(4); // 400 of 1000: balance 600, above the threshold
    await new Promise((r) => setTimeout(r, 2000));
    expect(await recharges(s.contractId)).toEqual([]);
    // Two requests at once take it to 400: concurrent rating passes, one crossing.
    await Promise.all(Array.from({ length: 2 }, () => s.ingest(1)));
    await eventually('recharged', async () => expect(await recharges(s.contractId)).toEqual([{ n: 1, amount: '1600', balance_before: '400', status: 'GRANTED' }]), 60_000);
    expect(await grants(s.contractId)).toEqual([{ name: 'Starter credits', amount: '1000' }, { name: 'Auto top-up', amount: '1600' }]);
    const invoices = (await stripe.invoices.list({ customer: s.stripeCustomerId })).data;
    expect(invoices.map((i) => [i.total, i.status, i.metadata?.accrue_recharge])).toEqual([[1600, 'paid', `${s.contractId}:1`]]);
    // The user's keys and Accrue's, exactly, as Stripe holds them.
    expect((await stripe.invoices.retrieve(invoices[0]!.id!)).metadata).toEqual({ ...metadata, accrue_recharge: `${s.contractId}:1`, accrue_contract_id: s.contractId, accrue_customer_id: s.customerId });
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data).toHaveLength(1);
    expect(await gateNotices(s.customerId)).toEqual([['paid', 1600]]);
    // 2000 now; 100 more usage leaves 1900: no recharge.
    await s.ingest(1);
    await new Promise((r) => setTimeout(r, 2000));
    expect(await recharges(s.contractId)).toHaveLength(1);
  });

  test('a declined card: nothing granted, payment_gate.payment_status failed, and no retry loop as usage goes on', async () => {
    const s = await setUp('declines');
    await s.ingest(6);
    await eventually('the recharge failed', async () => expect(await recharges(s.contractId)).toEqual([{ n: 1, amount: '1600', balance_before: '400', status: 'FAILED' }]), 60_000);
    expect(await grants(s.contractId)).toEqual([{ name: 'Starter credits', amount: '1000' }]);
    expect(await gateNotices(s.customerId)).toEqual([['failed', 1600]]);
    // Its Stripe invoice is voided: paying it later could not grant anything.
    expect((await stripe.invoices.list({ customer: s.stripeCustomerId })).data.map((i) => [i.total, i.status])).toEqual([[1600, 'void']]);
    await s.ingest(2);
    await new Promise((r) => setTimeout(r, 3000));
    expect(await recharges(s.contractId)).toHaveLength(1);
    expect((await stripe.charges.list({ customer: s.stripeCustomerId })).data).toHaveLength(1);
  });

  test('evaluators racing on the same marks start one recharge per crossing (gate NONE: granted at once and billed on its own invoice, once)', async () => {
    const s = await setUp('pays', 'NONE');
    // Stop the app's own evaluator from winning every race: evaluate from here, several at once, many times.
    await s.ingest(6);
    for (let round = 0; round < 10; round++) {
      await markDirty(h.orm.em.fork(), [s.customerId]);
      await Promise.all(Array.from({ length: 4 }, () => evaluateDirty(h.orm.em.fork(), { limit: 50 })));
    }
    await eventually('recharged once', async () => expect(await recharges(s.contractId)).toEqual([{ n: 1, amount: '1600', balance_before: '400', status: 'GRANTED' }]), 60_000);
    expect(await grants(s.contractId)).toEqual([{ name: 'Starter credits', amount: '1000' }, { name: 'Auto top-up', amount: '1600' }]);
    // Not free: its own SCHEDULED invoice at the grant, finalized (policy NEVER), emailed, collected through Stripe — once.
    const billed = await eventually('the recharge invoice closed and collected', async () => {
      const all = (await http(h.app, 'GET', `/v1/customers/${s.customerId}/invoices`, { token: h.app.adminToken })).json.data as Record<string, any>[];
      const scheduled = all.filter((i) => i.type === 'SCHEDULED');
      expect(scheduled.map((i) => [i.total, i.status, i.payment_status, i.external_invoice?.external_status, !!i.emailed_at])).toEqual([[1600, 'FINALIZED', 'PAID', 'PAID', true]]);
      return { scheduled: scheduled[0]!, usage: all.filter((i) => i.type === 'USAGE') };
    }, 60_000);
    expect(billed.scheduled.line_items.map((l: Record<string, unknown>) => [l.type, l.name, l.total])).toEqual([['commit_purchase', 'Auto top-up', 1600]]);
    expect(billed.scheduled.start_timestamp).toBe(billed.scheduled.end_timestamp);
    // The period invoice draws on the commit but does not bill its purchase again.
    expect(billed.usage.flatMap((i) => i.line_items).filter((l: Record<string, unknown>) => l.type === 'commit_purchase' && l.name === 'Auto top-up')).toEqual([]);
    expect((await stripe.invoices.list({ customer: s.stripeCustomerId })).data.map((i) => [i.total, i.status, i.metadata?.accrue_invoice_id])).toEqual([[1600, 'paid', billed.scheduled.id]]);
    expect((await mailTo(s.billingEmail)).map((m) => m.subject)).toEqual([`Your invoice of ${billed.scheduled.start_timestamp.slice(0, 10)}: $16.00`]);
    // Voiding it is refused: it is paid (the payments are named first; an unpaid one is refused for
    // its live commit, db/recharge.test.ts), the invoice still FINALIZED.
    const voided = await http(h.app, 'POST', '/v1/invoices/void', { token: h.app.adminToken, body: { id: billed.scheduled.id } });
    expect([voided.status, voided.json.message]).toEqual([409, expect.stringMatching(/has payments "stripe:in_[^"]+" \(1600\)/)]);
    expect(await h.orm.em.fork().execute(`select status from invoice where id = ?`, [billed.scheduled.id])).toEqual([{ status: 'FINALIZED' }]);
    await s.ingest(2); // 2000 − 200 = 1800: above the threshold, nothing more is billed
    for (let round = 0; round < 3; round++) {
      await markDirty(h.orm.em.fork(), [s.customerId]);
      await Promise.all(Array.from({ length: 4 }, () => evaluateDirty(h.orm.em.fork(), { limit: 50 })));
    }
    expect(await recharges(s.contractId)).toHaveLength(1);
    expect(await h.orm.em.fork().execute(`select count(*)::int as n from invoice where customer_id = ? and type = 'SCHEDULED'`, [s.customerId])).toEqual([{ n: 1 }]);
    // Bad configurations: 4xx naming the field, no contract written.
    const current = (await http(h.app, 'POST', '/v1/contracts/get', { token: h.app.adminToken, body: { customer_id: s.customerId, contract_id: s.contractId } })).json.data.current;
    const creditsId = current.prepaid_balance_threshold_configuration.commit.product_id as string;
    const config = { commit: { product_id: creditsId }, is_enabled: true, payment_gate_config: { payment_gate_type: 'STRIPE' }, threshold_amount: 500, recharge_to_amount: 2000 };
    const metered = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const usageProduct = (await h.client.v1.contracts.products.create({ name: uniqueName('Metered'), type: 'USAGE', billable_metric_id: metered.data.id })).data.id;
    const before = await h.orm.em.fork().execute('select count(*)::int as n from contract');
    const spend = await http(h.app, 'POST', '/v1/contracts/create', { token: h.app.adminToken, body: { customer_id: s.customerId, rate_card_id: current.rate_card_id, starting_at: monthStart(1), spend_threshold_configuration: { commit: { product_id: usageProduct }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: 500 } } });
    expect([spend.status, spend.json.field, spend.json.message]).toEqual([400, 'spend_threshold_configuration.commit.product_id', expect.stringMatching(/FIXED or PRO_SERVICE product, got USAGE/)]);
    for (const [change, status, field] of [
      [{ commit: { product_id: usageProduct } }, 400, 'prepaid_balance_threshold_configuration.commit.product_id'],
      [{ commit: { product_id: '00000000-0000-4000-8000-000000000000' } }, 404, 'prepaid_balance_threshold_configuration.commit.product_id'],
      [{ payment_gate_config: { payment_gate_type: 'EXTERNAL' } }, 400, 'prepaid_balance_threshold_configuration.payment_gate_config.payment_gate_type'],
      [{ recharge_to_amount: 500 }, 400, 'prepaid_balance_threshold_configuration.recharge_to_amount'],
      [{ threshold_amount: 10.5 }, 400, 'prepaid_balance_threshold_configuration.threshold_amount'],
      [{ is_enabled: 'yes' }, 400, 'prepaid_balance_threshold_configuration.is_enabled'],
      [{ discount_configuration: { payment_fraction: 0.9 } }, 400, 'prepaid_balance_threshold_configuration.discount_configuration'],
      // invoice_metadata: Stripe's bounds, Accrue's prefix, only on the STRIPE gate's INVOICE payments.
      [{ payment_gate_config: { payment_gate_type: 'STRIPE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: { po: 42 } } } }, 400, 'prepaid_balance_threshold_configuration.payment_gate_config.stripe_config.invoice_metadata.po'],
      [{ payment_gate_config: { payment_gate_type: 'STRIPE', stripe_config: { payment_type: 'PAYMENT_INTENT', invoice_metadata: { po: '42' } } } }, 400, 'prepaid_balance_threshold_configuration.payment_gate_config.stripe_config.invoice_metadata'],
      [{ payment_gate_config: { payment_gate_type: 'NONE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: { po: '42' } } } }, 400, 'prepaid_balance_threshold_configuration.payment_gate_config.stripe_config.invoice_metadata'],
      [{ payment_gate_config: { payment_gate_type: 'STRIPE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: Object.fromEntries(Array.from({ length: 48 }, (_, i) => [`k${i}`, 'v'])) } } }, 400, 'prepaid_balance_threshold_configuration.payment_gate_config.stripe_config.invoice_metadata'],
      [{ payment_gate_config: { payment_gate_type: 'STRIPE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: { accrue_contract_id: 'mine' } } } }, 400, 'prepaid_balance_threshold_configuration.payment_gate_config.stripe_config.invoice_metadata.accrue_contract_id'],
    ] as const) {
      const bad = await http(h.app, 'POST', '/v1/contracts/create', { token: h.app.adminToken, body: { customer_id: s.customerId, rate_card_id: current.rate_card_id, starting_at: monthStart(1), prepaid_balance_threshold_configuration: { ...config, ...change } } });
      expect([bad.status, bad.json.field]).toEqual([status, field]);
    }
    expect(await h.orm.em.fork().execute('select count(*)::int as n from contract')).toEqual(before);
  });

  test('a payment-gated commit takes effect once paid through Stripe; declined, it never does', async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await h.client.v1.contracts.products.create({ name: uniqueName('Calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const credits = await h.client.v1.contracts.products.create({ name: uniqueName('Credits'), type: 'FIXED' });
    const rateCard = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: rateCard.data.id, product_id: calls.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-1) });
    const contractFor = async (card: 'pays' | 'declines' | 'no config', stripeConfig?: Record<string, unknown>) => {
      const customer = await h.client.v1.customers.create({ name: 'Gated Co', ingest_aliases: [uniqueName('gated')] } as Metronome.V1.CustomerCreateParams);
      const stripeCustomerId = card === 'no config' ? undefined : await stripeCustomer(stripe, card);
      if (stripeCustomerId) await h.client.v1.customers.billingConfig.create({ customer_id: customer.data.id, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId });
      const res = await http(h.app, 'POST', '/v1/contracts/create', {
        token: h.app.adminToken,
        body: {
          customer_id: customer.data.id, rate_card_id: rateCard.data.id, starting_at: monthStart(0),
          commits: [{
            type: 'PREPAID', product_id: credits.data.id, name: 'Paid credits', payment_gate_config: { payment_gate_type: 'STRIPE', ...(stripeConfig ? { stripe_config: stripeConfig } : {}) },
            access_schedule: { schedule_items: [{ amount: 5000, starting_at: monthStart(0), ending_before: monthStart(12) }] },
            invoice_schedule: { schedule_items: [{ amount: 4500, timestamp: monthStart(0) }] }, // bought at a discount
          }],
        },
      });
      return { customerId: customer.data.id, stripeCustomerId, res };
    };
    const gated = async (customerId: string) => h.orm.em.fork().execute<{ amount: string; status: string }[]>('select amount::text as amount, status from gated_commit where customer_id = ?', [customerId]);
    const granted = async (customerId: string) => h.orm.em.fork().execute<{ name: string; invoiced: boolean }[]>(`select name, invoice_schedule is not null as invoiced from balance_grant where customer_id = ?`, [customerId]);

    const metadata = { po_number: 'PO-2231', 'order.ref': 'Q3 — renewal' };
    const paid = await contractFor('pays', { payment_type: 'INVOICE', invoice_metadata: metadata });
    expect(paid.res.status).toBe(200);
    await eventually('the commit granted once paid', async () => expect(await gated(paid.customerId)).toEqual([{ amount: '4500', status: 'GRANTED' }]), 60_000);
    expect(await granted(paid.customerId)).toEqual([{ name: 'Paid credits', invoiced: false }]); // paid through Stripe, not billed again on an invoice
    const [paidInvoice, ...others] = (await stripe.invoices.list({ customer: paid.stripeCustomerId! })).data;
    expect([paidInvoice?.total, paidInvoice?.status, others.length]).toEqual([4500, 'paid', 0]);
    const [commit] = await h.orm.em.fork().execute<{ id: string }[]>('select id::text as id from balance_grant where customer_id = ?', [paid.customerId]);
    // The gate's invoice_metadata and Accrue's keys, exactly, on the Stripe invoice.
    expect((await stripe.invoices.retrieve(paidInvoice!.id!)).metadata).toEqual({ ...metadata, accrue_commit: commit!.id, accrue_contract_id: (paid.res.json.data as { id: string }).id, accrue_customer_id: paid.customerId });
    expect(await gateNotices(paid.customerId)).toEqual([['paid', 4500]]);

    const declined = await contractFor('declines');
    expect(declined.res.status).toBe(200);
    await eventually('the commit refused', async () => expect(await gated(declined.customerId)).toEqual([{ amount: '4500', status: 'FAILED' }]), 60_000);
    expect(await granted(declined.customerId)).toEqual([]);
    expect(await gateNotices(declined.customerId)).toEqual([['failed', 4500]]);

    const unconfigured = await contractFor('no config');
    expect([unconfigured.res.status, unconfigured.res.json.field]).toEqual([400, 'commits[0].payment_gate_config.payment_gate_type']);
    expect(await gated(unconfigured.customerId)).toEqual([]);

    // Bad invoice_metadata: a 400 naming the field, nothing stored, nothing sent to Stripe.
    const sc = 'commits[0].payment_gate_config.stripe_config';
    for (const [stripeConfig, field] of [
      [{ payment_type: 'INVOICE', invoice_metadata: { po: 42 } }, `${sc}.invoice_metadata.po`],
      [{ payment_type: 'INVOICE', invoice_metadata: ['po'] }, `${sc}.invoice_metadata`],
      [{ payment_type: 'PAYMENT_INTENT', invoice_metadata: { po: '42' } }, `${sc}.invoice_metadata`],
      [{ payment_type: 'INVOICE', invoice_metadata: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v'])) }, `${sc}.invoice_metadata`],
      [{ payment_type: 'INVOICE', invoice_metadata: { ['k'.repeat(41)]: 'v' } }, `${sc}.invoice_metadata.${'k'.repeat(41)}`],
      [{ payment_type: 'INVOICE', invoice_metadata: { 'a[b]': 'v' } }, `${sc}.invoice_metadata.a[b]`],
      [{ payment_type: 'INVOICE', invoice_metadata: { po: 'x'.repeat(501) } }, `${sc}.invoice_metadata.po`],
      [{ payment_type: 'INVOICE', invoice_metadata: { po: '' } }, `${sc}.invoice_metadata.po`],
      [{ payment_type: 'INVOICE', invoice_metadata: { accrue_commit: 'mine' } }, `${sc}.invoice_metadata.accrue_commit`],
    ] as const) {
      const bad = await contractFor('pays', stripeConfig);
      expect([bad.res.status, bad.res.json.field]).toEqual([400, field]);
      expect(await gated(bad.customerId)).toEqual([]);
      expect(await h.orm.em.fork().execute('select count(*)::int as n from contract where customer_id = ?', [bad.customerId])).toEqual([{ n: 0 }]);
      expect((await stripe.invoices.list({ customer: bad.stripeCustomerId! })).data).toEqual([]);
    }
    // At the bounds: 47 keys (Stripe's 50 less Accrue's 3), a 40-character key, a 500-character value.
    const full = Object.fromEntries(Array.from({ length: 46 }, (_, i) => [`k${i}`, 'v']));
    const bounds = await contractFor('pays', { invoice_metadata: { ...full, ['k'.repeat(40)]: 'x'.repeat(500) } });
    expect(bounds.res.status).toBe(200);
    await eventually('the commit at the bounds granted once paid', async () => expect(await gated(bounds.customerId)).toEqual([{ amount: '4500', status: 'GRANTED' }]), 60_000);
    const [atBounds] = (await stripe.invoices.list({ customer: bounds.stripeCustomerId! })).data;
    expect(Object.keys(atBounds!.metadata!)).toHaveLength(50);
    expect(atBounds!.metadata!['k'.repeat(40)]).toBe('x'.repeat(500));
  });

  test('spend threshold: what the period owes reaching the threshold is billed through Stripe at once, and the period invoice nets it out', async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await h.client.v1.contracts.products.create({ name: uniqueName('Calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const billed = await h.client.v1.contracts.products.create({ name: uniqueName('Threshold'), type: 'FIXED' });
    const rateCard = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: rateCard.data.id, product_id: calls.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-1) });
    const alias = uniqueName('spend');
    const customer = await h.client.v1.customers.create({ name: 'Postpaid Co', ingest_aliases: [alias] } as Metronome.V1.CustomerCreateParams);
    const stripeCustomerId = await stripeCustomer(stripe, 'pays');
    await h.client.v1.customers.billingConfig.create({ customer_id: customer.data.id, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId });
    const contract = await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: rateCard.data.id, starting_at: monthStart(0),
      spend_threshold_configuration: {
        commit: { product_id: billed.data.id, name: 'Threshold billing' }, is_enabled: true, threshold_amount: 500,
        payment_gate_config: { payment_gate_type: 'STRIPE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: { billing_contact: 'ap@postpaid.example' } } },
      },
      // A charge no commit draws down: it is owed, but it does not call for threshold billing again and again.
      scheduled_charges: [{ name: 'Setup fee', product_id: billed.data.id, schedule: { schedule_items: [{ timestamp: monthStart(0), amount: 2000 }] } }],
    } as unknown as Metronome.V1.ContractCreateParams);
    const ingest = (from: number, count: number) => h.client.v1.usage.ingest({ usage: Array.from({ length: count }, (_, i) => ({ transaction_id: `${alias}-${from + i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.now() - 1000).toISOString() })) });
    await ingest(0, 4); // owes 400
    await new Promise((r) => setTimeout(r, 2000));
    expect(await h.orm.em.fork().execute('select count(*)::int as n from recharge where contract_id = ?', [contract.data.id])).toEqual([{ n: 0 }]);
    await ingest(4, 2); // owes 600
    await eventually('the threshold billed', async () => expect(await h.orm.em.fork().execute('select kind, n, amount::text as amount, balance_before::text as owed, status from recharge where contract_id = ?', [contract.data.id]))
      .toEqual([{ kind: 'spend', n: 1, amount: '500', owed: '600', status: 'GRANTED' }]), 60_000); // the usage, not the fee

    const spendInvoices = (await stripe.invoices.list({ customer: stripeCustomerId })).data;
    expect(spendInvoices.map((i) => [i.total, i.status, i.metadata?.accrue_spend_threshold])).toEqual([[500, 'paid', `${contract.data.id}:1`]]);
    expect((await stripe.invoices.retrieve(spendInvoices[0]!.id!)).metadata).toEqual({ billing_contact: 'ap@postpaid.example', accrue_spend_threshold: `${contract.data.id}:1`, accrue_contract_id: contract.data.id, accrue_customer_id: customer.data.id });
    await eventually('the period invoice owes what was not billed yet', async () => {
      const current = (await h.client.v1.customers.invoices.list({ customer_id: customer.data.id })).data.find((i) => i.start_timestamp === monthStart(0))!;
      expect(current.total).toBe(2000 + 600 - 500);
    });
    // Evaluated again (new usage under the threshold): still one charge, though 2,100 is owed.
    await ingest(6, 1);
    await new Promise((r) => setTimeout(r, 3000));
    expect(await h.orm.em.fork().execute('select count(*)::int as n from recharge where contract_id = ?', [contract.data.id])).toEqual([{ n: 1 }]);
    const got = await http(h.app, 'POST', '/v1/contracts/get', { token: h.app.adminToken, body: { customer_id: customer.data.id, contract_id: contract.data.id } });
    expect(got.json.data.current.spend_threshold_configuration).toMatchObject({ threshold_amount: 500, is_enabled: true, payment_gate_config: { payment_gate_type: 'STRIPE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: { billing_contact: 'ap@postpaid.example' } } } });
  });
});
