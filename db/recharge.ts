import { LockMode } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Decimal } from 'decimal.js';
import { dec, jsonDecimal, sum, USD_CENTS } from '../billing/money.js';
import type { PaymentGateConfig } from '../billing/stripe-metadata.js';
import { rechargeStep, spendThresholdStep, type RechargeKind, type RechargeStatus, type SpendThresholdConfig, type ThresholdConfig } from '../billing/recharge.js';
import { customerBalances } from './balances.js';
import { BalanceGrant, Contract, Invoice } from './entities.js';
import { storeScheduledInvoiceTx } from './invoice-freeze.js';
import { uuidV5 } from './ids.js';
import { customerDrafts, usageTotal, type DraftsPreload } from './invoices.js';
import { enqueueNotification } from './notifications.js';
import { pgTextArray } from './sql.js';

/**
 * Auto-recharge, evaluated with the alerts: in the evaluator's round, under the
 * customer's lock, each live contract with an enabled `prepaid_balance_threshold_configuration`
 * is measured with the invoice code (the same drafts and balances the alerts use) and moved by
 * `rechargeStep`; a crossing writes the state and the recharge row (`n` = the crossing's number)
 * in the round's transaction, so one crossing is one recharge — a second rating pass, a second
 * evaluator or a retried round finds the state `recharging`. The outbound loop then starts
 * `recharge/<contract>/<n>` for every row not started yet (db/recharge.ts `unstartedRecharges`).
 */
export type RechargeContract = { id: string; customerId: string } & ({ kind: 'prepaid'; config: ThresholdConfig } | { kind: 'spend'; config: SpendThresholdConfig });

/** The terms key of each kind. */
export const CONFIG_KEY = { prepaid: 'prepaid_balance_threshold_configuration', spend: 'spend_threshold_configuration' } as const;

/** Live contracts of these customers with an enabled threshold configuration (one entry per kind). */
export async function rechargeContracts(em: EntityManager, customerIds: string[], now: Date): Promise<RechargeContract[]> {
  if (!customerIds.length) return [];
  const rows = await em.execute<{ id: string; customer_id: string; prepaid: ThresholdConfig | null; spend: SpendThresholdConfig | null }[]>(`
    select id::text as id, customer_id::text as customer_id, terms -> 'prepaid_balance_threshold_configuration' as prepaid, terms -> 'spend_threshold_configuration' as spend
    from contract where customer_id = any(?::uuid[]) and archived_at is null and starting_at <= ? and (ending_before is null or ending_before > ?)
      and ((terms -> 'prepaid_balance_threshold_configuration' ->> 'is_enabled')::boolean or (terms -> 'spend_threshold_configuration' ->> 'is_enabled')::boolean)`, [pgTextArray(customerIds), now, now]);
  return rows.flatMap((r) => [
    ...(r.prepaid?.is_enabled ? [{ id: r.id, customerId: r.customer_id, kind: 'prepaid' as const, config: r.prepaid }] : []),
    ...(r.spend?.is_enabled ? [{ id: r.id, customerId: r.customer_id, kind: 'spend' as const, config: r.spend }] : []),
  ]);
}

/** The contract's remaining prepaid balance now: its prepaid commits (and customer-level ones it may use) in effect, after draw-downs. */
export function prepaidBalance(balances: Awaited<ReturnType<typeof customerBalances>>, contractId: string, at: number): Decimal {
  const mine = balances.filter((b) => b.grant.kind === 'PREPAID'
    && (b.grant.contractId === contractId || (b.grant.contractId === null && (!b.grant.applicableContractIds || b.grant.applicableContractIds.includes(contractId))))
    && b.segments.some((s) => s.startingAt <= at && at < s.endingBefore));
  return sum(mine.map((b) => b.balance));
}

/**
 * What a spend threshold measures: what the current period's invoice owes (after commits and
 * credits), but never more than its usage and subscription charges minus what spend-threshold
 * charges of the period have billed already — lines a commit cannot draw down (a scheduled
 * charge, a true-up) or usage outside the commit's products would otherwise call for a charge
 * again after every charge.
 */
async function spendOwed(tx: EntityManager, contractId: string, current: { view: { periodStart: string; total: string; lines: { type: string; total: string }[] } }[]): Promise<Decimal> {
  if (!current.length) return dec(0);
  const owed = sum(current.map((d) => dec(d.view.total)));
  const spend = sum(current.map((d) => usageTotal(d.view.lines)));
  const [billed] = await tx.execute<{ amount: string | null }[]>(`
    select sum(amount)::text as amount from recharge where contract_id = ? and kind = 'spend' and status <> 'FAILED' and access_from = any(?::timestamptz[])`,
  [contractId, `{${current.map((d) => d.view.periodStart).join(',')}}`]);
  const unbilled = spend.minus(dec(billed?.amount ?? 0));
  return owed.lt(unbilled) ? owed : unbilled;
}

