import type { EntityManager } from '@mikro-orm/postgresql';
import { Decimal } from 'decimal.js';
import { Dec, dec, jsonDecimal, USD_CENTS } from '../billing/money.js';
import { BalanceGrant, BalanceLedgerEntry, Contract, Invoice, Product } from './entities.js';
import { customerDrafts, LEDGER_DEDUCTION_TYPES, type Draft } from './invoices.js';

/**
 * Commit and credit balances from the ledger: segment starts, every draw-down by a frozen
 * invoice (balance_ledger) and by the live drafts of open periods, true-ups and expirations.
 * Balance = what the customer can use now: the active segments' amounts minus their draw-downs.
 */
export interface LedgerEntry {
  type: string;
  amount: Decimal;
  timestamp: string;
  segmentId?: string;
  invoiceId?: string;
  contractId?: string;
  /** From a draft invoice (still changing) rather than a frozen one. */
  draft?: boolean;
}

export interface GrantBalance {
  grant: BalanceGrant;
  ledger: LedgerEntry[];
  balance: Decimal;
  /** Per segment: what is left of it (after draw-downs and rollover, before expiry). */
  segments: { id: string; startingAt: number; endingBefore: number; left: Decimal }[];
}

export async function customerBalances(em: EntityManager, customerId: string, opts: { now?: Date; includeDrafts?: boolean; includeArchived?: boolean; drafts?: Draft[] } = {}): Promise<GrantBalance[]> {
  const now = opts.now ?? new Date();
  const grants = await em.find(BalanceGrant, { customerId, ...(opts.includeArchived ? {} : { archivedAt: null }) }, { orderBy: { createdAt: 'asc', id: 'asc' } });
  if (!grants.length) return [];
  const stored = await em.find(BalanceLedgerEntry, { grantId: { $in: grants.map((g) => g.id) } }, { orderBy: { ts: 'asc' } });
  const voided = new Set((await em.find(Invoice, { id: { $in: [...new Set(stored.map((e) => e.invoiceId))] }, status: 'VOID' })).map((i) => i.id));
  const entries = new Map<string, LedgerEntry[]>(grants.map((g) => [g.id, []]));
  const kindOf = new Map(grants.map((g) => [g.id, g.kind]));
  for (const e of stored) {
    const entry = { type: e.type, amount: dec(e.amount), timestamp: e.ts.toISOString(), segmentId: e.segmentId === 'trueup' ? undefined : e.segmentId, invoiceId: e.invoiceId, contractId: e.contractId };
    if (voided.has(e.invoiceId)) {
      // A voided invoice gives its draw-down back: the deduction stays in the history, cancelled.
      if (!entry.segmentId) continue;
      const kind = kindOf.get(e.grantId)!;
      entries.get(e.grantId)!.push(entry, { ...entry, type: `${kind === 'CREDIT' ? 'CREDIT' : `${kind}_COMMIT`}_CANCELED`, amount: entry.amount.negated() });
      continue;
    }
    entries.get(e.grantId)!.push(entry);
  }
  if (opts.includeDrafts !== false) {
    for (const { view, inv, contract } of opts.drafts ?? await customerDrafts(em, customerId, now)) {
      for (const d of inv.drawdowns) {
        if (d.amount.isZero()) continue;
        const kind = kindOf.get(d.grantId)!;
        const type = d.amount.lt(0) && kind !== 'POSTPAID' ? (kind === 'CREDIT' ? 'CREDIT_CREDITED' : 'PREPAID_COMMIT_CREDITED') : LEDGER_DEDUCTION_TYPES[kind];
        entries.get(d.grantId)?.push({ type, amount: d.amount.negated(), timestamp: view.periodEnd, segmentId: d.segmentId, invoiceId: view.id, contractId: contract.id, draft: true });
      }
    }
  }
  const t = now.getTime();
  return grants.map((g) => {
    const ledger: LedgerEntry[] = [];
    let balance = dec(0);
    const prefix = g.kind === 'CREDIT' ? 'CREDIT' : g.kind === 'PREPAID' ? 'PREPAID_COMMIT' : 'POSTPAID_COMMIT';
    const segments: GrantBalance['segments'] = [];
    for (const s of g.accessSchedule.schedule_items) {
      const start = Date.parse(s.starting_at);
      let end = Date.parse(s.ending_before);
      ledger.push(g.kind === 'POSTPAID'
        ? { type: 'POSTPAID_COMMIT_INITIAL_BALANCE', amount: dec(s.amount), timestamp: s.starting_at }
        : { type: `${prefix}_SEGMENT_START`, amount: dec(s.amount), timestamp: s.starting_at, segmentId: s.id });
      const segEntries = entries.get(g.id)!.filter((e) => e.segmentId === s.id);
      ledger.push(...segEntries);
      let left = segEntries.reduce((acc, e) => acc.plus(e.amount), dec(s.amount));
      // Rolled over to a renewal: that part leaves at the transition, and the segment ends there.
      for (const rolled of g.rolledOver?.filter((r) => r.segment_id === s.id) ?? []) {
        ledger.push({ type: `${prefix}_ROLLOVER`, amount: dec(rolled.amount).negated(), timestamp: rolled.timestamp, segmentId: s.id, contractId: rolled.new_contract_id });
        left = left.minus(rolled.amount);
        end = Math.min(end, Date.parse(rolled.timestamp));
      }
      segments.push({ id: s.id, startingAt: start, endingBefore: end, left });
      if (end <= t && left.gt(0) && g.kind !== 'POSTPAID') ledger.push({ type: `${prefix}_EXPIRATION`, amount: left.negated(), timestamp: new Date(end).toISOString(), segmentId: s.id });
      if (start <= t && t < end) balance = balance.plus(Dec.max(left, 0));
    }
    ledger.push(...entries.get(g.id)!.filter((e) => e.segmentId === undefined));
    ledger.sort((a, b) => a.timestamp.localeCompare(b.timestamp));
    return { grant: g, ledger, balance, segments };
  });
}

