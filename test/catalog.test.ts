import type Metronome from '@metronome/sdk';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, uniqueName } from './stack.js';

/**
 * The product catalog and rate cards through @metronome/sdk: versioned product updates, list and
 * archive filters, rate card update/list/archive, rate validation by product type, customer-level
 * commits with uniqueness keys, and presentation groups splitting invoice lines.
 */
describe('catalog: products, rate cards, customer commits', () => {
  const h = useSdkApp('catalog');

  test('products are versioned, listed and archived', async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: 'gpu', aggregation_type: 'SUM', aggregation_key: 'seconds', group_keys: [['region', 'gpu']] });
    const p = await h.client.v1.contracts.products.create({ name: 'GPU time', type: 'USAGE', billable_metric_id: metric.data.id, pricing_group_key: ['gpu'], presentation_group_key: ['region'] });
    const future = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 30 * 86_400_000).toISOString();
    await h.client.v1.contracts.products.update({ product_id: p.data.id, starting_at: future, name: 'GPU hours', quantity_conversion: { conversion_factor: 3600, operation: 'DIVIDE' } });
    const got = (await h.client.v1.contracts.products.retrieve({ id: p.data.id })).data;
    // The update is scheduled: current is still the initial state; updates lists it.
    expect([got.current.name, got.initial.name, got.updates.map((u) => [u.name, u.starting_at])]).toEqual(['GPU time', 'GPU time', [['GPU hours', future]]]);
    const badUpdate = await http(h.app, 'POST', '/v1/contract-pricing/products/update', { token: h.app.adminToken, body: { product_id: p.data.id, starting_at: future, composite_tags: ['x'] } });
    expect([badUpdate.status, badUpdate.json.field]).toEqual([400, 'composite_tags']);
    const badKeys = await http(h.app, 'POST', '/v1/contract-pricing/products/create', { token: h.app.adminToken, body: { name: 'x', type: 'USAGE', billable_metric_id: metric.data.id, pricing_group_key: ['zone'] } });
    expect([badKeys.status, badKeys.json.field]).toEqual([400, 'pricing_group_key']);

    const other = await h.client.v1.contracts.products.create({ name: 'Support', type: 'FIXED' });
    await h.client.v1.contracts.products.archive({ product_id: other.data.id });
    const ids = async (archive_filter?: 'ARCHIVED' | 'NOT_ARCHIVED' | 'ALL') => {
      const out: string[] = [];
      for await (const item of h.client.v1.contracts.products.list({ limit: 1, ...(archive_filter ? { archive_filter } : {}) })) out.push(item.id);
      return out;
    };
    expect(await ids()).toEqual([p.data.id]);
    expect(await ids('ARCHIVED')).toEqual([other.data.id]);
    expect((await ids('ALL')).sort()).toEqual([p.data.id, other.data.id].sort());

    // Rate cards: update, list (paged by the SDK), archive; rates must fit their product.
    const card = await h.client.v1.contracts.rateCards.create({ name: 'Cloud', description: 'list prices' });
    await h.client.v1.contracts.rateCards.update({ rate_card_id: card.data.id, name: 'Cloud 2026', aliases: [{ name: 'cloud' }] });
    const c = (await h.client.v1.contracts.rateCards.retrieve({ id: card.data.id })).data;
    expect([c.name, c.description, c.aliases]).toEqual(['Cloud 2026', 'list prices', [{ name: 'cloud' }]]);
    const rate = (body: object) => http(h.app, 'POST', '/v1/contract-pricing/rate-cards/addRate', { token: h.app.adminToken, body: { rate_card_id: card.data.id, product_id: p.data.id, entitled: true, starting_at: monthStart(0), ...body } });
    expect((await rate({ rate_type: 'PERCENTAGE', price: 0.1 })).json.field).toBe('rate_type'); // not for USAGE products
    expect((await rate({ rate_type: 'FLAT', price: 1, pricing_group_values: { zone: 'eu' } })).json.field).toBe('pricing_group_values.zone');
    expect((await rate({ rate_type: 'VOLUME', tiers: [{ size: 10, price: 2 }, { size: 0, price: 1 }] })).json.field).toBe('tiers[1].size');
    expect((await rate({ rate_type: 'FLAT', price: 1, product_id: other.data.id })).json.field).toBe('product_id'); // archived
    expect((await rate({ rate_type: 'PACKAGE', price: 500, package_size: 1000, package_rounding: 'DOWN', pricing_group_values: { gpu: 'h100' } })).status).toBe(200);
    const listed: string[] = [];
    for await (const rc of h.client.v1.contracts.rateCards.list({ limit: 1 })) listed.push(rc.id);
    expect(listed).toContain(card.data.id);
    const spare = await h.client.v1.contracts.rateCards.create({ name: 'Spare' });
    await h.client.v1.contracts.rateCards.archive({ id: spare.data.id });
    const archivedRate = await http(h.app, 'POST', '/v1/contract-pricing/rate-cards/addRate', { token: h.app.adminToken, body: { rate_card_id: spare.data.id, product_id: p.data.id, entitled: true, rate_type: 'FLAT', price: 1, starting_at: monthStart(0) } });
    expect([archivedRate.status, archivedRate.json.field]).toEqual([400, 'rate_card_id']);
  });

  test('presentation groups split lines; customer commits are unique by key and listed', async () => {
    const alias = uniqueName('gpu');
    const customer = await h.client.v1.customers.create({ name: 'GPU Co', ingest_aliases: [alias] });
    const metric = await h.client.v1.billableMetrics.create({ name: 'gpu2', aggregation_type: 'SUM', aggregation_key: 'seconds', group_keys: [['region']] });
    const p = await h.client.v1.contracts.products.create({ name: 'GPU seconds', type: 'USAGE', billable_metric_id: metric.data.id, presentation_group_key: ['region'] });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Commit', type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'gpu' });
    const start = monthStart(0);
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: p.data.id, entitled: true, rate_type: 'FLAT', price: 2, starting_at: start });
    const contract = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: start });
    const ts = new Date(Date.parse(start) + 60_000).toISOString();
    await h.client.v1.usage.ingest({ usage: [['eu', 10], ['us', 5], ['eu', 1]].map(([region, seconds], i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'x', timestamp: ts, properties: { region, seconds } })) });

    const key = uniqueName('po');
    const commit = { customer_id: customer.data.id, type: 'PREPAID' as const, priority: 1, product_id: fixed.data.id, name: 'PO 42', uniqueness_key: key, invoice_contract_id: contract.data.id,
      access_schedule: { schedule_items: [{ amount: 10, starting_at: start, ending_before: monthStart(1) }] }, invoice_schedule: { schedule_items: [{ timestamp: start, unit_price: 4, quantity: 2 }] } };
    const created = await h.client.v1.customers.commits.create(commit);
    expect((await http(h.app, 'POST', '/v1/contracts/customerCommits/create', { token: h.app.adminToken, body: commit })).status).toBe(409);
    const noContract = await http(h.app, 'POST', '/v1/contracts/customerCommits/create', { token: h.app.adminToken, body: { ...commit, uniqueness_key: undefined, invoice_contract_id: undefined } });
    expect([noContract.status, noContract.json.field]).toEqual([400, 'invoice_contract_id']);
    const commits = await h.client.v1.customers.commits.list({ customer_id: customer.data.id, include_balance: true });
    expect(commits.data.map((c) => [c.id, c.type, c.invoice_schedule?.schedule_items?.map((i) => [i.amount, i.quantity, i.unit_price])])).toEqual([[created.data.id, 'PREPAID', [[8, 2, 4]]]]);

    type Line = { type: string; name: string; total: number; presentation_group_values?: Record<string, string> };
    const draft = await eventually('usage in the draft', async () => {
      const inv = (await h.client.v1.customers.invoices.list({ customer_id: customer.data.id })).data[0] as Metronome.V1.Customers.Invoice;
      if ((inv.line_items as Line[]).filter((l) => l.type === 'usage').length !== 2) throw new Error('not rated yet');
      return inv;
    });
    // Each region is its own line (11 s in eu, 5 s in us at 2); the commit purchase (2 × 4) is billed; the commit covers 10.
    expect((draft.line_items as Line[]).map((l) => [l.type, l.name, l.presentation_group_values?.region ?? '', l.total])).toEqual([
      ['usage', 'GPU seconds', 'eu', 22], ['usage', 'GPU seconds', 'us', 10], ['commit_purchase', 'PO 42', '', 8], ['applied_commit_or_credit', 'PO 42', '', -10],
    ]);
    expect(draft.total).toBe(30);

    // A second contract of the same customer: the customer-level commit is drawn once across both
    // contracts' drafts, never twice.
    await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: start });
    const both = await eventually('both drafts', async () => {
      const invs = (await h.client.v1.customers.invoices.list({ customer_id: customer.data.id })).data;
      if (invs.length !== 2) throw new Error(`${invs.length} invoices`);
      return invs;
    });
    const applied = both.flatMap((i) => (i.line_items as Line[]).filter((l) => l.type === 'applied_commit_or_credit').map((l) => l.total));
    expect(applied).toEqual([-10]);
    expect((await h.client.v1.contracts.getNetBalance({ customer_id: customer.data.id })).data.balance).toBe(0);
  });
});
