import type { MikroORM } from '@mikro-orm/postgresql';
import { USD_CENTS } from '../billing/money.js';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, eventually } from '../test/stack.js';
import { Contract } from './entities.js';
import { newId } from './ids.js';
import { failGatedCommit, failRecharge, grantGatedCommit, grantRecharge, holdGatedCommit, rechargeInvoiceId, voidBlockedByLiveCommit } from './recharge.js';
import { reconcile } from './reconcile.js';
import { preloadDrafts } from './invoices.js';

/**
 * `payment_gate.payment_status` carries the amount exactly as stored — digits a double cannot
 * hold (above 2^53, or with a fraction of a cent) go out unchanged, on real PostgreSQL.
 */
describe('payment-gate notices carry exact amounts', () => {
  let orm: MikroORM;
  beforeAll(async () => { orm = (await createTestDatabase('rechargeamounts')).orm; });
  afterAll(async () => { await orm?.close(); });

  const BIG = '123456789012345678901';
  const amounts = async (customerId: string) => (await orm.em.fork().execute<{ status: string; amount: string }[]>(
    `select properties ->> 'payment_status' as status, properties ->> 'amount' as amount from outbound_event where type = 'payment_gate.payment_status' and customer_id = ? order by created_at, properties ->> 'payment_status'`, [customerId]));

  test('recharges granted and failed, gated commits granted and failed', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00.000Z', price: '1' });
    await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { prepaid_balance_threshold_configuration: { commit: { product_id: s.productId }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: '100', recharge_to_amount: '500' } } });
    for (const [n, amount] of [[1, BIG], [2, '1600.25']] as const) {
      await orm.em.fork().execute(`insert into recharge (contract_id, kind, n, customer_id, amount, balance_before, status) values (?, 'prepaid', ?, ?, ?, 0, 'PENDING')`, [s.contractId, n, s.customerId, amount]);
    }
    await grantRecharge(orm.em.fork(), s.contractId, 1);
    await failRecharge(orm.em.fork(), s.contractId, 2, 'declined');
    expect(await amounts(s.customerId)).toEqual([{ status: 'paid', amount: BIG }, { status: 'failed', amount: '1600.25' }]);

    const g = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00.000Z', price: '1' });
    const gated = async (amount: string) => {
      const id = newId();
      await orm.em.fork().transactional((tx) => holdGatedCommit(tx, {
        id, customerId: g.customerId, contractId: g.contractId, kind: 'PREPAID', productId: g.productId, name: 'Gated', description: null, priority: 0,
        applicableProductIds: null, applicableProductTags: null, applicableContractIds: null, specifiers: null,
        accessSchedule: { credit_type_id: USD_CENTS.id, schedule_items: [{ id: newId(), amount, starting_at: '2026-01-01T00:00:00.000Z', ending_before: '2027-01-01T00:00:00.000Z' }] },
        invoiceSchedule: null, invoiceContractId: null, rolloverFraction: null, rateType: null, customFields: {}, uniquenessKey: null, amendmentId: null, externalIds: null,
        rolledOver: null, rolledOverFrom: null, createdAt: new Date(), archivedAt: null,
      }));
      return id;
    };
    await grantGatedCommit(orm.em.fork(), await gated(BIG));
    await failGatedCommit(orm.em.fork(), await gated('9007199254740993'), 'declined');
    expect(await amounts(g.customerId)).toEqual([{ status: 'paid', amount: BIG }, { status: 'failed', amount: '9007199254740993' }]);
  });

  test('a recharge billed on its own invoice: voiding that invoice is refused while the commit lives, and reconciliation reports a live commit billed nowhere', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00.000Z', price: '1' });
    await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { prepaid_balance_threshold_configuration: { commit: { product_id: s.productId }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: '100', recharge_to_amount: '500' } } });
    await orm.em.fork().execute(`insert into recharge (contract_id, kind, n, customer_id, amount, balance_before, status) values (?, 'prepaid', 1, ?, '400', 100, 'PENDING')`, [s.contractId, s.customerId]);
    const { grantId } = await grantRecharge(orm.em.fork(), s.contractId, 1);
    const invoiceId = rechargeInvoiceId(s.contractId, 1);
    const unbilled = async () => (await reconcile(orm.em.fork(), { customerId: s.customerId })).commits;
    expect(await unbilled()).toEqual([]);
    // The void route asks this inside its transaction: the live commit blocks it.
    expect(await orm.em.fork().transactional((tx) => voidBlockedByLiveCommit(tx, { id: invoiceId, customerId: s.customerId, type: 'SCHEDULED' }))).toBe(grantId);
    // Voided anyway (as a void without that rule did): the commit is live and billed nowhere.
    await orm.em.fork().execute(`update invoice set status = 'VOID', voided_at = now() where id = ?`, [invoiceId]);
    const report = await reconcile(orm.em.fork(), { customerId: s.customerId });
    expect(report.commits).toEqual([{ commitId: grantId, contractId: s.contractId, invoices: 0 }]);
    expect(report.drifting).toBeGreaterThanOrEqual(1);
    // Its balance ended (archived): nothing unbilled remains usable, and nothing blocks the void.
    await orm.em.fork().execute(`update balance_grant set archived_at = now() where id = ?`, [grantId]);
    expect(await unbilled()).toEqual([]);
    expect(await orm.em.fork().transactional((tx) => voidBlockedByLiveCommit(tx, { id: invoiceId, customerId: s.customerId, type: 'SCHEDULED' }))).toBeUndefined();
  });

  test('a contract archived while its recharge waits to be granted: nothing is granted or billed, the recharge is FAILED with the reason', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00.000Z', price: '1' });
    await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { prepaid_balance_threshold_configuration: { commit: { product_id: s.productId }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: '100', recharge_to_amount: '500' } } });
    await orm.em.fork().execute(`insert into recharge (contract_id, kind, n, customer_id, amount, balance_before, status) values (?, 'prepaid', 1, ?, '400', 100, 'PENDING')`, [s.contractId, s.customerId]);
    // Archiving holds the contract's row (as the archive route does) while the grant runs.
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let rowLocked!: () => void;
    const locked = new Promise<void>((r) => { rowLocked = r; });
    const archiving = orm.em.fork().transactional(async (tx) => {
      await tx.execute('select id from contract where id = ? for update', [s.contractId]);
      rowLocked();
      await held;
      await tx.execute('update contract set archived_at = now() where id = ?', [s.contractId]);
      await tx.execute('update balance_grant set archived_at = now() where contract_id = ? and archived_at is null', [s.contractId]);
    });
    await locked;
    const granting = grantRecharge(orm.em.fork(), s.contractId, 1);
    // The grant must wait for the archive's row lock (a grant reading the contract unlocked never does).
    await eventually('the grant waits on the contract row', async () => expect(await orm.em.fork().execute(
      `select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%from "contract"%for update%'`)).toEqual([{ n: 1 }]), 20_000);
    release();
    await archiving;
    const granted = await granting;
    expect(granted).toEqual({ grantId: expect.any(String), created: false, skipped: `contract ${s.contractId} was archived` });
    expect(await orm.em.fork().execute(`select status, failure, grant_id from recharge where contract_id = ?`, [s.contractId])).toEqual([{ status: 'FAILED', failure: `contract ${s.contractId} was archived`, grant_id: null }]);
    expect(await orm.em.fork().execute(`select count(*)::int as n from balance_grant where id = ?`, [granted.grantId])).toEqual([{ n: 0 }]);
    expect(await orm.em.fork().execute(`select count(*)::int as n from invoice where contract_id = ? and type = 'SCHEDULED'`, [s.contractId])).toEqual([{ n: 0 }]);
    // Retried (the activity's next attempt): still nothing.
    expect((await grantRecharge(orm.em.fork(), s.contractId, 1)).created).toBe(false);
    expect(await orm.em.fork().execute(`select count(*)::int as n from balance_grant where id = ?`, [granted.grantId])).toEqual([{ n: 0 }]);
  });

  test('a finalized SCHEDULED invoice is never taken for a period with late usage (its instant falls on a day with usage)', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00.000Z', price: '1' });
    await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { prepaid_balance_threshold_configuration: { commit: { product_id: s.productId }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: '100', recharge_to_amount: '500' } } });
    await orm.em.fork().execute(`insert into recharge (contract_id, kind, n, customer_id, amount, balance_before, status) values (?, 'prepaid', 1, ?, '400', 100, 'PENDING')`, [s.contractId, s.customerId]);
    await grantRecharge(orm.em.fork(), s.contractId, 1, 'prepaid', new Date(Date.now() - 60_000));
    await orm.em.fork().execute(`update invoice set status = 'FINALIZED', frozen_at = now() - interval '2 hours' where id = ?`, [rechargeInvoiceId(s.contractId, 1)]);
    // Usage rated on the recharge's day, after the invoice was frozen.
    await orm.em.fork().execute(`insert into usage_daily (metric_id, customer_id, day, event_count, value_sum) select billable_metric_id, ?, date_trunc('day', now(), 'UTC'), 1, 1 from product where id = ?`, [s.customerId, s.productId]);
    expect([...(await preloadDrafts(orm.em.fork(), [s.customerId], new Date())).mayHaveCorrections]).not.toContain(s.contractId);
    // That row stands for no raw event: removed, so the database still reconciles.
    await orm.em.fork().execute(`delete from usage_daily where customer_id = ?`, [s.customerId]);
  });
});