const CREDIT_TYPE = { id: USD_CENTS.id, name: USD_CENTS.name };

export function ledgerJson(e: LedgerEntry) {
  return {
    type: e.type,
    amount: jsonDecimal(e.amount),
    timestamp: e.timestamp,
    ...(e.segmentId ? { segment_id: e.segmentId } : {}),
    ...(e.invoiceId ? { invoice_id: e.invoiceId } : {}),
    ...(e.contractId ? { contract_id: e.contractId } : {}),
    ...(e.draft ? { draft: true } : {}),
  };
}

/** Metronome's shared Commit / Credit JSON. */
export function grantJson(g: BalanceGrant, product: Product | undefined, extra: { balance?: Decimal; ledger?: LedgerEntry[] } = {}) {
  const base = {
    id: g.id,
    type: g.kind,
    product: { id: g.productId, name: product?.name ?? '' },
    ...(g.name ? { name: g.name } : {}),
    ...(g.description ? { description: g.description } : {}),
    ...(g.externalIds ?? {}),
    priority: Number(g.priority),
    access_schedule: {
      credit_type: CREDIT_TYPE,
      schedule_items: g.accessSchedule.schedule_items.map((s) => ({ id: s.id, amount: jsonDecimal(s.amount), starting_at: s.starting_at, ending_before: s.ending_before })),
    },
    ...(g.invoiceSchedule ? {
      invoice_schedule: {
        credit_type: CREDIT_TYPE, do_not_invoice: !!g.invoiceSchedule.do_not_invoice,
        schedule_items: g.invoiceSchedule.schedule_items.map((s) => ({ id: s.id, timestamp: s.timestamp, amount: jsonDecimal(s.amount), quantity: jsonDecimal(s.quantity), unit_price: jsonDecimal(s.unit_price), ...(s.invoice_id ? { invoice_id: s.invoice_id } : {}) })),
      },
    } : {}),
    ...(g.applicableProductIds ? { applicable_product_ids: g.applicableProductIds } : {}),
    ...(g.applicableProductTags ? { applicable_product_tags: g.applicableProductTags } : {}),
    ...(g.applicableContractIds ? { applicable_contract_ids: g.applicableContractIds } : {}),
    ...(g.specifiers ? { specifiers: g.specifiers } : {}),
    ...(g.contractId ? { contract: { id: g.contractId } } : {}),
    ...(g.invoiceContractId ? { invoice_contract: { id: g.invoiceContractId } } : {}),
    ...(g.rolloverFraction !== null && g.rolloverFraction !== undefined ? { rollover_fraction: jsonDecimal(g.rolloverFraction) } : {}),
    ...(g.rateType ? { rate_type: g.rateType } : {}),
    custom_fields: g.customFields ?? {},
    ...(g.uniquenessKey ? { uniqueness_key: g.uniquenessKey } : {}),
    ...(g.rolledOverFrom ? { rolled_over_from: g.kind === 'CREDIT' ? { credit_id: g.rolledOverFrom.grant_id, contract_id: g.rolledOverFrom.contract_id } : { commit_id: g.rolledOverFrom.grant_id, contract_id: g.rolledOverFrom.contract_id } } : {}),
    ...(g.archivedAt ? { archived_at: g.archivedAt.toISOString() } : {}),
    created_at: g.createdAt.toISOString(),
    ...(extra.balance !== undefined ? { balance: jsonDecimal(extra.balance) } : {}),
    ...(extra.ledger ? { ledger: extra.ledger.map(ledgerJson) } : {}),
  };
  return base;
}
