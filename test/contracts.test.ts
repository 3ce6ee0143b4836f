import Metronome from '@metronome/sdk';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { reconcile } from '../db/reconcile.js';
import { ROOT } from '../stack/config.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, uniqueName } from './stack.js';

/**
 * Pricing and contracts end to end through @metronome/sdk: a rate card with pricing groups, a
 * graduated tier, a subscription, a composite product and a scheduled price change; a backdated
 * contract with a prepaid commit (restricted to one product, running out mid-period), a trial
 * credit, a multiplier override on one pricing group and a scheduled charge; usage ingested;
 * drafts read line by line to the cent; periods closed and frozen exactly as drafted; the
 * balance ledger and net balance, with a customer-level credit drawn by the live draft.
 */
describe('contracts: rate card + contract terms + commits and credits, to the cent', () => {
  const h = useSdkApp('contracts');

  test('draft lines, frozen invoices and the ledger agree to the cent', async () => {
    const p0 = monthStart(-2);
    const p1 = monthStart(-1);
    const p2 = monthStart(0);
    const p3 = monthStart(1);
    const at = (base: string, hours: number) => new Date(Date.parse(base) + hours * 3_600_000).toISOString();
    const alias = uniqueName('lab');
    const customer = await h.client.v1.customers.create({ name: 'Lab Inc', ingest_aliases: [alias] });
    const metric = await h.client.v1.billableMetrics.create({ name: 'tokens', aggregation_type: 'SUM', aggregation_key: 'tokens', event_type_filter: { in_values: ['llm'] }, group_keys: [['model']] });

    // Products: usage priced per model, seats, a composite support fee, a fixed product for commits and charges.
    const tokens = await h.client.v1.contracts.products.create({ name: 'Tokens', type: 'USAGE', billable_metric_id: metric.data.id, pricing_group_key: ['model'], tags: ['ai'] });
    const seats = await h.client.v1.contracts.products.create({ name: 'Seats', type: 'SUBSCRIPTION' });
    const support = await h.client.v1.contracts.products.create({ name: 'Support', type: 'COMPOSITE', composite_tags: ['ai'] });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Platform', type: 'FIXED' });
    const product = await h.client.v1.contracts.products.retrieve({ id: tokens.data.id });
    expect(product.data).toMatchObject({ id: tokens.data.id, type: 'USAGE', current: { name: 'Tokens', pricing_group_key: ['model'], tags: ['ai'] }, updates: [] });

    const card = await h.client.v1.contracts.rateCards.create({ name: 'AI list prices', aliases: [{ name: uniqueName('list') }] });
    await h.client.v1.contracts.rateCards.rates.addMany({
      rate_card_id: card.data.id,
      rates: [
        { product_id: tokens.data.id, entitled: true, rate_type: 'FLAT', price: 1, starting_at: p0, pricing_group_values: { model: 'small' } },
        { product_id: tokens.data.id, entitled: true, rate_type: 'TIERED', tiers: [{ size: 1000, price: 2 }, { price: 1 }], starting_at: p0, pricing_group_values: { model: 'large' } },
        { product_id: seats.data.id, entitled: true, rate_type: 'SUBSCRIPTION', price: 3000, quantity: 2, is_prorated: true, starting_at: p0 },
        { product_id: support.data.id, entitled: true, rate_type: 'PERCENTAGE', price: 0.1, starting_at: p0 },
      ],
    });
    // A price change for small models, half-way through period 1 (a new rate from that moment).
    const change = at(p1, 14 * 24);
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: tokens.data.id, entitled: true, rate_type: 'FLAT', price: 2, starting_at: change, pricing_group_values: { model: 'small' } });
    const schedule = await h.client.v1.contracts.rateCards.retrieveRateSchedule({ rate_card_id: card.data.id, starting_at: p1, ending_before: p2, selectors: [{ product_id: tokens.data.id, pricing_group_values: { model: 'small' } }] });
    expect(schedule.data.map((e) => [e.starting_at, e.ending_before, e.rate.price])).toEqual([[p1, change, 1], [change, p2, 2]]);
    const atRates = await h.client.v1.contracts.rateCards.rates.list({ rate_card_id: card.data.id, at: at(p1, 1), selectors: [{ product_tags: ['ai'] }] });
    expect(atRates.data.map((e) => [e.pricing_group_values?.model, e.rate.rate_type]).sort()).toEqual([['large', 'TIERED'], ['small', 'FLAT']]);

    const contract = await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p0, name: 'Lab 2026',
      uniqueness_key: uniqueName('deal'),
      commits: [{
        type: 'PREPAID', name: 'Prepaid tokens', product_id: fixed.data.id, priority: 2, applicable_product_ids: [tokens.data.id],
        access_schedule: { schedule_items: [{ amount: 3500, starting_at: p0, ending_before: p2 }] },
        invoice_schedule: { schedule_items: [{ timestamp: p0, amount: 3000 }] },
      }],
      credits: [{ name: 'Trial credit', product_id: fixed.data.id, priority: 1, access_schedule: { schedule_items: [{ amount: 500, starting_at: p0, ending_before: p2 }] } }],
      overrides: [{ starting_at: p1, type: 'MULTIPLIER', multiplier: 0.5, override_specifiers: [{ product_id: tokens.data.id, pricing_group_values: { model: 'large' } }] }],
      scheduled_charges: [{ name: 'Onboarding', product_id: fixed.data.id, schedule: { schedule_items: [{ timestamp: p0, amount: 10000 }] } }],
    });
    // uniqueness_key: reuse is a 409 and creates nothing.
    const got = await h.client.v1.contracts.retrieve({ customer_id: customer.data.id, contract_id: contract.data.id });
    expect(got.data.current).toMatchObject({ name: 'Lab 2026', rate_card_id: card.data.id, starting_at: p0 });
    expect(got.data.current.commits.map((c) => [c.type, c.name, c.access_schedule?.schedule_items[0]?.amount])).toEqual([['PREPAID', 'Prepaid tokens', 3500]]);
    const dup = await http(h.app, 'POST', '/v1/contracts/create', { token: h.app.adminToken, body: { customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p0, uniqueness_key: got.data.uniqueness_key } });
    expect(dup.status).toBe(409);
    const rateNow = await h.client.v1.contracts.retrieveRateSchedule({ customer_id: customer.data.id, contract_id: contract.data.id, at: at(p1, 1), selectors: [{ product_id: tokens.data.id, pricing_group_values: { model: 'large' } }] });
    expect(rateNow.data.map((e) => [e.list_rate.tiers, e.override_rate?.tiers])).toEqual([[[{ size: 1000, price: 2 }, { price: 1 }], [{ size: 1000, price: 1 }, { price: 0.5 }]]]);

    const ev = (id: string, ts: string, model: string, n: number) => ({ transaction_id: `${alias}-${id}`, customer_id: alias, event_type: 'llm', timestamp: ts, properties: { tokens: n, model } });
    await h.client.v1.usage.ingest({
      usage: [
        ev('a', at(p0, 3), 'small', 300), ev('b', at(p0, 4), 'large', 1500),
        ev('c', at(p1, 1), 'small', 100), ev('d', at(p1, 2), 'large', 1200), ev('e', at(p1, 20 * 24), 'small', 100),
        ev('f', at(p2, 0.5), 'small', 7),
      ],
    });

    type Line = { type: string; name: string; total: number; quantity?: number; pricing_group_values?: Record<string, string> };
    const lines = (inv: Metronome.V1.Customers.Invoice) => (inv.line_items as Line[]).map((l) => [l.type, l.name, l.pricing_group_values?.model ?? '', l.total]);
    const expected0 = [
      ['subscription', 'Seats', '', 6000],
      ['usage', 'Tokens', 'large', 2500], // 1000 × 2 + 500 × 1
      ['usage', 'Tokens', 'small', 300],
      ['usage', 'Support', '', 280], // 10 % of 2800
      ['scheduled', 'Onboarding', '', 10000],
      ['commit_purchase', 'Prepaid tokens', '', 3000],
      ['applied_commit_or_credit', 'Trial credit', '', -500], // priority 1: first, on the first line
      ['applied_commit_or_credit', 'Prepaid tokens', '', -2800], // only the Tokens lines
    ];
    const expected1 = [
      ['subscription', 'Seats', '', 6000],
      ['usage', 'Tokens', 'large', 1100], // × 0.5 from p1: 1000 × 1 + 200 × 0.5
      ['usage', 'Tokens', 'small', 100], // before the change, at 1
      ['usage', 'Tokens', 'small', 200], // after the change, at 2
      ['usage', 'Support', '', 140],
      ['applied_commit_or_credit', 'Prepaid tokens', '', -700], // what is left of 3500 runs out on the first Tokens line
    ];
    const drafts = await eventually('usage rated into the drafts', async () => {
      const page = await h.client.v1.customers.invoices.list({ customer_id: customer.data.id, contract_id: contract.data.id });
      const invs = page.data;
      if (invs.length !== 3 || JSON.stringify(lines(invs[0]!)) !== JSON.stringify(expected0) || JSON.stringify(lines(invs[1]!)) !== JSON.stringify(expected1)) {
        throw new Error(`not yet: ${JSON.stringify(invs.map(lines))}`);
      }
      return invs;
    });
    expect(drafts.map((i) => [i.start_timestamp, i.total, i.subtotal])).toEqual([[p0, 18780, 22080], [p1, 6840, 7540], [p2, 6015, 6015]]); // seats 6000 + 7 small tokens at 2 + 10 % of 14 = 1.4 → 1
    for (const inv of drafts) expect(inv.total).toBe((inv.line_items as Line[]).reduce((a, l) => a + l.total, 0));

    // A customer-level credit for the current period is drawn by the live draft.
    const credit = await h.client.v1.customers.credits.create({ customer_id: customer.data.id, name: 'Goodwill', priority: 5, product_id: fixed.data.id, access_schedule: { schedule_items: [{ amount: 1000, starting_at: p2, ending_before: p3 }] } });
    const current = await h.client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: drafts[2]!.id });
    expect(current.data.total).toBe(5015);
    expect(lines(current.data).at(-1)).toEqual(['applied_commit_or_credit', 'Goodwill', '', -1000]);
    const net = await h.client.v1.contracts.getNetBalance({ customer_id: customer.data.id });
    expect(net.data.balance).toBe(0); // the draft drew it all
    const netFinal = await h.client.v1.contracts.getNetBalance({ customer_id: customer.data.id, invoice_inclusion_mode: 'FINALIZED' });
    expect(netFinal.data.balance).toBe(1000);

    // The past periods close (1 s grace) and freeze exactly what the drafts showed.
    const frozen = await eventually('both past periods frozen', async () => {
      const page = await h.client.v1.customers.invoices.list({ customer_id: customer.data.id, contract_id: contract.data.id });
      const f = page.data.filter((i) => (i as unknown as { approval_status: string }).approval_status === 'PENDING_APPROVAL');
      if (f.length !== 2) throw new Error(`${f.length} frozen`);
      return f;
    });
    expect(frozen.map((i) => [i.id, lines(i), i.total])).toEqual([[drafts[0]!.id, expected0, 18780], [drafts[1]!.id, expected1, 6840]]);
    const approved = await http(h.app, 'POST', `/v1/invoices/${drafts[0]!.id}/approve`, { token: h.app.adminToken, body: { total: 18780 } });
    expect(approved.json.data).toMatchObject({ status: "FINALIZED", total: 18780 });

    // The ledger: each commit and credit, with one entry per invoice that drew from it.
    const balances = await h.client.v1.contracts.listBalances({ customer_id: customer.data.id, include_contract_balances: true, include_ledgers: true, include_balance: true });
    const byName = new Map(balances.data.map((b) => [b.name, b]));
    const ledger = (name: string) => (byName.get(name)!.ledger as { type: string; amount: number; invoice_id?: string }[]).map((e) => [e.type, e.amount, e.invoice_id ?? null]);
    expect(ledger('Prepaid tokens')).toEqual([
      ['PREPAID_COMMIT_SEGMENT_START', 3500, null],
      ['PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION', -2800, drafts[0]!.id],
      ['PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION', -700, drafts[1]!.id],
    ]);
    expect(ledger('Trial credit')).toEqual([['CREDIT_SEGMENT_START', 500, null], ['CREDIT_AUTOMATED_INVOICE_DEDUCTION', -500, drafts[0]!.id]]);
    expect(ledger('Goodwill')).toEqual([['CREDIT_SEGMENT_START', 1000, null], ['CREDIT_AUTOMATED_INVOICE_DEDUCTION', -1000, drafts[2]!.id]]);
    expect([...byName.values()].map((b) => [b.name, b.balance]).sort()).toEqual([['Goodwill', 0], ['Prepaid tokens', 0], ['Trial credit', 0]]);
    const customerOnly = await h.client.v1.customers.credits.list({ customer_id: customer.data.id });
    expect(customerOnly.data.map((c) => c.id)).toEqual([credit.data.id]);

    // Void the finalized invoice: its draw-downs come back (cancelled in the ledger); regenerate
    // it: a new invoice for the same period, computed now, closed by its own workflow.
    expect((await http(h.app, 'POST', '/v1/invoices/void', { token: h.app.adminToken, body: { id: drafts[1]!.id } })).status).toBe(409); // pending: reject it instead
    expect((await http(h.app, 'POST', '/v1/invoices/regenerate', { token: h.app.adminToken, body: { id: drafts[0]!.id } })).status).toBe(409); // not void
    const voided = await h.client.v1.invoices.void({ id: drafts[0]!.id });
    expect(voided.data?.id).toBe(drafts[0]!.id);
    const afterVoid = await h.client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: drafts[0]!.id });
    expect([afterVoid.data.status, afterVoid.data.total, afterVoid.data.line_items.length]).toEqual(['VOID', 18780, 8]);
    const commitAfterVoid = (await h.client.v1.contracts.listBalances({ customer_id: customer.data.id, include_contract_balances: true, include_ledgers: true })).data.find((b) => b.name === 'Prepaid tokens')!;
    expect((commitAfterVoid.ledger as { type: string; amount: number }[]).filter((e) => e.type === 'PREPAID_COMMIT_CANCELED').map((e) => e.amount)).toEqual([2800]);
    const regenerated = await h.client.v1.invoices.regenerate({ id: drafts[0]!.id });
    expect(regenerated.data?.id).not.toBe(drafts[0]!.id);
    expect((await h.client.v1.invoices.regenerate({ id: drafts[0]!.id })).data?.id).toBe(regenerated.data!.id); // repeatable
    const newInv = await h.client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: regenerated.data!.id });
    expect([newInv.data.status, newInv.data.regenerated_from_invoice_id, newInv.data.total, lines(newInv.data)]).toEqual(['DRAFT', drafts[0]!.id, 18780, expected0]);
    const approvedAgain = await eventually('the regenerated invoice awaiting approval', async () => {
      const r = await http(h.app, 'POST', `/v1/invoices/${regenerated.data!.id}/approve`, { token: h.app.adminToken, body: { total: 18780 } });
      if (r.status !== 200) throw new Error(`${r.status} ${r.text}`);
      return r.json.data;
    });
    expect(approvedAgain).toMatchObject({ status: 'FINALIZED', total: 18780, regenerated_from_invoice_id: drafts[0]!.id });

    // Late usage for the finalized period: it never changes; the difference (50 small tokens at 1,
    // and 10 % more support: 5) is billed as a correction of each changed line on the next open
    // invoice, the current draft.
    await h.client.v1.usage.ingest({ usage: [ev('late', at(p0, 9), 'small', 50)] });
    const corrected = await eventually('the correction on the open invoice', async () => {
      const inv = (await h.client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: drafts[2]!.id })).data;
      if (!lines(inv).some((l) => l[0] === 'correction')) throw new Error('no correction yet');
      return inv;
    });
    expect(lines(corrected)).toEqual([
      ['subscription', 'Seats', '', 6000], ['usage', 'Tokens', 'small', 14], ['usage', 'Support', '', 1],
      ['correction', `Correction for ${p0.slice(0, 10)} – ${p1.slice(0, 10)}: Tokens`, 'small', 50],
      ['correction', `Correction for ${p0.slice(0, 10)} – ${p1.slice(0, 10)}: Support`, '', 5],
      ['applied_commit_or_credit', 'Goodwill', '', -1000],
    ]);
    expect(corrected.total).toBe(5070);
    expect((await h.client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: regenerated.data!.id })).data.total).toBe(18780); // finalized: unchanged

    // Breakdowns: period 1 by UTC day, each day's usage on its own (the price change shows on its day).
    const days = await h.client.v1.customers.invoices.listBreakdowns({ customer_id: customer.data.id, starting_on: p1, ending_before: p2, window_size: 'DAY' });
    const tokenDays = days.data.filter((d) => d.start_timestamp === p1).map((d) => [d.breakdown_start_timestamp, (d.line_items as Line[]).filter((l) => l.name === 'Tokens' && l.quantity).map((l) => [l.pricing_group_values?.model, l.total])])
      .filter(([, ls]) => (ls as unknown[]).length);
    expect(tokenDays).toEqual([[p1, [['large', 1100], ['small', 100]]], [at(p1, 20 * 24), [['small', 200]]]]);
    expect(days.data.filter((d) => d.start_timestamp === p1)).toHaveLength((Date.parse(p2) - Date.parse(p1)) / 86_400_000);
    // The PDF of the regenerated invoice.
    const pdf = await h.client.v1.customers.invoices.retrievePdf({ customer_id: customer.data.id, invoice_id: regenerated.data!.id });
    const pdfText = Buffer.from(await pdf.arrayBuffer()).toString('latin1');
    expect([pdf.headers.get('content-type'), pdfText.slice(0, 5), pdfText.includes('(Total: $187.80) Tj')]).toEqual(['application/pdf', '%PDF-', true]);

    // Reconciliation re-derives every line of the three live invoices from raw events: no drift
    // (the finalized invoice's changed lines are exactly covered by the correction).
    const clean = await reconcile(h.orm.em.fork(), { customerId: customer.data.id });
    expect(clean.invoices.map((i) => [i.status, i.lines, i.drift.length, i.corrected, i.totalVsLines])).toEqual([
      ['FINALIZED', 8, 0, 2, '0'], ['DRAFT', 6, 0, 0, '0'], ['DRAFT', 6, 0, 0, '0'], // the voided one is not billed, so not checked
    ]);
    expect(clean.drifting).toBe(0);
    // A cent of drift in a stored line is found and named, and the command exits 1 on it.
    await h.orm.em.fork().execute(`update invoice set line_items = jsonb_set(line_items, '{1,total}', '"1101"') where id = '${drafts[1]!.id}'`);
    const drifted = await reconcile(h.orm.em.fork(), { customerId: customer.data.id });
    expect(drifted.drifting).toBe(1);
    const bad = drifted.invoices.find((i) => i.drift.length)!;
    expect([bad.invoiceId, bad.drift.map((d) => [d.billed?.total, d.rederived?.total]), bad.totalVsLines]).toEqual([drafts[1]!.id, [['1101', '1100']], '-1']);
    const command = spawnSync(process.execPath, [join(ROOT, 'dist', 'stack', 'reconcile.js'), '--customer', customer.data.id], { env: { ...process.env, DATABASE_URL: h.dbUrl }, encoding: 'utf8' });
    expect(command.status).toBe(1);
    expect(command.stdout).toContain(`DRIFT invoice ${drafts[1]!.id}`);
    expect(command.stdout).toContain('3 invoices checked, 1 with drift');
    // Undo the tamper: the suite ends with every test database reconciling clean (test/global-teardown.mjs).
    await h.orm.em.fork().execute(`update invoice set line_items = jsonb_set(line_items, '{1,total}', '"1100"') where id = '${drafts[1]!.id}'`);
    expect((await reconcile(h.orm.em.fork(), { customerId: customer.data.id })).drifting).toBe(0);
  });

  test('a DIVIDED scheduled charge splits to the cent, and decimals go out exact', async () => {
    const customer = await h.client.v1.customers.create({ name: 'Divided Co' });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Platform fee', type: 'FIXED' });
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const usage = await h.client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'fine prices' });
    const price = '0.12345678901234567891'; // more digits than a double carries
    const added = await http(h.app, 'POST', '/v1/contract-pricing/rate-cards/addRate', { token: h.app.adminToken, body: { rate_card_id: card.data.id, product_id: usage.data.id, entitled: true, rate_type: 'FLAT', price, starting_at: monthStart(0) } });
    expect(added.status).toBe(200);
    const p1 = monthStart(1);
    const contract = await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p1,
      scheduled_charges: [{ name: 'Fee', product_id: fixed.data.id, schedule: { recurring_schedule: { amount_distribution: 'DIVIDED', frequency: 'MONTHLY', starting_at: p1, ending_before: monthStart(4), amount: 1000 } } }],
    } as Metronome.V1.ContractCreateParams);
    const got = await http(h.app, 'POST', '/v1/contracts/get', { token: h.app.adminToken, body: { customer_id: customer.data.id, contract_id: contract.data.id } });
    const items = (got.json.data.current.scheduled_charges[0].schedule.schedule_items as { amount: number; unit_price: number }[]);
    // 1000 in three: the remainder cent goes to the first part; the parts bill exactly 1000.
    expect(items.map((i) => i.amount)).toEqual([334, 333, 333]);
    expect(items.map((i) => i.unit_price)).toEqual([334, 333, 333]);
    // Decimals to the edge: the price goes out with every digit it was stored with.
    const rates = await http(h.app, 'POST', '/v1/contract-pricing/rate-cards/getRates', { token: h.app.adminToken, body: { rate_card_id: card.data.id, at: p1 } });
    expect(rates.status).toBe(200);
    expect(rates.text).toContain(`"price":${price}`);
  });
});
