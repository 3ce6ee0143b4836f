import type { EntityManager } from '@mikro-orm/postgresql';
import { assembleInvoice, type AssembledInvoice, type UsageCharge } from '../billing/invoice.js';
import { USD_CENTS } from '../billing/money.js';
import { periodsStartedBefore, type Period, type Schedule } from '../billing/periods.js';
import { BillableMetric, Contract, Invoice, Product, Rate, type StoredInvoiceLine } from './entities.js';
import { invoiceIdFor } from './ids.js';
import { metricQuantity } from './usage-series.js';

export function contractSchedule(c: Contract): Schedule {
  return {
    startingAt: c.startingAt.toISOString(),
    endingBefore: c.endingBefore?.toISOString() ?? null,
    frequency: c.usageStatementFrequency,
    day: c.usageStatementDay,
    billingAnchorDate: c.billingAnchorDate?.toISOString() ?? null,
  };
}

/**
 * Prices one contract period from PostgreSQL: for every entitled rate on the contract's rate card
 * that overlaps the period, the metric's usage in the overlap, priced by the rate. A price change
 * inside the period therefore splits it at the change.
 */
export async function computeInvoice(em: EntityManager, contract: Contract, period: Pick<Period, 'start' | 'end'>): Promise<AssembledInvoice> {
  const pStart = new Date(period.start);
  const pEnd = new Date(period.end);
  const rates = await em.find(Rate, {
    rateCardId: contract.rateCardId,
    entitled: true,
    startingAt: { $lt: pEnd },
    $or: [{ endingBefore: null }, { endingBefore: { $gt: pStart } }],
  }, { orderBy: { productId: 'asc', startingAt: 'asc' } });
  const products = new Map((await em.find(Product, { id: { $in: [...new Set(rates.map((r) => r.productId))] } })).map((p) => [p.id, p]));
  const metricIds = [...new Set([...products.values()].map((p) => p.billableMetricId).filter((x): x is string => !!x))];
  const metrics = new Map((await em.find(BillableMetric, { id: { $in: metricIds } })).map((m) => [m.id, m]));

  const charges: UsageCharge[] = [];
  for (const rate of rates) {
    const product = products.get(rate.productId);
    const metric = product?.billableMetricId ? metrics.get(product.billableMetricId) : undefined;
    if (!product || !metric) continue;
    const from = new Date(Math.max(pStart.getTime(), rate.startingAt.getTime())).toISOString();
    const to = new Date(Math.min(pEnd.getTime(), rate.endingBefore?.getTime() ?? Infinity)).toISOString();
    const quantity = await metricQuantity(em, metric, { customerId: contract.customerId, from, to });
    charges.push({ productId: product.id, productName: product.name, rateType: rate.rateType, price: rate.price, quantity, startingAt: from, endingBefore: to });
  }
  return assembleInvoice(charges, USD_CENTS);
}

export function storedLines(inv: AssembledInvoice): StoredInvoiceLine[] {
  return inv.lines.map((l) => ({
    type: l.type,
    product_id: l.productId,
    name: l.name,
    quantity: l.quantity.toString(),
    unit_price: l.unitPrice?.toString() ?? null,
    total: l.total.toString(),
    starting_at: l.startingAt,
    ending_before: l.endingBefore,
  }));
}

/** What an invoice looks like to readers, whether frozen in PostgreSQL or computed live. */
export interface InvoiceView {
  id: string;
  customerId: string;
  contractId: string;
  periodStart: string;
  periodEnd: string;
  status: 'DRAFT' | 'FINALIZED' | 'VOID';
  approvalStatus: 'OPEN' | 'PENDING_APPROVAL' | 'APPROVED' | 'REJECTED';
  rejectionReason: string | null;
  creditType: { id: string; name: string };
  lines: StoredInvoiceLine[];
  total: string;
  finalizedAt: string | null;
  emailedAt: string | null;
  createdAt: string;
}

export function viewOfStored(inv: Invoice): InvoiceView {
  return {
    id: inv.id,
    customerId: inv.customerId,
    contractId: inv.contractId,
    periodStart: inv.periodStart.toISOString(),
    periodEnd: inv.periodEnd.toISOString(),
    status: inv.status,
    approvalStatus: inv.approvalStatus,
    rejectionReason: inv.rejectionReason ?? null,
    creditType: { id: inv.creditTypeId, name: inv.creditTypeName },
    lines: inv.lineItems,
    total: inv.total,
    finalizedAt: inv.finalizedAt?.toISOString() ?? null,
    emailedAt: inv.emailedAt?.toISOString() ?? null,
    createdAt: inv.createdAt.toISOString(),
  };
}

/**
 * Every invoice of a customer: the frozen ones from PostgreSQL plus a live draft for every contract
 * period that has started and is not frozen yet (so drafts are always current).
 */
export async function listCustomerInvoices(em: EntityManager, customerId: string, now = new Date()): Promise<InvoiceView[]> {
  const stored = await em.find(Invoice, { customerId }, { orderBy: { periodStart: 'asc' } });
  const frozen = new Set(stored.map((i) => i.id));
  const views = stored.map(viewOfStored);
  const contracts = await em.find(Contract, { customerId, archivedAt: null }, { orderBy: { startingAt: 'asc' } });
  for (const contract of contracts) {
    for (const period of periodsStartedBefore(contractSchedule(contract), now.toISOString())) {
      const id = invoiceIdFor(contract.id, period.start);
      if (frozen.has(id)) continue;
      views.push(await draftView(em, contract, period, id, now));
    }
  }
  return views.sort((a, b) => a.periodStart.localeCompare(b.periodStart) || a.contractId.localeCompare(b.contractId));
}

export async function draftView(em: EntityManager, contract: Contract, period: Pick<Period, 'start' | 'end'>, id: string, now: Date): Promise<InvoiceView> {
  const inv = await computeInvoice(em, contract, period);
  return {
    id,
    customerId: contract.customerId,
    contractId: contract.id,
    periodStart: period.start,
    periodEnd: period.end,
    status: 'DRAFT',
    approvalStatus: 'OPEN',
    rejectionReason: null,
    creditType: { id: inv.creditType.id, name: inv.creditType.name },
    lines: storedLines(inv),
    total: inv.total.toString(),
    finalizedAt: null,
    emailedAt: null,
    createdAt: now.toISOString(),
  };
}
