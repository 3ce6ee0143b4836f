import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import { USD_CENTS } from '../billing/money.js';
import { createTestDatabase, uniqueName } from '../test/stack.js';
import { BillableMetric, Contract, Customer, CustomerIngestAlias, Product, Rate, RateCard } from './entities.js';
import { insertEvents } from './events.js';
import { newId } from './ids.js';
import { computeInvoice } from './invoices.js';
import { ratePass, ratingBacklog } from './rating.js';

/**
 * Which rate prices which usage, on real PostgreSQL: billing frequencies,
 * per-group price changes, and non-additive aggregations across a price change.
 */
const JAN = '2026-01-01T00:00:00.000Z';
const MID = '2026-01-16T00:00:00.000Z';
const FEB = '2026-02-01T00:00:00.000Z';
const EPOCH = new Date('2000-01-01T00:00:00Z');

describe('pricing a period', () => {
  let orm: MikroORM;
  beforeAll(async () => { orm = (await createTestDatabase('pricing')).orm; });
  afterAll(async () => { await orm?.close(); });

  // Lines are ordered by product, then start, then group values.
  /** A customer with one metric and one product on a fresh rate card; `rates` are added by the test. */
  async function seed(em: EntityManager, metric: { type: 'SUM' | 'UNIQUE'; key: string; groupKeys?: string[] }, pricingGroupKey?: string[]) {
    const now = new Date();
    const customerId = newId();
    const alias = uniqueName('alias');
    em.create(Customer, { id: customerId, name: 'Pricing Co', billingEmail: null, customFields: {}, createdAt: now, updatedAt: now });
    await em.flush();
    em.create(CustomerIngestAlias, { alias, customerId, position: 0 });
    const metricId = newId();
    em.create(BillableMetric, {
      id: metricId, name: 'm', aggregationType: metric.type, aggregationKey: metric.key, eventTypeFilter: null, propertyFilters: [],
      groupKeys: metric.groupKeys ? [metric.groupKeys] : [], customFields: {}, createdAt: now,
      ratingFromXid: '1', backfillCursorXid: '1', backfillStatus: 'DONE', backfillEventsProcessed: 0, backfillEventsTotal: 0,
    });
    await em.flush();
    const productId = newId();
    em.create(Product, {
      id: productId, name: 'Tokens', type: 'USAGE', billableMetricId: metricId, tags: [], customFields: {},
      attributes: pricingGroupKey ? { pricing_group_key: pricingGroupKey } : {}, updates: [], createdAt: now,
    });
    const rateCardId = newId();
    em.create(RateCard, { id: rateCardId, name: 'card', creditTypeId: USD_CENTS.id, customFields: {}, aliases: [], createdAt: now });
    await em.flush();
    const contractId = newId();
    em.create(Contract, {
      id: contractId, customerId, rateCardId, startingAt: new Date(JAN), endingBefore: null,
      usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, terms: {}, createdAt: now,
    });
    await em.flush();
    let n = 0;
    return {
      rate(r: Partial<Rate> & Pick<Rate, 'rateType'>) {
        em.create(Rate, { id: newId(), rateCardId, productId, pricingGroupValues: {}, entitled: true, startingAt: EPOCH, createdAt: new Date(now.getTime() + n++), ...r } as Rate);
      },
      /** A second product on the same metric and card. */
      product(name: string, groupKey?: string[]) {
        const id = newId();
        em.create(Product, { id, name, type: 'USAGE', billableMetricId: metricId, tags: [], customFields: {}, attributes: groupKey ? { pricing_group_key: groupKey } : {}, updates: [], createdAt: now });
        return id;
      },
      async ingest(events: { at: string; properties: Record<string, unknown> }[]) {
        await em.flush();
        await insertEvents(em, events.map((e) => ({ transactionId: `${alias}-${n++}`, customerId: alias, eventType: 'use', timestamp: e.at, properties: e.properties })));
        while (await ratingBacklog(em.fork())) {
          if ((await ratePass(em.fork(), 10_000)).events === 0) await new Promise((res) => setTimeout(res, 10));
        }
      },
      async lines() {
        const contract = await orm.em.fork().findOneOrFail(Contract, { id: contractId });
        const inv = await computeInvoice(orm.em.fork(), contract, { start: JAN, end: FEB });
        return inv.lines.map((l) => `${l.name === 'Tokens' ? '' : `${l.name} `}${JSON.stringify(l.pricingGroupValues ?? {})} ${l.startingAt?.slice(0, 10)}..${l.endingBefore?.slice(0, 10)} q=${l.quantity?.toString()} ${l.total.toString()}`);
      },
    };
  }

  test('a monthly contract is priced by the card\'s MONTHLY rate, not also by its ANNUAL one', async () => {
    const s = await seed(orm.em.fork(), { type: 'SUM', key: 'n' });
    s.rate({ rateType: 'FLAT', price: '1', billingFrequency: 'MONTHLY' });
    s.rate({ rateType: 'FLAT', price: '10', billingFrequency: 'ANNUAL' });
    await s.ingest([{ at: '2026-01-05T00:00:00Z', properties: { n: 100 } }]);
    expect(await s.lines()).toEqual(['{} 2026-01-01..2026-02-01 q=100 100']);
  });

  test('rates without a billing frequency apply when the card has none for the contract\'s frequency', async () => {
    const s = await seed(orm.em.fork(), { type: 'SUM', key: 'n' });
    s.rate({ rateType: 'FLAT', price: '2' });
    s.rate({ rateType: 'FLAT', price: '10', billingFrequency: 'ANNUAL' });
    await s.ingest([{ at: '2026-01-05T00:00:00Z', properties: { n: 100 } }]);
    expect(await s.lines()).toEqual(['{} 2026-01-01..2026-02-01 q=100 200']);
  });

  test('a price change for one pricing group does not restart another group\'s graduated tiers', async () => {
    const s = await seed(orm.em.fork(), { type: 'SUM', key: 'n', groupKeys: ['region'] }, ['region']);
    const tiers = [{ size: '100', price: '1' }, { price: '0.5' }];
    s.rate({ rateType: 'TIERED', tiers, pricingGroupValues: { region: 'us' } });
    s.rate({ rateType: 'TIERED', tiers, pricingGroupValues: { region: 'eu' } });
    s.rate({ rateType: 'TIERED', tiers: [{ size: '100', price: '2' }, { price: '1' }], pricingGroupValues: { region: 'eu' }, startingAt: new Date(MID) });
    await s.ingest([
      { at: '2026-01-05T00:00:00Z', properties: { n: 80, region: 'us' } },
      { at: '2026-01-20T00:00:00Z', properties: { n: 70, region: 'us' } },
      { at: '2026-01-05T00:00:00Z', properties: { n: 10, region: 'eu' } },
      { at: '2026-01-20T00:00:00Z', properties: { n: 10, region: 'eu' } },
    ]);
    expect(await s.lines()).toEqual([
      '{"region":"eu"} 2026-01-01..2026-01-16 q=10 10',
      // us: 150 over the month through one set of tiers: 100 × 1 + 50 × 0.5.
      '{"region":"us"} 2026-01-01..2026-02-01 q=150 125',
      '{"region":"eu"} 2026-01-16..2026-02-01 q=10 20',
    ]);
  });

  test('a group without rates of its own falls back to the product-wide rate, cut only where that rate changes', async () => {
    const s = await seed(orm.em.fork(), { type: 'SUM', key: 'n', groupKeys: ['region'] }, ['region']);
    s.rate({ rateType: 'FLAT', price: '1' });
    s.rate({ rateType: 'FLAT', price: '3', pricingGroupValues: { region: 'eu' }, startingAt: new Date(MID) });
    await s.ingest([
      { at: '2026-01-05T00:00:00Z', properties: { n: 5, region: 'eu' } },
      { at: '2026-01-20T00:00:00Z', properties: { n: 5, region: 'eu' } },
      { at: '2026-01-05T00:00:00Z', properties: { n: 7, region: 'us' } },
      { at: '2026-01-20T00:00:00Z', properties: { n: 7, region: 'us' } },
    ]);
    expect(await s.lines()).toEqual([
      '{"region":"eu"} 2026-01-01..2026-01-16 q=5 5', // product-wide rate until eu's own starts
      '{"region":"us"} 2026-01-01..2026-02-01 q=14 14',
      '{"region":"eu"} 2026-01-16..2026-02-01 q=5 15',
    ]);
  });

  test('UNIQUE usage across a price change counts each user once, priced at the rate in force at the end', async () => {
    const s = await seed(orm.em.fork(), { type: 'UNIQUE', key: 'user' });
    s.rate({ rateType: 'FLAT', price: '100' });
    s.rate({ rateType: 'FLAT', price: '150', startingAt: new Date(MID) });
    await s.ingest([
      { at: '2026-01-05T00:00:00Z', properties: { user: 'u1' } },
      { at: '2026-01-06T00:00:00Z', properties: { user: 'u2' } },
      { at: '2026-01-20T00:00:00Z', properties: { user: 'u1' } },
      { at: '2026-01-21T00:00:00Z', properties: { user: 'u3' } },
    ]);
    expect(await s.lines()).toEqual(['{} 2026-01-01..2026-02-01 q=3 450']); // not 2 + 2 users
  });

  test('a MONTHLY rate added mid-period takes over from the rate without a frequency only from its start', async () => {
    const s = await seed(orm.em.fork(), { type: 'SUM', key: 'n' });
    s.rate({ rateType: 'FLAT', price: '2' });
    s.rate({ rateType: 'FLAT', price: '1', billingFrequency: 'MONTHLY', startingAt: new Date(MID) });
    s.rate({ rateType: 'FLAT', price: '10', billingFrequency: 'ANNUAL' });
    await s.ingest([{ at: '2026-01-05T00:00:00Z', properties: { n: 10 } }, { at: '2026-01-20T00:00:00Z', properties: { n: 10 } }]);
    expect(await s.lines()).toEqual(['{} 2026-01-01..2026-01-16 q=10 20', '{} 2026-01-16..2026-02-01 q=10 10']);
  });

  test('a product-wide price change does not restart the tiers of a group whose own rate covers the period', async () => {
    const s = await seed(orm.em.fork(), { type: 'SUM', key: 'n', groupKeys: ['region'] }, ['region']);
    s.rate({ rateType: 'FLAT', price: '1' });
    s.rate({ rateType: 'FLAT', price: '2', startingAt: new Date(MID) });
    s.rate({ rateType: 'TIERED', tiers: [{ size: '100', price: '1' }, { price: '0.5' }], pricingGroupValues: { region: 'us' } });
    await s.ingest([
      { at: '2026-01-05T00:00:00Z', properties: { n: 80, region: 'us' } },
      { at: '2026-01-20T00:00:00Z', properties: { n: 70, region: 'us' } },
    ]);
    expect(await s.lines()).toEqual(['{"region":"us"} 2026-01-01..2026-02-01 q=150 125']);
  });

  test('two products on one metric each group its usage by their own pricing keys', async () => {
    const s = await seed(orm.em.fork(), { type: 'SUM', key: 'n', groupKeys: ['region'] });
    s.rate({ rateType: 'FLAT', price: '1' }); // Tokens: no pricing group key
    const regional = s.product('Regional', ['region']);
    s.rate({ rateType: 'FLAT', price: '3', productId: regional, pricingGroupValues: { region: 'us' } });
    await s.ingest([{ at: '2026-01-05T00:00:00Z', properties: { n: 10, region: 'us' } }, { at: '2026-01-06T00:00:00Z', properties: { n: 4, region: 'eu' } }]);
    expect(await s.lines()).toEqual(['Regional {"region":"us"} 2026-01-01..2026-02-01 q=10 30', '{} 2026-01-01..2026-02-01 q=14 14']);
  });
});
