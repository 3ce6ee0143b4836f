import Metronome from '@metronome/sdk';
import { uniqueName } from './stack.js';

/** Builds the thin slice's pricing through the Metronome SDK: metric, product, rate card, FLAT rate. */
export async function createPricedCustomer(client: Metronome, opts: { pricePerUnit: number; rateFrom: string }) {
  const billingEmail = `${uniqueName('billing')}@customer.test`;
  const alias = uniqueName('cust');
  const customer = await client.v1.customers.create({ name: 'Crash Test Co', ingest_aliases: [alias], billing_email: billingEmail } as Metronome.V1.CustomerCreateParams);
  const metric = await client.v1.billableMetrics.create({ name: 'API calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['api_call'] } });
  const product = await client.v1.contracts.products.create({ name: 'API calls', type: 'USAGE', billable_metric_id: metric.data.id });
  const rateCard = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
  await client.v1.contracts.rateCards.rates.add({
    rate_card_id: rateCard.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: opts.pricePerUnit, starting_at: opts.rateFrom,
  });
  return { customerId: customer.data.id, alias, billingEmail, rateCardId: rateCard.data.id, productId: product.data.id };
}