/** Evaluates the given contracts inside the caller's transaction (which holds their customers' locks); returns the recharges started. */
export async function evaluateRecharges(tx: EntityManager, contracts: RechargeContract[], now: Date, preload: DraftsPreload): Promise<{ contractId: string; kind: RechargeKind; n: number }[]> {
  if (!contracts.length) return [];
  const states = new Map((await tx.execute<{ contract_id: string; kind: RechargeKind; status: RechargeStatus; crossings: number }[]>(
    'select contract_id::text as contract_id, kind, status, crossings from contract_recharge_state where contract_id = any(?::uuid[])',
    [pgTextArray(contracts.map((c) => c.id))])).map((r) => [`${r.contract_id}:${r.kind}`, r]));
  const started: { contractId: string; kind: RechargeKind; n: number }[] = [];
  const t = now.getTime();
  for (const customerId of new Set(contracts.map((c) => c.customerId))) {
    const drafts = await customerDrafts(tx, customerId, now, { preload });
    const balances = contracts.some((c) => c.customerId === customerId && c.kind === 'prepaid') ? await customerBalances(tx, customerId, { now, drafts }) : [];
    for (const c of contracts.filter((x) => x.customerId === customerId)) {
      const prev = states.get(`${c.id}:${c.kind}`);
      // prepaid: what is left of the prepaid balance; spend: what the current period's invoice owes.
      const current = drafts.filter((d) => d.contract.id === c.id && Date.parse(d.view.periodStart) <= t && t < Date.parse(d.view.periodEnd));
      const measured = c.kind === 'prepaid' ? prepaidBalance(balances, c.id, t) : await spendOwed(tx, c.id, current);
      const step = c.kind === 'prepaid' ? rechargeStep(prev?.status, measured, c.config) : spendThresholdStep(prev?.status, measured, c.config);
      if (prev?.status === step.status && !step.recharge) continue;
      const n = (prev?.crossings ?? 0) + (step.recharge ? 1 : 0);
      await tx.execute(`
        insert into contract_recharge_state (contract_id, kind, status, crossings) values (?, ?, ?, ?)
        on conflict (contract_id, kind) do update set status = excluded.status, crossings = excluded.crossings, updated_at = now()`, [c.id, c.kind, step.status, n]);
      if (step.recharge) {
        // A spend-threshold commit covers the period's usage from its start.
        const accessFrom = c.kind === 'spend' && current.length ? current[0]!.view.periodStart : null;
        await tx.execute('insert into recharge (contract_id, kind, n, customer_id, amount, balance_before, access_from, status) values (?, ?, ?, ?, ?, ?, ?, ?)',
          [c.id, c.kind, n, customerId, step.recharge, measured.toFixed(), accessFrom, 'PENDING']);
        started.push({ contractId: c.id, kind: c.kind, n });
      }
    }
  }
  return started;
}

export interface RechargeRow {
  contractId: string;
  kind: RechargeKind;
  n: number;
  accessFrom: string | null;
  customerId: string;
  amount: string;
  balanceBefore: string;
  status: 'PENDING' | 'PAID' | 'GRANTED' | 'FAILED';
  externalInvoiceId: string | null;
  grantId: string | null;
  failure: string | null;
}

export async function findRecharge(em: EntityManager, contractId: string, n: number, kind: RechargeKind = 'prepaid'): Promise<RechargeRow | undefined> {
  const [r] = await em.execute<{ contract_id: string; kind: RechargeKind; n: number; access_from: Date | null; customer_id: string; amount: string; balance_before: string; status: RechargeRow['status']; external_invoice_id: string | null; grant_id: string | null; failure: string | null }[]>(`
    select contract_id::text as contract_id, kind, n, access_from, customer_id::text as customer_id, amount::text as amount, balance_before::text as balance_before, status,
      external_invoice_id, grant_id::text as grant_id, failure from recharge where contract_id = ? and kind = ? and n = ?`, [contractId, kind, n]);
  return r && {
    contractId: r.contract_id, kind: r.kind, n: r.n, accessFrom: r.access_from ? new Date(r.access_from).toISOString() : null, customerId: r.customer_id, amount: r.amount,
    balanceBefore: r.balance_before, status: r.status, externalInvoiceId: r.external_invoice_id, grantId: r.grant_id, failure: r.failure,
  };
}

