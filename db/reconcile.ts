import type { EntityManager } from '@mikro-orm/postgresql';
import { dec, sum } from '../billing/money.js';
import type { ProductType } from '../billing/invoice.js';
import { BillableMetric, Contract, Invoice, type StoredInvoiceLine } from './entities.js';
import type { Decimal } from 'decimal.js';
import { BILLED_USAGE_TYPES, computeInvoice, computeScheduledInvoice, contractTrial, customerDrafts, storedLines, usageTotal, type Draft, type InvoiceView } from './invoices.js';
import { inTrialUsageTotal } from '../billing/trial-cap.js';
import { metricFilterSql, valueSql } from './metric-sql.js';
import { ratingBacklog } from './rating.js';
import type { UsageGroup, UsagePart } from './usage-series.js';

/**
 * Reconciliation (invariant I2): re-derives every line of every invoice — frozen and live drafts —
 * from the raw events (not the aggregates), the rate schedule in force and the contract's terms,
 * and reports every line whose quantity or amount differs by anything, and every invoice whose
 * total is not exactly the sum of its lines.
 */

/** Usage straight from `event`, with the same metric rules the rater applies. */
export async function rawUsageParts(em: EntityManager, customerId: string, parts: readonly UsagePart[]): Promise<UsageGroup[][]> {
  const metrics = new Map((await em.find(BillableMetric, { id: { $in: [...new Set(parts.map((p) => p.metric.id))] } })).map((m) => [m.id, m]));
  const out: UsageGroup[][] = [];
  for (const part of parts) {
    const metric = metrics.get(part.metric.id)!;
    const filter = metricFilterSql(metric);
    const v = valueSql(metric);
    const g = part.groupKeys.length ? `jsonb_build_object(${part.groupKeys.map(() => '?::text, e.properties ->> ?').join(', ')})` : `'{}'::jsonb`;
    const agg = {
      COUNT: 'count(*)',
      SUM: 'coalesce(sum(x.v), 0)',
      MAX: 'max(x.v)',
      UNIQUE: 'count(distinct x.v)',
      LATEST: '(array_agg(x.v order by x.ts desc, x.transaction_id desc) filter (where x.v is not null))[1]',
    }[metric.aggregationType];
    const rows = await em.execute<{ g: unknown; value: string | null }[]>(
      `select x.g, (${agg})::text as value
         from (select e.transaction_id, e.ts, ${v.sql} as v, ${g} as g
                 from event e join customer_event_key k on k.key = e.customer_id
                where k.customer_id = ?::uuid and e.ts >= ? and e.ts < ? and (${filter.sql})) x
        group by x.g`,
      [...v.params, ...part.groupKeys.flatMap((k) => [k, k]), customerId, part.from, part.to, ...filter.params],
    );
    const groups = rows.map((r) => ({ group: (typeof r.g === 'string' ? JSON.parse(r.g) : r.g) as Record<string, string | null>, value: r.value ?? '0' }));
    if (!part.groupKeys.length && !groups.length) groups.push({ group: {}, value: '0' });
    out.push(groups);
  }
  return out;
}

export interface LineDrift {
  line: string;
  billed: { quantity?: string; total: string } | null;
  rederived: { quantity?: string; total: string } | null;
}

export interface InvoiceReport {
  invoiceId: string;
  contractId: string;
  status: string;
  periodStart: string;
  total: string;
  lines: number;
  drift: LineDrift[];
  /** Lines of a finalized invoice whose later change is fully billed as corrections. */
  corrected: number;
  /** Total minus the sum of the lines (must be 0). */
  totalVsLines: string;
}

/** A recharge (or spend-threshold) commit granted without a payment gate whose live balance is not billed on exactly one SCHEDULED invoice. */
export interface UnbilledCommit {
  commitId: string;
  contractId: string | null;
  /** Its SCHEDULED invoices that are not void (must be 1 while the commit is not archived). */
  invoices: number;
}

export interface ReconcileReport {
  invoices: InvoiceReport[];
  /** Recharge commits billed on their own invoice that are billed zero times, or twice. */
  commits: UnbilledCommit[];
  drifting: number;
  ratingBehind: boolean;
}

