import type Metronome from '@metronome/sdk';
import { dec, roundAmount } from '../billing/money.js';
import { reconcile } from '../db/reconcile.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, monthStart, uniqueName } from './stack.js';

/**
 * A trial end to end through @metronome/sdk: contracts with a 14-day `trial_spec` starting
 * mid-month, on a card with a graduated tier per pricing group and a prorated subscription; usage
 * inside and after the trial. The period's invoice cuts usage and the subscription at the trial's
 * end and its trial line covers exactly the in-trial part — all of it, or the spending cap.
 */
describe('trial: the in-trial part of an invoice is covered, up to the spending cap', () => {
  const h = useSdkApp('trial');

  test('usage lines cut at the trial end, the trial line covering the in-trial part, capped with a spending cap; reconciliation clean', async () => {
    const p0 = monthStart(-1);
    const p1 = monthStart(0);
    const DAY = 86_400_000;
    const at = (days: number) => new Date(Date.parse(p0) + days * DAY).toISOString();
    const start = at(10); // mid-month
    const trialEnd = at(24); // 14 days later, before the month ends
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('tokens'), aggregation_type: 'SUM', aggregation_key: 'tokens', event_type_filter: { in_values: ['llm'] }, group_keys: [['model']] });
    const tokens = await h.client.v1.contracts.products.create({ name: 'Tokens', type: 'USAGE', billable_metric_id: metric.data.id, pricing_group_key: ['model'] });
    const seats = await h.client.v1.contracts.products.create({ name: 'Seats', type: 'SUBSCRIPTION' });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'trial prices' });
    await h.client.v1.contracts.rateCards.rates.addMany({
      rate_card_id: card.data.id,
      rates: [
        { product_id: tokens.data.id, entitled: true, rate_type: 'TIERED', tiers: [{ size: 100, price: 2 }, { price: 1 }], starting_at: p0, pricing_group_values: { model: 'small' } },
        { product_id: tokens.data.id, entitled: true, rate_type: 'FLAT', price: 5, starting_at: p0, pricing_group_values: { model: 'large' } },
        { product_id: seats.data.id, entitled: true, rate_type: 'SUBSCRIPTION', price: 3000, quantity: 1, is_prorated: true, starting_at: p0 },
      ],
    });

    // Seats prorated by days of the month: the 14 trial days, then the days after the trial.
    const monthDays = (Date.parse(p1) - Date.parse(p0)) / DAY;
    const seatsFor = (days: number) => Number(roundAmount(dec(3000).times(days).div(monthDays)).toString());
    const seatsInTrial = seatsFor(14);
    const seatsAfter = seatsFor(monthDays - 24);

    /** A customer with usage in and after the trial (ingested before the contract, so its close sees it all) and a contract with `trial`. */
    const setUp = async (trial: Record<string, unknown>) => {
      const alias = uniqueName('trial');
      const customer = await h.client.v1.customers.create({ name: 'Trial Co', ingest_aliases: [alias] });
      const ev = (id: string, ts: string, model: string, n: number) => ({ transaction_id: `${alias}-${id}`, customer_id: alias, event_type: 'llm', timestamp: ts, properties: { tokens: n, model } });
      await h.client.v1.usage.ingest({
        usage: [
          ev('a', at(11), 'small', 100), ev('b', at(23.5), 'small', 50), ev('c', at(12), 'large', 10), // in the trial
          ev('d', trialEnd, 'small', 80), ev('e', at(27), 'large', 4), // after it
        ],
      });
      const contract = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: start, trial_spec: trial } as Metronome.V1.ContractCreateParams);
      return { customerId: customer.data.id, contractId: contract.data.id };
    };

    type Line = { type: string; name: string; total: number; starting_at?: string; ending_before?: string; pricing_group_values?: Record<string, string> };
    const lines = (inv: Metronome.V1.Customers.Invoice) => (inv.line_items as Line[]).map((l) => [l.type, l.name, l.pricing_group_values?.model ?? '', l.starting_at, l.ending_before, l.total]);
    const usageLines = [
      ['subscription', 'Seats', '', start, trialEnd, seatsInTrial],
      ['subscription', 'Seats', '', trialEnd, p1, seatsAfter],
      ['usage', 'Tokens', 'large', start, trialEnd, 50], // 10 × 5
      ['usage', 'Tokens', 'small', start, trialEnd, 250], // 150 through the tiers: 100 × 2 + 50 × 1
      ['usage', 'Tokens', 'large', trialEnd, p1, 20],
      ['usage', 'Tokens', 'small', trialEnd, p1, 160], // the tiers restart after the trial: 80 × 2
    ];
    const firstInvoice = async (customerId: string, contractId: string, expected: unknown[]) => eventually('the trial period priced', async () => {
      const invs = (await h.client.v1.customers.invoices.list({ customer_id: customerId, contract_id: contractId })).data;
      const first = invs.find((i) => i.start_timestamp === start);
      if (!first || JSON.stringify(lines(first)) !== JSON.stringify(expected)) throw new Error(`not yet: ${JSON.stringify(invs.map(lines))}`);
      return first;
    });

    // No cap: the trial covers every in-trial line, nothing after it.
    // convert AUTO: the contract goes on after its trial (without it, no commit ends it at the trial end).
    const free = await setUp({ length_in_days: 14, convert: 'AUTO' });
    const inTrial = seatsInTrial + 250 + 50;
    const uncapped = await firstInvoice(free.customerId, free.contractId, [...usageLines, ['trial', `Trial (ends ${trialEnd.slice(0, 10)})`, '', start, trialEnd, -inTrial]]);
    expect([uncapped.total, uncapped.subtotal]).toEqual([seatsAfter + 180, inTrial + seatsAfter + 180]);

    // A spending cap of 100 cents: the trial covers 100 of the in-trial charges.
    const capped = await setUp({ length_in_days: 14, spending_cap: { amount: 100 }, convert: 'AUTO' });
    const cappedInv = await firstInvoice(capped.customerId, capped.contractId, [...usageLines, ['trial', `Trial (ends ${trialEnd.slice(0, 10)})`, '', start, trialEnd, -100]]);
    expect(cappedInv.total).toBe(inTrial - 100 + seatsAfter + 180);
    for (const inv of [uncapped, cappedInv]) expect(inv.total).toBe((inv.line_items as Line[]).reduce((a, l) => a + l.total, 0));

    // The current period lies after the trial: no trial line.
    const current = (await h.client.v1.customers.invoices.list({ customer_id: capped.customerId, contract_id: capped.contractId })).data.find((i) => i.start_timestamp === p1)!;
    expect((current.line_items as Line[]).filter((l) => l.type === 'trial')).toEqual([]);

    // Every line re-derived from raw events: no drift, the trial lines included.
    for (const c of [free, capped]) {
      const report = await reconcile(h.orm.em.fork(), { customerId: c.customerId });
      expect([report.drifting, report.invoices.length]).toEqual([0, 2]);
    }
  });
});