export async function unstartedRecharges(em: EntityManager, limit: number): Promise<{ contractId: string; kind: RechargeKind; n: number; customerId: string }[]> {
  return (await em.execute<{ contract_id: string; kind: RechargeKind; n: number; customer_id: string }[]>(
    'select contract_id::text as contract_id, kind, n, customer_id::text as customer_id from recharge where workflow_started_at is null order by created_at limit ?', [limit]))
    .map((r) => ({ contractId: r.contract_id, kind: r.kind, n: r.n, customerId: r.customer_id }));
}

export async function markRechargeStarted(em: EntityManager, contractId: string, n: number, kind: RechargeKind = 'prepaid'): Promise<void> {
  await em.execute('update recharge set workflow_started_at = coalesce(workflow_started_at, now()) where contract_id = ? and kind = ? and n = ?', [contractId, kind, n]);
}

export async function recordRechargeInvoice(em: EntityManager, contractId: string, n: number, externalId: string, kind: RechargeKind = 'prepaid'): Promise<void> {
  await em.execute('update recharge set external_invoice_id = ?, updated_at = now() where contract_id = ? and kind = ? and n = ? and external_invoice_id is null', [externalId, contractId, kind, n]);
}

const paymentGateNotice = async (tx: EntityManager, r: RechargeRow, status: 'paid' | 'failed', extra: Record<string, unknown>) => enqueueNotification(tx, {
  type: 'payment_gate.payment_status', dedupKey: `${r.kind === 'prepaid' ? 'recharge' : 'spend-threshold'}:${r.contractId}:${r.n}:${status}`, customerId: r.customerId,
  properties: {
    contract_id: r.contractId, customer_id: r.customerId, ...(r.kind === 'prepaid' ? { recharge_number: r.n } : { spend_threshold_number: r.n }),
    amount: jsonDecimal(r.amount), payment_status: status, payment_gate_type: extra.payment_gate_type, ...extra,
  },
});

/**
 * Takes the customer's evaluation lock (the one `evaluateDirty` holds for a round, db/alerts.ts):
 * a grant or failure is then never between an evaluator's snapshot of the balances and its read
 * of the recharge state — either the evaluator sees both the commit and the state, or neither.
 */
async function lockCustomerEvaluation(tx: EntityManager, contractId: string): Promise<void> {
  await tx.execute(`select pg_advisory_xact_lock(hashtextextended('alert-customer:' || customer_id::text, 7)) from contract where id = ?`, [contractId]);
}

/** The id of the commit a recharge (or spend-threshold charge) grants: derived, so it is granted once. */
export const rechargeGrantId = (contractId: string, n: number, kind: RechargeKind = 'prepaid') => uuidV5(`${kind === 'prepaid' ? 'recharge' : 'spend-threshold'}:${contractId}:${n}`);

/** The id of the SCHEDULED invoice that bills a recharge (or spend-threshold charge) granted without a payment gate: derived, so it is written once. */
export const rechargeInvoiceId = (contractId: string, n: number, kind: RechargeKind = 'prepaid') => uuidV5(`${kind === 'prepaid' ? 'recharge' : 'spend-threshold'}-invoice:${contractId}:${n}`);

/** What grantRecharge did; `invoice`: the SCHEDULED invoice billing the commit (gate NONE), to be closed like any other. */
export interface GrantedRecharge {
  grantId: string;
  created: boolean;
  invoice?: { id: string; at: string; customerId: string };
  /** Why nothing was granted (the contract was archived or had ended by the grant); the recharge is FAILED with it. */
  skipped?: string;
}

/**
 * The recharge was paid (or needs no payment): the commit is granted, once — its id is derived
 * from (contract, n) — with the recharge marked GRANTED, the contract watching again, and
 * `payment_gate.payment_status` (paid) written, all in one transaction.
 *
 * Without a payment gate (NONE) nothing was collected, so the commit is billed: its invoice
 * schedule has one item at the grant's instant naming its own SCHEDULED invoice, and that invoice
 * is stored in the same transaction (frozen, awaiting its close: approval policy, finalize, email,
 * Stripe). A granted commit is never unbilled, and a retried grant finds both and bills nothing more.
 */