const lineKey = (l: StoredInvoiceLine) =>
  [l.type, l.product_id ?? '', l.name, l.starting_at ?? '', l.ending_before ?? '', JSON.stringify(l.pricing_group_values ?? {}), JSON.stringify(l.presentation_group_values ?? {}), l.commit_id ?? '', l.scheduled_charge_id ?? l.discount_id ?? ''].join('|');

function compareLines(billed: StoredInvoiceLine[], rederived: StoredInvoiceLine[]): LineDrift[] {
  const drift: LineDrift[] = [];
  const want = new Map(rederived.map((l) => [lineKey(l), l]));
  const got = new Map(billed.map((l) => [lineKey(l), l]));
  for (const key of new Set([...want.keys(), ...got.keys()])) {
    const w = want.get(key);
    const g = got.get(key);
    const same = w && g && dec(w.total).eq(dec(g.total)) && (w.quantity === undefined) === (g.quantity === undefined) && (w.quantity === undefined || dec(w.quantity).eq(dec(g.quantity!)));
    if (!same) drift.push({ line: key, billed: g ? { quantity: g.quantity, total: g.total } : null, rederived: w ? { quantity: w.quantity, total: w.total } : null });
  }
  return drift;
}

export async function reconcile(em: EntityManager, opts: { customerId?: string; now?: Date } = {}): Promise<ReconcileReport> {
  const now = opts.now ?? new Date();
  const ratingBehind = await ratingBacklog(em.fork());
  const contracts = await em.find(Contract, opts.customerId ? { customerId: opts.customerId } : {}, { orderBy: { createdAt: 'asc', id: 'asc' } });
  // A correction's corrected invoice → its contract (whose commits and credits drew on it).
  const contractOf = new Map((await em.execute<{ id: string; contract_id: string }[]>(
    `select id::text as id, contract_id::text as contract_id from invoice ${opts.customerId ? 'where customer_id = ?::uuid' : ''}`, opts.customerId ? [opts.customerId] : [])).map((r) => [r.id, r.contract_id]));
  const invoices: InvoiceReport[] = [];
  // Drafts are computed per customer (contracts share customer-level commits), once each way.
  const byCustomer = new Map<string, Promise<{ drafts: Draft[]; raw: Map<string, InvoiceView> }>>();
  const draftsOf = (customerId: string) => {
    if (!byCustomer.has(customerId)) {
      byCustomer.set(customerId, (async () => {
        // Both ways over the same open periods: an invoice frozen between the two computations
        // (a close running meanwhile) makes them differ, so compute again until they agree.
        for (let attempt = 1; ; attempt++) {
          const drafts = await customerDrafts(em, customerId, now);
          const raw = new Map((await customerDrafts(em, customerId, now, { usageReader: rawUsageParts })).map((d) => [d.view.id, d.view]));
          if ((drafts.length === raw.size && drafts.every((d) => raw.has(d.view.id))) || attempt >= 5) return { drafts: drafts.filter((d) => raw.has(d.view.id)), raw };
        }
      })());
    }
    return byCustomer.get(customerId)!;
  };
  const checked: { report: InvoiceReport; billed: StoredInvoiceLine[]; rederived: StoredInvoiceLine[]; finalized: boolean }[] = [];
  for (const contract of contracts) {
    // Drafts first, then the frozen invoices: an invoice frozen in between is then among the
    // frozen ones (its draft is dropped) — read the other way round it would be in neither.
    const open = contract.archivedAt ? undefined : await draftsOf(contract.customerId);
    const stored = await em.find(Invoice, { contractId: contract.id }, { orderBy: { periodStart: 'asc' } });
    const storedIds = new Set(stored.map((i) => i.id));
    for (const inv of stored) {
      if (inv.status === 'VOID') continue;
      // Its billed corrections are taken as they are (they are checked per corrected invoice
      // below): the lines that depend on them — the trial line covering in-trial late usage — are
      // re-derived against what was billed.
      const billedCorrections = inv.lineItems.filter((l) => l.type === 'correction' && l.corrected_invoice_id).map((l) => ({
        correctedInvoiceId: l.corrected_invoice_id!, productId: l.product_id, name: l.name, amount: l.total, reason: l.reason ?? '', trialContractId: l.trial_contract_id,
        // What commits and credits drew on it is re-derived too: the corrected line, its contract.
        ...(l.product_id ? {
          contractId: contractOf.get(l.corrected_invoice_id!), productType: l.product_type as ProductType | undefined, startingAt: l.starting_at, endingBefore: l.ending_before,
          pricingGroupValues: l.pricing_group_values, presentationGroupValues: l.presentation_group_values,
          netsOwnUsage: !l.trial_contract_id && l.corrected_invoice_id === inv.regeneratedFromInvoiceId,
          // What it gave back is taken as billed (what to give back depends on the corrections before it).
          giveBack: dec(l.total).lt(0) ? (l.commit_draws ?? []).filter((d) => dec(d.amount).lt(0)).map((d) => ({ grantId: d.id, segmentId: d.segment_id, amount: dec(d.amount).negated().toString() })) : undefined,
        } : {}),
      }));
      const period = { start: inv.periodStart.toISOString(), end: inv.periodEnd.toISOString() };
      const again = inv.type === 'SCHEDULED'
        ? await computeScheduledInvoice(em, contract, inv.id, period)
        : await computeInvoice(em, contract, period, { invoiceId: inv.id, usageReader: rawUsageParts, asOf: inv.frozenAt, corrections: billedCorrections });
      checked.push({ report: reportOf(inv.id, contract.id, inv.status, inv.periodStart.toISOString(), inv.total, inv.lineItems), billed: inv.lineItems, rederived: storedLines(again), finalized: inv.status === 'FINALIZED' });
    }
    if (open) {
      for (const { view } of open.drafts.filter((d) => d.contract.id === contract.id && !storedIds.has(d.view.id))) {
        checked.push({ report: reportOf(view.id, contract.id, 'DRAFT', view.periodStart, view.total, view.lines), billed: view.lines, rederived: open.raw.get(view.id)!.lines, finalized: false });
      }
    }
  }
  // Correction lines are checked per corrected invoice: all corrections made for a finalized
  // invoice — on any contract of the customer (a renewal bills its predecessor's late usage) — must
  // add up to exactly how much its usage changed since it was finalized.
  const corrections = new Map<string, Decimal>();
  // Of them, the in-trial ones must add up to how much its in-trial usage changed.
  const trialCorrections = new Map<string, Decimal>();
  for (const c of checked) {
    for (const l of c.billed) {
      if (l.type !== 'correction' || !l.corrected_invoice_id) continue;
      corrections.set(l.corrected_invoice_id, (corrections.get(l.corrected_invoice_id) ?? dec(0)).plus(l.total));
      if (l.trial_contract_id) trialCorrections.set(l.corrected_invoice_id, (trialCorrections.get(l.corrected_invoice_id) ?? dec(0)).plus(l.total));
    }
  }
  const trialOf = new Map(contracts.map((k) => [k.id, contractTrial(k)]));
  for (const c of checked) {
    c.report.drift = compareLines(c.billed.filter((l) => l.type !== 'correction'), c.rederived.filter((l) => l.type !== 'correction'));
    if (!c.finalized) continue;
    const changed = usageTotal(c.rederived).minus(usageTotal(c.billed));
    const corrected = corrections.get(c.report.invoiceId) ?? dec(0);
    if (changed.eq(corrected)) {
      // The trial line moves with its in-trial usage, and so do the draw-downs on it; the late part
      // is covered where it is corrected (and drawn on there, re-derived with that invoice). The
      // draw-downs this invoice billed must still be exactly what it wrote to the ledger. A POSTPAID
      // true-up already billed is not re-derived away: late usage under a minimum it trued up is
      // still reported.
      const before = c.report.drift.length;
      const moves = (type: string) => BILLED_USAGE_TYPES.has(type) || type === 'trial' || (!changed.isZero() && type === 'applied_commit_or_credit');
      c.report.drift = c.report.drift.filter((d) => !moves(d.line.split('|')[0]!));
      c.report.corrected = before - c.report.drift.length;
      if (!changed.isZero()) c.report.drift.push(...await ledgerDrift(em, c.report.invoiceId, c.billed));
    } else {
      c.report.drift.push({ line: 'corrections', billed: { total: corrected.toString() }, rederived: { total: changed.toString() } });
    }
    const trial = trialOf.get(c.report.contractId);
    if (trial) {
      const trialChanged = inTrialUsageTotal(c.rederived, trial.window).minus(inTrialUsageTotal(c.billed, trial.window));
      const trialCorrected = trialCorrections.get(c.report.invoiceId) ?? dec(0);
      if (!trialChanged.eq(trialCorrected)) c.report.drift.push({ line: 'corrections in trial', billed: { total: trialCorrected.toString() }, rederived: { total: trialChanged.toString() } });
    }
  }
  invoices.push(...checked.map((c) => c.report));
  const commits = await unbilledRechargeCommits(em, opts.customerId);
  return { invoices, commits, drifting: invoices.filter((i) => i.drift.length || !dec(i.totalVsLines).isZero()).length + commits.length, ratingBehind };
}

