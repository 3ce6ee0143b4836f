import type { MikroORM } from '@mikro-orm/postgresql';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase } from '../test/stack.js';
import { Contract, Invoice } from './entities.js';
import { invoiceIdFor } from './ids.js';
import { freezeInvoiceTx, freezeLateUsageInvoiceTx } from './invoice-freeze.js';
import { computeLateUsageInvoice, customerDrafts } from './invoices.js';
import { reconcile } from './reconcile.js';

/**
 * A capped trial over two periods on real PostgreSQL: the cap drawn in period order by drafts and
 * frozen invoices alike, late in-trial usage of a finalized period covered within what is left of
 * it, and reconciliation clean throughout.
 */
const START = '2026-01-20T00:00:00.000Z';
const FEB = '2026-02-01T00:00:00.000Z';
const MAR = '2026-03-01T00:00:00.000Z';

describe('a trial spanning two periods', () => {
  let orm: MikroORM;
  beforeAll(async () => { orm = (await createTestDatabase('trial')).orm; });
  afterAll(async () => { await orm?.close(); });

  test('the cap is drawn in period order, frozen or draft; late in-trial usage is covered within it', async () => {
    const em = orm.em.fork();
    const s = await seedContract(em, { startingAt: START, price: '1' });
    // 20 days: [Jan 20, Feb 9), 1500 cents at most.
    await em.nativeUpdate(Contract, { id: s.contractId }, { terms: { trial_spec: { length_in_days: 20, spending_cap: { amount: '1500' } } } });
    await s.ingest([
      { id: 'a', at: '2026-01-25T00:00:00Z', seconds: 400 }, // in the trial, first period
      { id: 'b', at: '2026-02-03T00:00:00Z', seconds: 800 }, // in the trial, second period
      { id: 'c', at: '2026-02-12T00:00:00Z', seconds: 300 }, // after it
    ]);
    const P1 = invoiceIdFor(s.contractId, START);
    const P2 = invoiceIdFor(s.contractId, FEB);
    const lines = (ls: { type: string; name: string; total: string; starting_at?: string; ending_before?: string }[]) =>
      ls.map((l) => `${l.type}:${l.name}:${l.starting_at?.slice(5, 10) ?? ''}..${l.ending_before?.slice(5, 10) ?? ''}:${l.total}`);
    const drafts = async () => Object.fromEntries((await customerDrafts(orm.em.fork(), s.customerId, new Date(MAR))).map((d) => [d.view.id, [lines(d.view.lines), d.view.total]]));
    const firstPeriod = [['usage:GPU time:01-20..02-01:400', 'trial:Trial (ends 2026-02-09):01-20..02-09:-400'], '0'];
    const secondPeriod = [[
      'usage:GPU time:02-01..02-09:800', 'usage:GPU time:02-09..03-01:300', // cut at the trial's end
      'trial:Trial (ends 2026-02-09):01-20..02-09:-800', // 400 + 800 of the 1500
    ], '300'];
    expect(await drafts()).toEqual({ [P1]: firstPeriod, [P2]: secondPeriod });
    // With a cap of 1000 the second draft gets what the first draft left of it: 600 of its 800.
    const withCap = (amount: string) => orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { trial_spec: { length_in_days: 20, spending_cap: { amount } } } });
    await withCap('1000');
    expect((await drafts())[P2]).toEqual([[...secondPeriod[0]!.slice(0, 2), 'trial:Trial (ends 2026-02-09):01-20..02-09:-600'], '500']);
    await withCap('1500');

    // The first period frozen and finalized: the second draws on what its stored trial line left.
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, { invoiceId: P1, contractId: s.contractId, periodStart: START, periodEnd: FEB, recompute: false }));
    await orm.em.fork().nativeUpdate(Invoice, { id: P1 }, { status: 'FINALIZED', approvalStatus: 'APPROVED', finalizedAt: new Date() });
    expect(await drafts()).toEqual({ [P2]: secondPeriod });
    expect((await reconcile(orm.em.fork(), { customerId: s.customerId, now: new Date(MAR) })).drifting).toBe(0);

    // Late usage inside the trial for the finalized period: an in-trial correction on the open
    // invoice, covered by what is left of the cap (300 of its 500), the rest billed.
    await s.ingest([{ id: 'late', at: '2026-01-28T00:00:00Z', seconds: 500 }]);
    const corrected = [[
      'usage:GPU time:02-01..02-09:800', 'usage:GPU time:02-09..03-01:300',
      'correction:Correction for 2026-01-20 – 2026-02-01: GPU time (in trial):01-20..02-01:500', // the corrected line, its slice
      'trial:Trial (ends 2026-02-09):01-20..02-09:-1100', // the cap: 1500 − 400
    ], '500'];
    expect(await drafts()).toEqual({ [P2]: corrected });
    expect((await orm.em.fork().findOneOrFail(Invoice, { id: P1 })).total).toBe('0'); // finalized: unchanged
    const report = await reconcile(orm.em.fork(), { customerId: s.customerId, now: new Date(MAR) });
    expect(report.invoices.map((i) => [i.invoiceId, i.status, i.drift.length, i.corrected])).toEqual([[P1, 'FINALIZED', 0, 2], [P2, 'DRAFT', 0, 0]]);

    // Frozen as drafted, and still reconciling clean (its trial line re-derived against the billed correction).
    const frozen = await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, { invoiceId: P2, contractId: s.contractId, periodStart: FEB, periodEnd: MAR, recompute: false }));
    expect(frozen.total).toBe('500');
    expect(lines((await orm.em.fork().findOneOrFail(Invoice, { id: P2 })).lineItems)).toEqual(corrected[0]);
    expect((await reconcile(orm.em.fork(), { customerId: s.customerId, now: new Date(MAR) })).drifting).toBe(0);

    // A cent of tampering with the trial line is drift.
    await orm.em.fork().execute(`update invoice set line_items = jsonb_set(line_items, '{3,total}', '"-1101"'), total = total - 1 where id = ?`, [P2]);
    const tampered = await reconcile(orm.em.fork(), { customerId: s.customerId, now: new Date(MAR) });
    expect(tampered.invoices.find((i) => i.invoiceId === P2)!.drift.map((d) => [d.line.split('|')[0], d.billed?.total, d.rederived?.total])).toEqual([['trial', '-1101', '-1100']]);
    await orm.em.fork().execute(`update invoice set line_items = jsonb_set(line_items, '{3,total}', '"-1100"'), total = total + 1 where id = ?`, [P2]);
    expect((await reconcile(orm.em.fork(), { customerId: s.customerId, now: new Date(MAR) })).drifting).toBe(0);
  });

  test('an ended contract\'s late-usage invoice: its in-trial correction is covered by the trial', async () => {
    const em = orm.em.fork();
    const s = await seedContract(em, { startingAt: START, endingBefore: MAR, price: '1' });
    await em.nativeUpdate(Contract, { id: s.contractId }, { terms: { trial_spec: { length_in_days: 20, spending_cap: { amount: '1000' } } } });
    await s.ingest([{ id: 'a', at: '2026-01-25T00:00:00Z', seconds: 900 }]);
    for (const [start, end] of [[START, FEB], [FEB, MAR]] as const) {
      const invoiceId = invoiceIdFor(s.contractId, start);
      await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, { invoiceId, contractId: s.contractId, periodStart: start, periodEnd: end, recompute: false }));
      await orm.em.fork().nativeUpdate(Invoice, { id: invoiceId }, { status: 'FINALIZED', approvalStatus: 'APPROVED', finalizedAt: new Date() });
    }
    // 250 late in the trial and 40 after it: the trial covers the 100 left of its cap.
    await s.ingest([{ id: 'late', at: '2026-01-26T00:00:00Z', seconds: 250 }, { id: 'after', at: '2026-02-20T00:00:00Z', seconds: 40 }]);
    const inv = await computeLateUsageInvoice(orm.em.fork(), await orm.em.fork().findOneOrFail(Contract, { id: s.contractId }));
    expect(inv!.lines.map((l) => `${l.type}:${l.name}:${l.total.toString()}`)).toEqual([
      'correction:Correction for 2026-01-20 – 2026-02-01: GPU time (in trial):250',
      'correction:Correction for 2026-02-01 – 2026-03-01: GPU time:40',
      'trial:Trial (ends 2026-02-09):-100',
    ]);
    expect(inv!.total.toString()).toBe('190');
    // Frozen as computed; the late usage is then billed exactly once, the trial line checked with it.
    const frozen = await orm.em.fork().transactional((tx) => freezeLateUsageInvoiceTx(tx, s.contractId));
    expect(frozen!.total).toBe('190');
    const report = await reconcile(orm.em.fork(), { customerId: s.customerId, now: new Date(MAR) });
    expect(report.invoices.map((i) => [i.status, i.drift.length, i.corrected])).toEqual([['FINALIZED', 0, 2], ['FINALIZED', 0, 1], ['DRAFT', 0, 0]]);
  });
});
