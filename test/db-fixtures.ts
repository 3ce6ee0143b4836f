import type { EntityManager } from '@mikro-orm/postgresql';
import type { ContractTerms } from '../billing/contract-terms.js';
import { USD_CENTS } from '../billing/money.js';
import { BillableMetric, Contract, Customer, CustomerIngestAlias, Product, Rate, RateCard } from '../db/entities.js';
import { insertEvents } from '../db/events.js';
import { newId } from '../db/ids.js';
import { ratePass, ratingBacklog } from '../db/rating.js';
import { uniqueName } from './stack.js';

/**
 * A customer on a one-product FLAT rate card with a contract, written straight to PostgreSQL. The
 * contract counts as created when it started (or now, for one starting later), so its past periods
 * close after the usual grace; `createdAt` makes it a contract written later (a backdated one).
 */
export async function seedContract(em: EntityManager, opts: { startingAt: string; endingBefore?: string; price: string; billingEmail?: string; terms?: ContractTerms; createdAt?: string }) {
  const now = new Date();
  const customerId = newId();
  const alias = uniqueName('alias');
  em.create(Customer, { id: customerId, name: 'Seeded Co', billingEmail: opts.billingEmail ?? null, customFields: {}, createdAt: now, updatedAt: now });
  await em.flush();
  em.create(CustomerIngestAlias, { alias, customerId, position: 0 });
  const metricId = newId();
  em.create(BillableMetric, {
    id: metricId, name: 'GPU seconds', aggregationType: 'SUM', aggregationKey: 'seconds', eventTypeFilter: null, propertyFilters: [], groupKeys: [], customFields: {}, createdAt: now,
    ratingFromXid: '1', backfillCursorXid: '1', backfillStatus: 'DONE', backfillEventsProcessed: 0, backfillEventsTotal: 0,
  });
  await em.flush();
  const productId = newId();
  em.create(Product, { id: productId, name: 'GPU time', type: 'USAGE', billableMetricId: metricId, tags: [], customFields: {}, attributes: {}, updates: [], createdAt: now });
  const rateCardId = newId();
  em.create(RateCard, { id: rateCardId, name: 'card', creditTypeId: USD_CENTS.id, customFields: {}, aliases: [], createdAt: now });
  await em.flush();
  em.create(Rate, { id: newId(), rateCardId, productId, rateType: 'FLAT', price: opts.price, pricingGroupValues: {}, entitled: true, startingAt: new Date('2000-01-01T00:00:00Z'), createdAt: now });
  const contractId = newId();
  em.create(Contract, {
    id: contractId, customerId, rateCardId, startingAt: new Date(opts.startingAt), endingBefore: opts.endingBefore ? new Date(opts.endingBefore) : null,
    usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, terms: opts.terms ?? {},
    createdAt: opts.createdAt ? new Date(opts.createdAt) : new Date(Math.min(now.getTime(), Date.parse(opts.startingAt))),
  });
  await em.flush();
  /** Inserts events and rates them, as the API and the rating workflow would. */
  const ingest = async (events: { id: string; at: string; seconds: string | number }[]) => {
    await insertEvents(em, events.map((e) => ({ transactionId: `${alias}-${e.id}`, customerId: alias, eventType: 'gpu', timestamp: e.at, properties: { seconds: e.seconds } })));
    // Until the cursor passed them all (it waits for the oldest transaction in the whole cluster).
    while (await ratingBacklog(em.fork())) {
      if ((await ratePass(em.fork(), 10_000)).events === 0) await new Promise((res) => setTimeout(res, 10));
    }
  };
  return { customerId, alias, contractId, productId, rateCardId, ingest };
}
