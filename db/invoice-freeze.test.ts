import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase } from '../test/stack.js';
import { BalanceGrant, BalanceLedgerEntry, Contract, Invoice } from './entities.js';
import { invoiceIdFor, newId, uuidV5 } from './ids.js';
import { freezeInvoiceTx, freezeLateUsageInvoiceTx } from './invoice-freeze.js';
import { customerDrafts, voidBlockedByGiveBacks } from './invoices.js';
import { reconcile } from './reconcile.js';
import { rollOverToSuccessor } from './rollover.js';

/**
 * Commit draw-down under concurrent and out-of-order freezes, on real PostgreSQL.
 * The interleavings are forced: one freeze's transaction is held open while the other runs.
 */
const JAN = '2026-01-01T00:00:00.000Z';
const FEB = '2026-02-01T00:00:00.000Z';
const MAR = '2026-03-01T00:00:00.000Z';
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

describe('freezing draws each commit once, in the order the drafts showed', () => {
  let orm: MikroORM;
  beforeAll(async () => { orm = (await createTestDatabase('freeze')).orm; });
  afterAll(async () => { await orm?.close(); });

  const commit = (em: EntityManager, s: { customerId: string; productId: string }, contractId: string | null, amount: string,
    o: { startingAt?: string; endingBefore?: string; rolloverFraction?: string; kind?: 'PREPAID' | 'POSTPAID' | 'CREDIT' } = {}) => {
    const id = newId();
    em.create(BalanceGrant, {
      id, customerId: s.customerId, contractId, kind: o.kind ?? 'PREPAID', productId: s.productId, name: 'Prepaid commit', description: null, priority: 0,
      applicableProductIds: null, applicableProductTags: null, applicableContractIds: null, specifiers: null,
      accessSchedule: { schedule_items: [{ id: `${id}-s0`, amount, starting_at: o.startingAt ?? JAN, ending_before: o.endingBefore ?? '2027-01-01T00:00:00.000Z' }] },
      invoiceSchedule: null, invoiceContractId: null, rolloverFraction: o.rolloverFraction ?? null, rateType: null, customFields: {}, uniquenessKey: null,
      amendmentId: null, rolledOver: null, rolledOverFrom: null, createdAt: new Date(), archivedAt: null,
    } as never);
    return id;
  };
  /** A contract renewing `old` from February, open-ended. */
  const renewal = (em: EntityManager, old: { customerId: string; rateCardId: string; contractId: string }) => {
    const id = newId();
    em.create(Contract, {
      id, customerId: old.customerId, rateCardId: old.rateCardId, startingAt: new Date(FEB), endingBefore: null,
      usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, createdAt: new Date(),
      terms: { transition: { from_contract_id: old.contractId, type: 'RENEWAL' } },
    } as never);
    return id;
  };
  const drawn = async (grantId: string) => {
    const [row] = await orm.em.fork().execute<{ drawn: string }[]>(`select coalesce(-sum(amount), 0)::text as drawn from balance_ledger where grant_id = ?`, [grantId]);
    return row!.drawn;
  };
  const input = (contractId: string, start: string, end: string) => ({ invoiceId: invoiceIdFor(contractId, start), contractId, periodStart: start, periodEnd: end, recompute: false });
  const draftTotals = async (customerId: string) =>
    Object.fromEntries((await customerDrafts(orm.em.fork(), customerId, new Date(MAR))).map((d) => [d.view.id, d.view.total]));
  const frozenTotals = async (ids: string[]) =>
    Object.fromEntries((await orm.em.fork().find(Invoice, { id: { $in: ids } })).map((i) => [i.id, i.total]));

  test('two contracts of one customer freezing on the same boundary at once draw a shared commit once', async () => {
    const em = orm.em.fork();
    const a = await seedContract(em, { startingAt: JAN, endingBefore: FEB, price: '1' });
    const bId = newId();
    em.create(Contract, {
      id: bId, customerId: a.customerId, rateCardId: a.rateCardId, startingAt: new Date(JAN), endingBefore: new Date(FEB),
      usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, terms: {}, createdAt: new Date(),
    } as never);
    const grantId = commit(em, a, null, '1000'); // customer-level: both contracts draw on it
    await em.flush();
    await a.ingest([{ id: '1', at: '2026-01-10T00:00:00Z', seconds: 800 }]); // each contract prices it: 800 cents each
    const drafts = await draftTotals(a.customerId);
    expect(Object.values(drafts).sort()).toEqual(['0', '600']); // the first draws 800, the second the last 200

    // Freeze A and hold its transaction open; meanwhile B's freeze starts.
    let release!: () => void;
    const held = new Promise<void>((res) => { release = res; });
    let aFrozen!: () => void;
    const aDone = new Promise<void>((res) => { aFrozen = res; });
    const txA = orm.em.fork().transactional(async (tx) => { await freezeInvoiceTx(tx, input(a.contractId, JAN, FEB)); aFrozen(); await held; });
    await aDone;
    let bFinished = false;
    const txB = orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(bId, JAN, FEB))).then((r) => { bFinished = true; return r; });
    await sleep(1500);
    // B must wait for A's commit: otherwise it reads the commit's balance without A's draw-down.
    expect(bFinished).toBe(false);
    release();
    await Promise.all([txA, txB]);

    expect(await drawn(grantId)).toBe('1000');
    expect(await frozenTotals(Object.keys(drafts))).toEqual(drafts);
  });

  test('a backdated contract whose later period freezes first still draws in period order', async () => {
    const em = orm.em.fork();
    const s = await seedContract(em, { startingAt: JAN, endingBefore: MAR, price: '1' });
    const grantId = commit(em, s, s.contractId, '1000');
    await em.flush();
    await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 900 }, { id: 'feb', at: '2026-02-10T00:00:00Z', seconds: 900 }]);
    const drafts = await draftTotals(s.customerId);
    expect(drafts).toEqual({ [invoiceIdFor(s.contractId, JAN)]: '0', [invoiceIdFor(s.contractId, FEB)]: '800' });

    // February's close runs before January's (both were started at once by the contract workflow).
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(s.contractId, FEB, MAR)));
    expect(await frozenTotals(Object.keys(drafts))).toEqual(drafts);
    // January's own close then finds its invoice frozen, as drafted.
    expect(await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(s.contractId, JAN, FEB)))).toEqual({ status: 'DRAFT', total: '0' });
    expect(await drawn(grantId)).toBe('1000');
  });

  test('two freezes of the same period at once store one invoice', async () => {
    const em = orm.em.fork();
    const s = await seedContract(em, { startingAt: JAN, endingBefore: FEB, price: '1' });
    const grantId = commit(em, s, s.contractId, '1000');
    await em.flush();
    await s.ingest([{ id: '1', at: '2026-01-10T00:00:00Z', seconds: 300 }]);
    const results = await Promise.all([0, 1].map(() => orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(s.contractId, JAN, FEB)))));
    expect(results).toEqual([{ status: 'DRAFT', total: '0' }, { status: 'DRAFT', total: '0' }]);
    expect(await drawn(grantId)).toBe('300');
  });

  test('regenerating a voided invoice does not bill again the late usage a later invoice billed as its correction', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: JAN, endingBefore: '2026-04-01T00:00:00.000Z', price: '1' });
    const finalize = (id: string) => orm.em.fork().nativeUpdate(Invoice, { id }, { status: 'FINALIZED', approvalStatus: 'APPROVED', finalizedAt: new Date() });
    const jan = input(s.contractId, JAN, FEB);
    await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, jan));
    await finalize(jan.invoiceId);
    await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 10 }, { id: 'feb', at: '2026-02-10T00:00:00Z', seconds: 50 }]);
    const feb = input(s.contractId, FEB, MAR);
    expect(await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, feb))).toEqual({ status: 'DRAFT', total: '60' }); // 50 + the 10 late for January
    await finalize(feb.invoiceId);

    // January is voided and regenerated: it now prices all 110 of January, 10 of which February billed.
    await orm.em.fork().nativeUpdate(Invoice, { id: jan.invoiceId }, { status: 'VOID', voidedAt: new Date() });
    const again = { ...jan, invoiceId: uuidV5(`regenerated:${jan.invoiceId}`), regeneratedFromInvoiceId: jan.invoiceId };
    expect(await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, again))).toEqual({ status: 'DRAFT', total: '100' });
    const regenerated = await orm.em.fork().findOneOrFail(Invoice, { id: again.invoiceId });
    expect(regenerated.lineItems.map((l) => `${l.type}:${l.total}`)).toEqual(['usage:110', 'correction:-10']);
    await finalize(again.invoiceId);
    // March sees nothing left to correct for January or February.
    const march = (await customerDrafts(orm.em.fork(), s.customerId, new Date('2026-03-15T00:00:00Z'))).find((d) => d.view.periodStart === MAR)!;
    expect(march.view.lines.filter((l) => l.type === 'correction')).toEqual([]);
    expect((await reconcile(orm.em.fork(), { customerId: s.customerId })).drifting).toBe(0);
  });

  test('regenerating a middle period does not bill again an earlier period\'s correction that a later invoice billed', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: JAN, endingBefore: '2026-04-01T00:00:00.000Z', price: '1' });
    const finalize = (id: string) => orm.em.fork().nativeUpdate(Invoice, { id }, { status: 'FINALIZED', approvalStatus: 'APPROVED', finalizedAt: new Date() });
    const feb = input(s.contractId, FEB, MAR);
    await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }, { id: 'feb', at: '2026-02-10T00:00:00Z', seconds: 20 }]);
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, feb)); // freezes January first
    await finalize(invoiceIdFor(s.contractId, JAN));
    await finalize(feb.invoiceId);
    await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 9 }]);
    const mar = input(s.contractId, MAR, '2026-04-01T00:00:00.000Z');
    expect(await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, mar))).toEqual({ status: 'DRAFT', total: '9' }); // January's correction
    await finalize(mar.invoiceId);
    // February is voided and regenerated: January's late usage is already billed on March.
    await orm.em.fork().nativeUpdate(Invoice, { id: feb.invoiceId }, { status: 'VOID', voidedAt: new Date() });
    const again = { ...feb, invoiceId: uuidV5(`regenerated:${feb.invoiceId}`), regeneratedFromInvoiceId: feb.invoiceId };
    expect(await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, again))).toEqual({ status: 'DRAFT', total: '20' });
  });

  test('regenerating waits while an invoice that bills the voided period\'s late usage awaits approval', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: JAN, endingBefore: MAR, price: '1' });
    const jan = input(s.contractId, JAN, FEB);
    await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, jan));
    await orm.em.fork().nativeUpdate(Invoice, { id: jan.invoiceId }, { status: 'FINALIZED', approvalStatus: 'APPROVED', finalizedAt: new Date() });
    await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 3 }]);
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(s.contractId, FEB, MAR))); // pending, with January's correction
    await orm.em.fork().nativeUpdate(Invoice, { id: jan.invoiceId }, { status: 'VOID', voidedAt: new Date() });
    const again = { ...jan, invoiceId: uuidV5(`regenerated:${jan.invoiceId}`), regeneratedFromInvoiceId: jan.invoiceId };
    await expect(orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, again))).rejects.toThrow(/awaiting approval: approve or reject it before regenerating/);
    expect(await orm.em.fork().findOne(Invoice, { id: again.invoiceId })).toBeNull();
  });

  test("another contract's close leaves a backdated contract's past periods open until their own grace is over", async () => {
    const em = orm.em.fork();
    const a = await seedContract(em, { startingAt: JAN, price: '1' }); // written in January: its periods close after the usual grace
    const now = new Date();
    const bId = newId(); // written an hour ago, starting in January: its past periods close a day after that
    em.create(Contract, {
      id: bId, customerId: a.customerId, rateCardId: a.rateCardId, startingAt: new Date(JAN), endingBefore: null,
      usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, terms: {}, createdAt: new Date(now.getTime() - 3_600_000),
    } as never);
    await em.flush();
    await a.ingest([{ id: '1', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
    const day = 86_400_000;
    // A's February closes: A's January freezes along, B's January and February wait.
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(a.contractId, FEB, MAR), { invoiceGracePeriodMs: day, now }));
    const frozen = async () => (await orm.em.fork().find(Invoice, { customerId: a.customerId }, { orderBy: { periodStart: 'asc', contractId: 'asc' } })).map((i) => i.id).sort();
    expect(await frozen()).toEqual([invoiceIdFor(a.contractId, JAN), invoiceIdFor(a.contractId, FEB)].sort());
    // A day after B was written, its close is due: the next freeze takes B's past periods along.
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(a.contractId, MAR, '2026-04-01T00:00:00.000Z'), { invoiceGracePeriodMs: day, now: new Date(now.getTime() + day) }));
    expect(await frozen()).toEqual(expect.arrayContaining([invoiceIdFor(bId, JAN), invoiceIdFor(bId, FEB), invoiceIdFor(a.contractId, MAR)]));
  });

  describe('late usage is billed however late it is and wherever the contract went', () => {
    const finalize = (id: string) => orm.em.fork().nativeUpdate(Invoice, { id }, { status: 'FINALIZED', approvalStatus: 'APPROVED', finalizedAt: new Date() });
    const corrections = (lines: { type: string; total: string; corrected_invoice_id?: string }[]) => lines.filter((l) => l.type === 'correction').map((l) => `${l.corrected_invoice_id}:${l.total}`);

    test('usage for a period finalized months ago is corrected on the next open invoice', async () => {
      const s = await seedContract(orm.em.fork(), { startingAt: JAN, price: '1' });
      const jan = input(s.contractId, JAN, FEB);
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
      // January to May are frozen (May's freeze freezes the earlier ones first) and finalized.
      await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(s.contractId, '2026-05-01T00:00:00.000Z', '2026-06-01T00:00:00.000Z')));
      for (const m of ['01', '02', '03', '04', '05']) await finalize(invoiceIdFor(s.contractId, `2026-${m}-01T00:00:00.000Z`));
      // Then January's usage grows (an alias matched late, a new metric's backfill): no window hides it.
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 7 }]);
      const drafts = await customerDrafts(orm.em.fork(), s.customerId, new Date('2026-06-15T00:00:00Z'));
      expect(drafts.map((d) => [d.view.periodStart, corrections(d.view.lines)])).toEqual([['2026-06-01T00:00:00.000Z', [`${jan.invoiceId}:7`]]]);
    });

    test('a renewal bills the late usage of the contract it renews', async () => {
      const em = orm.em.fork();
      const old = await seedContract(em, { startingAt: JAN, endingBefore: FEB, price: '1' });
      const renewalId = renewal(em, old);
      await em.flush();
      const jan = input(old.contractId, JAN, FEB);
      await old.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
      await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, jan));
      await finalize(jan.invoiceId);
      await old.ingest([{ id: 'jan-late', at: '2026-01-31T00:00:00Z', seconds: 5 }]);
      const drafts = await customerDrafts(orm.em.fork(), old.customerId, new Date('2026-02-15T00:00:00Z'));
      expect(drafts.map((d) => [d.contract.id, corrections(d.view.lines)])).toEqual([[renewalId, [`${jan.invoiceId}:5`]]]);
      // Frozen, it bills it once; the old contract has nothing left to bill on an invoice of its own.
      await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, input(renewalId, FEB, MAR)));
      const feb = await orm.em.fork().findOneOrFail(Invoice, { id: invoiceIdFor(renewalId, FEB) });
      expect(corrections(feb.lineItems)).toEqual([`${jan.invoiceId}:5`]);
      // Reconciliation counts a correction wherever the customer was billed it.
      expect((await reconcile(orm.em.fork(), { customerId: old.customerId })).drifting).toBe(0);
    });

    test('a contract that ended with no renewal bills late usage on a late-usage invoice of its own, once', async () => {
      const s = await seedContract(orm.em.fork(), { startingAt: JAN, endingBefore: FEB, price: '1' });
      const jan = input(s.contractId, JAN, FEB);
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
      await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, jan));
      await finalize(jan.invoiceId);
      expect(await orm.em.fork().transactional((tx) => freezeLateUsageInvoiceTx(tx, s.contractId))).toBeNull(); // nothing late yet
      await s.ingest([{ id: 'jan-late', at: '2026-01-31T23:00:00Z', seconds: 12 }]);
      const late = await orm.em.fork().transactional((tx) => freezeLateUsageInvoiceTx(tx, s.contractId));
      expect(late).toMatchObject({ status: 'DRAFT', total: '12', periodStart: FEB, periodEnd: FEB });
      expect(await orm.em.fork().transactional((tx) => freezeLateUsageInvoiceTx(tx, s.contractId))).toEqual(late);
      const stored = await orm.em.fork().findOneOrFail(Invoice, { id: late!.invoiceId });
      expect(corrections(stored.lineItems)).toEqual([`${jan.invoiceId}:12`]);
      await finalize(late!.invoiceId);
      expect((await reconcile(orm.em.fork(), { customerId: s.customerId })).drifting).toBe(0);
    });
  });

  describe('late usage of a finalized period draws on the commits and credits that applied to it', () => {
    const finalize = (id: string) => orm.em.fork().nativeUpdate(Invoice, { id }, { status: 'FINALIZED', approvalStatus: 'APPROVED', finalizedAt: new Date() });
    const freeze = (i: ReturnType<typeof input> & { regeneratedFromInvoiceId?: string }) => orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, i));
    const lines = async (id: string) => (await orm.em.fork().findOneOrFail(Invoice, { id })).lineItems.map((l) => `${l.type}:${l.total}`);
    const ledger = async (grantId: string) => (await orm.em.fork().find(BalanceLedgerEntry, { grantId }, { orderBy: { createdAt: 'asc', invoiceId: 'asc' } }))
      .map((e) => `${e.invoiceId}:${e.amount}`);
    const clean = async (customerId: string) => expect((await reconcile(orm.em.fork(), { customerId })).invoices.filter((i) => i.drift.length)).toEqual([]);
    const APR = '2026-04-01T00:00:00.000Z';
    /**
     * A contract January–`endingBefore` (April) at 1 per unit with the given contract-level grants
     * (from January); January frozen and finalized with `jan` units.
     */
    const setup = async (jan: number, grants: { amount: string; kind?: 'PREPAID' | 'POSTPAID' | 'CREDIT'; endingBefore?: string }[],
      o: { asStoredEarlier?: boolean; endingBefore?: string } = {}) => {
      const em = orm.em.fork();
      const s = await seedContract(em, { startingAt: JAN, endingBefore: o.endingBefore ?? APR, price: '1' });
      const ids = grants.map((g) => commit(em, s, s.contractId, g.amount, { kind: g.kind, endingBefore: g.endingBefore }));
      await em.flush();
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: jan }]);
      await freeze(input(s.contractId, JAN, FEB));
      // As an earlier Accrue stored it: no commit_draws on its lines.
      if (o.asStoredEarlier) {
        await orm.em.fork().execute(`update invoice set line_items = (select jsonb_agg(l - 'commit_draws') from jsonb_array_elements(line_items) l) where id = ?`, [invoiceIdFor(s.contractId, JAN)]);
      }
      await finalize(invoiceIdFor(s.contractId, JAN));
      return { s, ids, grant: ids[0]!, jan: input(s.contractId, JAN, FEB), feb: input(s.contractId, FEB, MAR), mar: input(s.contractId, MAR, APR) };
    };

    test('the commit draws on the correction while it has balance (before this period\'s own usage), and no further', async () => {
      const em = orm.em.fork();
      const s = await seedContract(em, { startingAt: JAN, endingBefore: '2026-04-01T00:00:00.000Z', price: '1' });
      const grantId = commit(em, s, s.contractId, '1000');
      await em.flush();
      const jan = input(s.contractId, JAN, FEB);
      const feb = input(s.contractId, FEB, MAR);
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 600 }]);
      expect(await freeze(jan)).toEqual({ status: 'DRAFT', total: '0' });
      await finalize(jan.invoiceId);
      // 300 of January arrive late, with 200 of February: 1000 − 600 = 400 left covers the late 300 and 100 of February.
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }, { id: 'feb', at: '2026-02-10T00:00:00Z', seconds: 200 }]);
      const draft = (await customerDrafts(orm.em.fork(), s.customerId, new Date('2026-02-15T00:00:00Z'))).find((d) => d.view.id === feb.invoiceId)!;
      expect(draft.view.total).toBe('100');
      expect(await freeze(feb)).toEqual({ status: 'DRAFT', total: '100' });
      expect(await lines(feb.invoiceId)).toEqual(['usage:200', 'correction:300', 'applied_commit_or_credit:-400']);
      const stored = await orm.em.fork().findOneOrFail(Invoice, { id: feb.invoiceId });
      expect(stored.lineItems.find((l) => l.type === 'correction')).toMatchObject({
        name: 'Correction for 2026-01-01 – 2026-02-01: GPU time', product_id: s.productId, starting_at: JAN, ending_before: FEB, corrected_invoice_id: jan.invoiceId,
      });
      expect(await ledger(grantId)).toEqual([`${jan.invoiceId}:-600`, `${feb.invoiceId}:-400`]);
      await finalize(feb.invoiceId);
      // More late January usage: the commit is spent, so it is billed in cash.
      await s.ingest([{ id: 'jan-later', at: '2026-01-21T00:00:00Z', seconds: 50 }]);
      expect(await freeze(input(s.contractId, MAR, '2026-04-01T00:00:00.000Z'))).toEqual({ status: 'DRAFT', total: '50' });
      expect(await drawn(grantId)).toBe('1000');
      await clean(s.customerId);
    });

    test('a segment that ended still covers late usage of its own time; a later segment does not', async () => {
      const em = orm.em.fork();
      const s = await seedContract(em, { startingAt: JAN, endingBefore: '2026-04-01T00:00:00.000Z', price: '1' });
      const janOnly = commit(em, s, s.contractId, '1000', { endingBefore: FEB });
      const fromFeb = commit(em, s, s.contractId, '1000', { startingAt: FEB });
      await em.flush();
      const jan = input(s.contractId, JAN, FEB);
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 900 }]);
      await freeze(jan);
      await finalize(jan.invoiceId);
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }, { id: 'feb', at: '2026-02-10T00:00:00Z', seconds: 200 }]);
      // 100 of the late 300 from January's commit (what it had left); the other 200 in cash; February's own from February's.
      expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '200' });
      expect([await drawn(janOnly), await drawn(fromFeb)]).toEqual(['1000', '200']);
      await clean(s.customerId);
    });

    test('an ended contract\'s late-usage invoice draws on its commit and writes the ledger', async () => {
      const em = orm.em.fork();
      const s = await seedContract(em, { startingAt: JAN, endingBefore: FEB, price: '1' });
      const grantId = commit(em, s, s.contractId, '1000', { endingBefore: FEB });
      await em.flush();
      const jan = input(s.contractId, JAN, FEB);
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 600 }]);
      await freeze(jan);
      await finalize(jan.invoiceId);
      await s.ingest([{ id: 'jan-late', at: '2026-01-31T23:00:00Z', seconds: 500 }]);
      const late = await orm.em.fork().transactional((tx) => freezeLateUsageInvoiceTx(tx, s.contractId));
      expect(late).toMatchObject({ status: 'DRAFT', total: '100' }); // 400 left of the commit, 100 in cash
      expect(await lines(late!.invoiceId)).toEqual(['correction:500', 'applied_commit_or_credit:-400']);
      expect(await ledger(grantId)).toEqual([`${jan.invoiceId}:-600`, `${late!.invoiceId}:-400`]);
      await finalize(late!.invoiceId);
      await clean(s.customerId);
    });

    test('what rolled over to the renewal is not drawn again by the old period\'s late usage', async () => {
      const em = orm.em.fork();
      const old = await seedContract(em, { startingAt: JAN, endingBefore: FEB, price: '1' });
      const grantId = commit(em, old, old.contractId, '1000', { endingBefore: FEB, rolloverFraction: '0.5' });
      const renewalId = renewal(em, old);
      await em.flush();
      const jan = input(old.contractId, JAN, FEB);
      await old.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 600 }]);
      await freeze(jan);
      await finalize(jan.invoiceId);
      // Half of the 400 left rolls over to the renewal: 200 stay with January's segment.
      expect(await orm.em.fork().transactional((tx) => rollOverToSuccessor(tx, old.contractId))).toEqual({ rolled: 1 });
      const rolled = await orm.em.fork().findOneOrFail(BalanceGrant, { rolledOverFrom: { grant_id: grantId } } as never);
      await old.ingest([{ id: 'jan-late', at: '2026-01-31T00:00:00Z', seconds: 300 }, { id: 'feb', at: '2026-02-10T00:00:00Z', seconds: 50 }]);
      // The renewal bills January's late 300: 200 from what January's segment kept, 100 in cash; its own 50 from the rolled-over credit.
      expect(await freeze(input(renewalId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '100' });
      expect([await drawn(grantId), await drawn(rolled.id)]).toEqual(['800', '50']);
      await clean(old.customerId);
    });

    test('voiding and regenerating the corrected period draws the commit once for all its usage', async () => {
      const { s, grant: grantId, jan, feb } = await setup(600, [{ amount: '1000' }]);
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }]);
      expect(await freeze(feb)).toEqual({ status: 'DRAFT', total: '0' }); // the late 300 from the commit
      await finalize(feb.invoiceId);
      // January voided (its 600 given back) and regenerated: 900 of usage, 300 of it billed on February.
      await orm.em.fork().nativeUpdate(Invoice, { id: jan.invoiceId }, { status: 'VOID', voidedAt: new Date() });
      const again = { ...jan, invoiceId: uuidV5(`regenerated:${jan.invoiceId}`), regeneratedFromInvoiceId: jan.invoiceId };
      // The commit draws on the 600 not billed elsewhere: nothing refunded that was never paid.
      expect(await freeze(again)).toEqual({ status: 'DRAFT', total: '0' });
      expect(await lines(again.invoiceId)).toEqual(['usage:900', 'correction:-300', 'applied_commit_or_credit:-600']);
      const [live] = await orm.em.fork().execute<{ drawn: string }[]>(
        `select (-sum(l.amount))::text as drawn from balance_ledger l join invoice i on i.id = l.invoice_id where l.grant_id = ? and i.status <> 'VOID'`, [grantId]);
      expect(live!.drawn).toBe('900'); // February's 300 and the regenerated January's 600
      await finalize(again.invoiceId);
      await clean(s.customerId);
    });
    test('late usage that goes down again gives back what the commit drew on it, not cash', async () => {
      const { s, grant: grantId, jan, feb, mar } = await setup(600, [{ amount: '1000' }]);
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }]);
      expect(await freeze(feb)).toEqual({ status: 'DRAFT', total: '0' }); // the late 300 from the commit
      await finalize(feb.invoiceId);
      // January's usage goes back down by 300: the commit gets its 300 back; nothing is paid out.
      await s.ingest([{ id: 'jan-undo', at: '2026-01-21T00:00:00Z', seconds: -300 }]);
      const draft = (await customerDrafts(orm.em.fork(), s.customerId, new Date('2026-03-15T00:00:00Z'))).find((d) => d.view.id === mar.invoiceId)!;
      expect(draft.view.total).toBe('0');
      expect(await freeze(mar)).toEqual({ status: 'DRAFT', total: '0' });
      expect(await lines(mar.invoiceId)).toEqual(['usage:0', 'correction:-300', 'applied_commit_or_credit:300']);
      const ledgerTypes = (await orm.em.fork().find(BalanceLedgerEntry, { grantId, invoiceId: mar.invoiceId })).map((e) => `${e.type}:${e.amount}`);
      expect(ledgerTypes).toEqual(['PREPAID_COMMIT_CREDITED:300']);
      expect(await drawn(grantId)).toBe('600');
      await finalize(mar.invoiceId);
      await clean(s.customerId);
    });

    test('an ended contract\'s late-usage invoice leaves customer-level commits to the live contracts, whose frozen invoices match their drafts', async () => {
      const em = orm.em.fork();
      const o = await seedContract(em, { startingAt: JAN, endingBefore: FEB, price: '1' });
      const cId = newId();
      em.create(Contract, {
        id: cId, customerId: o.customerId, rateCardId: o.rateCardId, startingAt: new Date(JAN), endingBefore: new Date('2026-04-01T00:00:00.000Z'),
        usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, terms: {}, createdAt: new Date(JAN),
      } as never);
      const grantId = commit(em, o, null, '600'); // customer-level
      await em.flush();
      await o.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]); // each contract prices it
      for (const id of [o.contractId, cId]) await freeze(input(id, JAN, FEB));
      for (const id of [invoiceIdFor(o.contractId, JAN), invoiceIdFor(cId, JAN)]) await finalize(id);
      expect(await drawn(grantId)).toBe('200');
      await o.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }, { id: 'feb', at: '2026-02-10T00:00:00Z', seconds: 200 }]);
      const draft = (await customerDrafts(orm.em.fork(), o.customerId, new Date('2026-02-15T00:00:00Z'))).find((d) => d.view.id === invoiceIdFor(cId, FEB))!;
      expect(draft.view.total).toBe('100'); // C's late 300 and its own 200, 400 of them from the commit
      const late = await orm.em.fork().transactional((tx) => freezeLateUsageInvoiceTx(tx, o.contractId));
      expect(late).toMatchObject({ status: 'DRAFT', total: '300' }); // in cash: the commit is the live contract's to draw
      expect(await freeze(input(cId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '100' });
      expect(await drawn(grantId)).toBe('600');
      await finalize(late!.invoiceId);
      await finalize(invoiceIdFor(cId, FEB));
      await clean(o.customerId);
    });
    test('usage that goes down gives back what a free credit drew on the finalized invoice itself: nothing is paid out', async () => {
      const em = orm.em.fork();
      const s = await seedContract(em, { startingAt: JAN, endingBefore: MAR, price: '1' });
      const grantId = commit(em, s, s.contractId, '1000', { kind: 'CREDIT' });
      await em.flush();
      const jan = input(s.contractId, JAN, FEB);
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 600 }]);
      await freeze(jan);
      await finalize(jan.invoiceId);
      await s.ingest([{ id: 'jan-undo', at: '2026-01-21T00:00:00Z', seconds: -300 }]);
      expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '0' });
      expect(await drawn(grantId)).toBe('300');
      await finalize(invoiceIdFor(s.contractId, FEB));
      await clean(s.customerId);
    });

    test('a period whose usage went down and was given back to the commit on another invoice is not voided', async () => {
      const em = orm.em.fork();
      const s = await seedContract(em, { startingAt: JAN, endingBefore: '2026-05-01T00:00:00.000Z', price: '1' });
      commit(em, s, s.contractId, '1000');
      await em.flush();
      const jan = input(s.contractId, JAN, FEB);
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 600 }]);
      await freeze(jan);
      await finalize(jan.invoiceId);
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }]);
      await freeze(input(s.contractId, FEB, MAR));
      await finalize(invoiceIdFor(s.contractId, FEB));
      expect(await voidBlockedByGiveBacks(orm.em.fork(), [jan.invoiceId])).toBeUndefined(); // a rise drawn elsewhere: voidable
      await s.ingest([{ id: 'jan-undo', at: '2026-01-21T00:00:00Z', seconds: -300 }]);
      const mar = invoiceIdFor(s.contractId, MAR);
      await freeze(input(s.contractId, MAR, '2026-04-01T00:00:00.000Z'));
      // March gave the commit back 300 of what January's period drew: voiding January would give it back again.
      expect(await voidBlockedByGiveBacks(orm.em.fork(), [jan.invoiceId])).toBe(
        `invoice ${mar} gave back to commits what invoice ${jan.invoiceId} drew (its usage went down later); voiding invoice ${jan.invoiceId} would give it back twice`);
      expect(await voidBlockedByGiveBacks(orm.em.fork(), [jan.invoiceId, mar])).toBeUndefined(); // both at once: each draw and give-back goes
      await finalize(mar);
      await clean(s.customerId);
    });

    test('a POSTPAID minimum stops counting late usage that went away: the true-up bills the whole shortfall', async () => {
      const em = orm.em.fork();
      const APR = '2026-04-01T00:00:00.000Z';
      const s = await seedContract(em, { startingAt: JAN, endingBefore: APR, price: '1' });
      commit(em, s, s.contractId, '1000', { kind: 'POSTPAID', endingBefore: APR });
      await em.flush();
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
      const totals = [(await freeze(input(s.contractId, JAN, FEB))).total];
      await finalize(invoiceIdFor(s.contractId, JAN));
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }]);
      totals.push((await freeze(input(s.contractId, FEB, MAR))).total);
      await finalize(invoiceIdFor(s.contractId, FEB));
      await s.ingest([{ id: 'jan-undo', at: '2026-01-21T00:00:00Z', seconds: -300 }]);
      totals.push((await freeze(input(s.contractId, MAR, APR))).total);
      // 100 of usage in all, under a 1000 minimum: 1000 billed over the three invoices.
      expect(totals).toEqual(['100', '300', '600']);
      expect(await lines(invoiceIdFor(s.contractId, MAR))).toEqual(['usage:0', 'correction:-300', 'postpaid_trueup:900']);
      await finalize(invoiceIdFor(s.contractId, MAR));
      await clean(s.customerId);
    });

    test('an ended contract\'s late-usage invoice gives back to the customer-level commit that drew on the earlier correction', async () => {
      const em = orm.em.fork();
      const s = await seedContract(em, { startingAt: JAN, endingBefore: MAR, price: '1' });
      const grantId = commit(em, s, null, '1000');
      await em.flush();
      await s.ingest([{ id: 'jan', at: '2026-01-10T00:00:00Z', seconds: 100 }]);
      await freeze(input(s.contractId, JAN, FEB));
      await finalize(invoiceIdFor(s.contractId, JAN));
      await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }]);
      expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '0' });
      await finalize(invoiceIdFor(s.contractId, FEB));
      await s.ingest([{ id: 'jan-undo', at: '2026-01-21T00:00:00Z', seconds: -300 }]);
      const late = await orm.em.fork().transactional((tx) => freezeLateUsageInvoiceTx(tx, s.contractId));
      expect(late).toMatchObject({ status: 'DRAFT', total: '0' });
      expect(await drawn(grantId)).toBe('100');
      await finalize(late!.invoiceId);
      await clean(s.customerId);
    });
    describe('usage that goes down: commits keep at most the line\'s new total, a minimum counts at most its cash', () => {
      const drop = (s: { ingest: (e: { id: string; at: string; seconds: number }[]) => Promise<void> }, by: number, id = 'jan-undo') =>
        s.ingest([{ id, at: '2026-01-21T00:00:00Z', seconds: -by }]);

      test('a commit that covered part of the line gives back only what it holds beyond the new total; the rest in cash', async () => {
        const { s, ids: [grantId] } = await setup(120, [{ amount: '100', kind: 'PREPAID', endingBefore: FEB }]); // 100 from the commit, 20 cash
        await drop(s, 30);
        expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '-20' });
        expect(await drawn(grantId!)).toBe('90');
        await finalize(invoiceIdFor(s.contractId, FEB));
        await clean(s.customerId);
      });

      test('a POSTPAID minimum uncounts only what is no longer billed in cash', async () => {
        const { s } = await setup(120, [{ amount: '100', kind: 'POSTPAID', endingBefore: MAR }]); // 100 counted
        await drop(s, 30);
        // 90 billed now, all counted: the true-up is 10.
        expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '-20' });
        expect(await lines(invoiceIdFor(s.contractId, FEB))).toEqual(['usage:0', 'correction:-30', 'postpaid_trueup:10']);
        await finalize(invoiceIdFor(s.contractId, FEB));
        await clean(s.customerId);
      });

      test('one fall is given back once, between a prepaid commit and a POSTPAID minimum', async () => {
        const { s, ids: [prepaid] } = await setup(150, [{ amount: '100', kind: 'PREPAID', endingBefore: FEB }, { amount: '100', kind: 'POSTPAID', endingBefore: MAR }]);
        await drop(s, 30);
        // 120 billed now: the commit keeps its 100; 20 in cash, all the minimum counts: a true-up of 80.
        expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '50' });
        expect(await drawn(prepaid!)).toBe('100');
        await finalize(invoiceIdFor(s.contractId, FEB));
        await clean(s.customerId);
      });

      test('a line frozen before draws were recorded per line counts as paid in cash; what its corrections drew goes back', async () => {
        const { s, ids: [grantId] } = await setup(100, [{ amount: '200', kind: 'PREPAID', endingBefore: '2027-01-01T00:00:00.000Z' }], { asStoredEarlier: true });
        await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 50 }]);
        expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '0' });
        await finalize(invoiceIdFor(s.contractId, FEB));
        await drop(s, 50);
        expect(await freeze(input(s.contractId, MAR, APR))).toEqual({ status: 'DRAFT', total: '0' });
        expect(await drawn(grantId!)).toBe('100');
        await finalize(invoiceIdFor(s.contractId, MAR));
        await clean(s.customerId);
      });

      test('a regenerated period\'s later fall gives back what the commit drew on it before and after the void', async () => {
        const { s, ids: [grantId] } = await setup(600, [{ amount: '1000', kind: 'PREPAID', endingBefore: '2027-01-01T00:00:00.000Z' }]);
        await s.ingest([{ id: 'jan-late', at: '2026-01-20T00:00:00Z', seconds: 300 }]);
        expect(await freeze(input(s.contractId, FEB, MAR))).toEqual({ status: 'DRAFT', total: '0' }); // the late 300 from the commit
        await finalize(invoiceIdFor(s.contractId, FEB));
        const jan = invoiceIdFor(s.contractId, JAN);
        await orm.em.fork().nativeUpdate(Invoice, { id: jan }, { status: 'VOID', voidedAt: new Date() });
        const again = { ...input(s.contractId, JAN, FEB), invoiceId: uuidV5(`regenerated:${jan}`), regeneratedFromInvoiceId: jan };
        expect(await freeze(again)).toEqual({ status: 'DRAFT', total: '0' });
        await finalize(again.invoiceId);
        await drop(s, 700); // January now 200
        expect(await freeze(input(s.contractId, MAR, APR))).toEqual({ status: 'DRAFT', total: '0' });
        const [live] = await orm.em.fork().execute<{ drawn: string }[]>(
          `select (-sum(l.amount))::text as drawn from balance_ledger l join invoice i on i.id = l.invoice_id where l.grant_id = ? and i.status <> 'VOID'`, [grantId]);
        expect(live!.drawn).toBe('200');
        await finalize(invoiceIdFor(s.contractId, MAR));
        await clean(s.customerId);
      });
    });
  });
});