/**
 * Every live recharge or spend-threshold commit granted without a payment gate (it carries an
 * invoice schedule) is billed on exactly one SCHEDULED invoice that is not void; an archived one
 * (its balance ended) needs none.
 */
async function unbilledRechargeCommits(em: EntityManager, customerId?: string): Promise<UnbilledCommit[]> {
  const rows = await em.execute<{ id: string; contract_id: string | null; n: number }[]>(
    `select g.id, g.contract_id,
            (select count(*) from invoice i
              where i.type = 'SCHEDULED' and i.status <> 'VOID'
                and i.id::text in (select s ->> 'invoice_id' from jsonb_array_elements(g.invoice_schedule -> 'schedule_items') s))::int as n
       from balance_grant g
      where g.archived_at is null and g.invoice_schedule is not null
        and (g.custom_fields ->> 'accrue_recharge' is not null or g.custom_fields ->> 'accrue_spend_threshold' is not null)
        ${customerId ? 'and g.customer_id = ?::uuid' : ''}
      order by g.created_at, g.id`,
    customerId ? [customerId] : []);
  return rows.filter((r) => r.n !== 1).map((r) => ({ commitId: r.id, contractId: r.contract_id, invoices: r.n }));
}

/** An invoice's billed draw-downs (applied_commit_or_credit lines) against the ledger entries it wrote, per commit segment. */
async function ledgerDrift(em: EntityManager, invoiceId: string, billed: StoredInvoiceLine[]): Promise<InvoiceReport['drift']> {
  const rows = await em.execute<{ key: string; total: string }[]>(
    `select grant_id::text || '|' || segment_id as key, sum(amount)::text as total from balance_ledger
      where invoice_id = ?::uuid and type in ('PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION', 'CREDIT_AUTOMATED_INVOICE_DEDUCTION', 'PREPAID_COMMIT_CREDITED', 'CREDIT_CREDITED')
      group by 1`, [invoiceId]);
  const lines = new Map<string, Decimal>();
  for (const l of billed) {
    if (l.type !== 'applied_commit_or_credit' || !l.applied_commit_or_credit) continue;
    const key = `${l.applied_commit_or_credit.id}|${l.applied_commit_or_credit.segment_id}`;
    lines.set(key, (lines.get(key) ?? dec(0)).plus(l.total));
  }
  const ledger = new Map(rows.map((r) => [r.key, dec(r.total)]));
  return [...new Set([...lines.keys(), ...ledger.keys()])].filter((k) => !(lines.get(k) ?? dec(0)).eq(ledger.get(k) ?? 0))
    .map((k) => ({ line: `ledger|${k}`, billed: { total: (lines.get(k) ?? dec(0)).toString() }, rederived: { total: (ledger.get(k) ?? dec(0)).toString() } }));
}

function reportOf(invoiceId: string, contractId: string, status: string, periodStart: string, total: string, lines: StoredInvoiceLine[]): InvoiceReport {
  return { invoiceId, contractId, status, periodStart, total, lines: lines.length, drift: [], corrected: 0, totalVsLines: dec(total).minus(sum(lines.map((l) => dec(l.total)))).toString() };
}