export async function grantRecharge(em: EntityManager, contractId: string, n: number, kind: RechargeKind = 'prepaid', now = new Date()): Promise<GrantedRecharge> {
  return em.transactional(async (tx) => {
    await lockCustomerEvaluation(tx, contractId);
    const [locked] = await tx.execute<{ status: string }[]>('select status from recharge where contract_id = ? and kind = ? and n = ? for update', [contractId, kind, n]);
    if (!locked) throw new Error(`${kind} charge ${contractId}/${n} does not exist`);
    const r = (await findRecharge(tx, contractId, n, kind))!;
    const grantId = rechargeGrantId(contractId, n, kind);
    const invoiceId = rechargeInvoiceId(contractId, n, kind);
    if (r.status === 'GRANTED') {
      const billed = await tx.findOne(Invoice, { id: invoiceId }, { fields: ['periodStart'] });
      return { grantId, created: false, ...(billed ? { invoice: { id: invoiceId, at: billed.periodStart.toISOString(), customerId: r.customerId } } : {}) };
    }
    if (r.status === 'FAILED') return { grantId, created: false, skipped: r.failure ?? 'failed' };
    // The contract's row is locked (as archiving it does): it is not archived between this check and the grant.
    const contract = await tx.findOneOrFail(Contract, { id: contractId }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
    const cfg = contract.terms?.[CONFIG_KEY[kind]];
    if (!cfg) throw new Error(`contract ${contractId} has no ${CONFIG_KEY[kind]}`);
    const over = contract.archivedAt ? `contract ${contractId} was archived` : contract.endingBefore && contract.endingBefore.getTime() <= now.getTime() ? `contract ${contractId} had ended` : undefined;
    if (over && cfg.payment_gate_config.payment_gate_type === 'NONE') {
      // Nothing was collected: nothing is granted or billed on a contract that is over.
      await tx.execute(`update recharge set status = 'FAILED', failure = ?, updated_at = now() where contract_id = ? and kind = ? and n = ?`, [over, contractId, kind, n]);
      return { grantId, created: false, skipped: over };
    }
    const start = r.accessFrom ?? new Date(Math.floor(now.getTime() / 3_600_000) * 3_600_000).toISOString();
    const end = contract.endingBefore ? contract.endingBefore.toISOString() : '2100-01-01T00:00:00.000Z';
    const amount = dec(r.amount).toFixed();
    const at = now.toISOString();
    const billed = cfg.payment_gate_config.payment_gate_type === 'NONE';
    tx.create(BalanceGrant, {
      id: grantId, customerId: r.customerId, contractId, kind: 'PREPAID', productId: cfg.commit.product_id,
      name: cfg.commit.name ?? (kind === 'prepaid' ? `Recharge ${n}` : `Spend threshold ${n}`),
      description: cfg.commit.description ?? ('recharge_to_amount' in cfg ? `Auto-recharge to ${cfg.recharge_to_amount} (threshold ${cfg.threshold_amount})` : `Spend threshold ${cfg.threshold_amount} billed`),
      priority: cfg.commit.priority ?? 100, applicableProductIds: cfg.commit.applicable_product_ids ?? null, applicableProductTags: cfg.commit.applicable_product_tags ?? null,
      applicableContractIds: null, specifiers: null,
      accessSchedule: { credit_type_id: USD_CENTS.id, schedule_items: [{ id: uuidV5(`${kind}-segment:${contractId}:${n}`), amount, starting_at: start, ending_before: end }] },
      // Gated: paid through the payment gate. Ungated: billed on its own invoice, now.
      invoiceSchedule: billed ? { credit_type_id: USD_CENTS.id, schedule_items: [{ id: uuidV5(`${kind}-invoice-item:${contractId}:${n}`), timestamp: at, amount, quantity: '1', unit_price: amount, invoice_id: invoiceId }] } : null,
      invoiceContractId: null, rolloverFraction: null, rateType: null,
      customFields: kind === 'prepaid' ? { accrue_recharge: String(n) } : { accrue_spend_threshold: String(n) }, uniquenessKey: null, amendmentId: null, rolledOver: null, rolledOverFrom: null,
      createdAt: now, archivedAt: null,
    });
    await tx.flush();
    if (billed) await storeScheduledInvoiceTx(tx, contract, invoiceId, at);
    await tx.execute(`update recharge set status = 'GRANTED', grant_id = ?, updated_at = now() where contract_id = ? and kind = ? and n = ?`, [grantId, contractId, kind, n]);
    await tx.execute(`update contract_recharge_state set status = 'ok', updated_at = now() where contract_id = ? and kind = ? and crossings = ?`, [contractId, kind, n]);
    await paymentGateNotice(tx, r, 'paid', {
      payment_gate_type: cfg.payment_gate_config.payment_gate_type, commit_id: grantId, ...(r.externalInvoiceId ? { stripe_invoice_id: r.externalInvoiceId } : {}), ...(billed ? { invoice_id: invoiceId } : {}),
    });
    return { grantId, created: true, ...(billed ? { invoice: { id: invoiceId, at, customerId: r.customerId } } : {}) };
  });
}

/**
 * The commit a SCHEDULED invoice bills, when it is still live (not archived): voiding that invoice
 * would leave the commit's balance usable and billed nowhere, so the void is refused while it is.
 * Locks the commit's row, so it is not archived or drawn from differently meanwhile.
 */
export async function voidBlockedByLiveCommit(tx: EntityManager, inv: { id: string; customerId: string; type: string }): Promise<string | undefined> {
  if (inv.type !== 'SCHEDULED') return undefined;
  const [row] = await tx.execute<{ id: string }[]>(
    `select id from balance_grant where customer_id = ? and archived_at is null and invoice_schedule -> 'schedule_items' @> jsonb_build_array(jsonb_build_object('invoice_id', ?::text)) for update`,
    [inv.customerId, inv.id]);
  return row?.id;
}

/** The recharge's payment failed: nothing granted, the contract waits (no retry loop), `payment_gate.payment_status` (failed) written. */
export async function failRecharge(em: EntityManager, contractId: string, n: number, failure: string, kind: RechargeKind = 'prepaid'): Promise<void> {
  await em.transactional(async (tx) => {
    await lockCustomerEvaluation(tx, contractId);
    const [locked] = await tx.execute<{ status: string }[]>('select status from recharge where contract_id = ? and kind = ? and n = ? for update', [contractId, kind, n]);
    if (!locked || locked.status === 'GRANTED' || locked.status === 'FAILED') return;
    const r = (await findRecharge(tx, contractId, n, kind))!;
    await tx.execute(`update recharge set status = 'FAILED', failure = ?, updated_at = now() where contract_id = ? and kind = ? and n = ?`, [failure, contractId, kind, n]);
    await tx.execute(`update contract_recharge_state set status = 'failed', updated_at = now() where contract_id = ? and kind = ? and crossings = ?`, [contractId, kind, n]);
    await paymentGateNotice(tx, r, 'failed', { payment_gate_type: 'STRIPE', error: failure, ...(r.externalInvoiceId ? { stripe_invoice_id: r.externalInvoiceId } : {}) });
  });
}

/** A payment-gated commit waiting for (or past) its payment. */
export interface GatedCommit {
  grantId: string;
  contractId: string;
  customerId: string;
  amount: string;
  status: 'PENDING' | 'GRANTED' | 'FAILED';
  externalInvoiceId: string | null;
  failure: string | null;
  name: string | null;
  paymentGateConfig: PaymentGateConfig | null;
}

/** What a gated commit costs: its invoice schedule's total when it has one, else what it grants. */
export function gatedCommitAmount(g: Pick<BalanceGrant, 'accessSchedule' | 'invoiceSchedule'>): string {
  const items = g.invoiceSchedule?.schedule_items.length ? g.invoiceSchedule.schedule_items : g.accessSchedule.schedule_items;
  return sum(items.map((i) => dec(i.amount))).toFixed();
}

/**
 * Inside the contract's create transaction: the commit waits here until paid (no balance yet).
 * Its gate's Stripe invoice metadata is kept beside the grant's fields, for its payment.
 */
export async function holdGatedCommit(tx: EntityManager, g: BalanceGrant, gate?: PaymentGateConfig): Promise<void> {
  const spec = { ...g, invoiceSchedule: null, invoiceContractId: null, ...(gate ? { paymentGateConfig: gate } : {}) };
  await tx.execute('insert into gated_commit (grant_id, contract_id, customer_id, amount, grant_spec, status) values (?, ?, ?, ?, ?::jsonb, ?)',
    [g.id, g.contractId, g.customerId, gatedCommitAmount(g), JSON.stringify(spec), 'PENDING']);
}

export async function findGatedCommit(em: EntityManager, grantId: string): Promise<GatedCommit | undefined> {
  const [r] = await em.execute<{ grant_id: string; contract_id: string; customer_id: string; amount: string; status: GatedCommit['status']; external_invoice_id: string | null; failure: string | null; name: string | null; gate: PaymentGateConfig | null }[]>(`
    select grant_id::text as grant_id, contract_id::text as contract_id, customer_id::text as customer_id, amount::text as amount, status,
      external_invoice_id, failure, grant_spec ->> 'name' as name, grant_spec -> 'paymentGateConfig' as gate from gated_commit where grant_id = ?`, [grantId]);
  return r && { grantId: r.grant_id, contractId: r.contract_id, customerId: r.customer_id, amount: r.amount, status: r.status, externalInvoiceId: r.external_invoice_id, failure: r.failure, name: r.name, paymentGateConfig: r.gate ?? null };
}

/**
 * Gated commits whose payment the create route did not start. Only rows older than five minutes:
 * the route itself starts each one right after the contract's workflow, and removes the contract
 * (and its rows) again when that workflow cannot start — a payment started meanwhile from here
 * would charge for a contract that no longer exists.
 */
export async function unstartedGatedCommits(em: EntityManager, limit: number): Promise<{ grantId: string; contractId: string; customerId: string }[]> {
  return (await em.execute<{ grant_id: string; contract_id: string; customer_id: string }[]>(
    `select grant_id::text as grant_id, contract_id::text as contract_id, customer_id::text as customer_id from gated_commit
     where workflow_started_at is null and created_at < now() - interval '5 minutes' order by created_at limit ?`, [limit]))
    .map((r) => ({ grantId: r.grant_id, contractId: r.contract_id, customerId: r.customer_id }));
}

export async function markGatedCommitStarted(em: EntityManager, grantId: string): Promise<void> {
  await em.execute('update gated_commit set workflow_started_at = coalesce(workflow_started_at, now()) where grant_id = ?', [grantId]);
}

export async function recordGatedCommitInvoice(em: EntityManager, grantId: string, externalId: string): Promise<void> {
  await em.execute('update gated_commit set external_invoice_id = ?, updated_at = now() where grant_id = ? and external_invoice_id is null', [externalId, grantId]);
}

/** Paid: the commit is written (its id kept), the row GRANTED and `payment_gate.payment_status` (paid) sent, in one transaction. */
export async function grantGatedCommit(em: EntityManager, grantId: string): Promise<boolean> {
  return em.transactional(async (tx) => {
    const [row] = await tx.execute<{ status: string; grant_spec: Record<string, unknown> }[]>('select status, grant_spec from gated_commit where grant_id = ? for update', [grantId]);
    if (!row) throw new Error(`gated commit ${grantId} does not exist`);
    if (row.status === 'GRANTED') return false;
    const g = (await findGatedCommit(tx, grantId))!;
    const { paymentGateConfig: _gate, ...spec } = row.grant_spec as unknown as BalanceGrant & { createdAt: string; paymentGateConfig?: PaymentGateConfig };
    tx.create(BalanceGrant, { ...spec, createdAt: new Date(), archivedAt: null });
    await tx.flush();
    await tx.execute(`update gated_commit set status = 'GRANTED', updated_at = now() where grant_id = ?`, [grantId]);
    await enqueueNotification(tx, {
      type: 'payment_gate.payment_status', dedupKey: `gated-commit:${grantId}:paid`, customerId: g.customerId,
      properties: { contract_id: g.contractId, customer_id: g.customerId, commit_id: grantId, amount: jsonDecimal(g.amount), payment_status: 'paid', payment_gate_type: 'STRIPE', ...(g.externalInvoiceId ? { stripe_invoice_id: g.externalInvoiceId } : {}) },
    });
    return true;
  });
}

export async function failGatedCommit(em: EntityManager, grantId: string, failure: string): Promise<void> {
  await em.transactional(async (tx) => {
    const [row] = await tx.execute<{ status: string }[]>('select status from gated_commit where grant_id = ? for update', [grantId]);
    if (!row || row.status !== 'PENDING') return;
    const g = (await findGatedCommit(tx, grantId))!;
    await tx.execute(`update gated_commit set status = 'FAILED', failure = ?, updated_at = now() where grant_id = ?`, [failure, grantId]);
    await enqueueNotification(tx, {
      type: 'payment_gate.payment_status', dedupKey: `gated-commit:${grantId}:failed`, customerId: g.customerId,
      properties: { contract_id: g.contractId, customer_id: g.customerId, commit_id: grantId, amount: jsonDecimal(g.amount), payment_status: 'failed', payment_gate_type: 'STRIPE', error: failure, ...(g.externalInvoiceId ? { stripe_invoice_id: g.externalInvoiceId } : {}) },
    });
  });
}
