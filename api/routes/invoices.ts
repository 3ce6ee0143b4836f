import { LockMode } from '@mikro-orm/core';
import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { ConflictError, NotFoundError, ValidationError } from '../../billing/errors.js';
import { lockCustomerBalances } from '../../db/balance-lock.js';
import { freezeInvoiceTx } from '../../db/invoice-freeze.js';
import { uuidV5 } from '../../db/ids.js';
import { dec, jsonDecimal, jsonDecimalOpt } from '../../billing/money.js';
import { Contract, Invoice, type StoredInvoiceLine } from '../../db/entities.js';
import { findCustomer } from '../../db/customers.js';
import { UUID_RE } from '../../db/ids.js';
import { computeInvoice, findInvoiceView, listCustomerInvoices, storedLines, viewOfStored, voidBlockedByGiveBacks, type InvoiceView } from '../../db/invoices.js';
import { alreadyDecided, approveInvoice, closedInvoice, rejectInvoice } from '../../operations/invoices/decide-invoice.js';
import { startRegeneratedInvoiceClose } from '../../operations/invoices/start-regenerated-invoice-close.js';
import { tellContractPaymentsChanged } from '../../operations/payments/tell-contract-payments-changed.js';
import { voidAtProvider } from '../../operations/payments/void-at-provider.js';
import type { Client } from '../../operations/workflow-client.js';
import { allow } from '../auth.js';
import { decimal, objectAt, oneOf, reqStr, reqUuid, str, timestamp, uuid } from '../../operations/input/validate.js';
import { offsetPage } from '../paging.js';
import { renderInvoicePdf } from '../../integrations/pdf/invoice-pdf.js';
import { notifyPaymentStatus, settlingAtStripe, standings, voidBlockedByPayments } from '../../db/payments.js';
import type { PaymentStanding } from '../../billing/payments.js';
import type { EntityManager } from '@mikro-orm/postgresql';
import { dunningStates, externalInvoices, type DunningState, type ExternalInvoice } from '../../db/stripe.js';
import { voidBlockedByLiveCommit } from '../../db/recharge.js';

const num = jsonDecimalOpt;

/**
 * A line as Metronome shapes it. Amounts are already rounded cents; quantities and unit prices
 * go out as JSON numbers (exact for the values Accrue stores; the stored decimal strings stay
 * the source of truth).
 */
function lineJson(l: StoredInvoiceLine, creditType: { id: string; name: string }) {
  const productType = l.product_type ? { USAGE: 'UsageProductListItem', SUBSCRIPTION: 'SubscriptionProductListItem', COMPOSITE: 'CompositeProductListItem', FIXED: 'FixedProductListItem', PRO_SERVICE: 'FixedProductListItem' }[l.product_type] : undefined;
  const out: Record<string, unknown> = {
    type: l.type,
    name: l.name,
    credit_type: creditType,
    total: num(l.total),
    product_id: l.product_id,
    product_type: productType,
    quantity: num(l.quantity),
    unit_price: num(l.unit_price),
    starting_at: l.starting_at,
    ending_before: l.ending_before,
    pricing_group_values: l.pricing_group_values,
    presentation_group_values: l.presentation_group_values,
    is_prorated: l.is_prorated,
    commit_id: l.commit_id,
    commit_type: l.applied_commit_or_credit ? (l.applied_commit_or_credit.type === 'POSTPAID' ? 'PostpaidCommit' : 'PrepaidCommit') : undefined,
    commit_segment_id: l.applied_commit_or_credit?.segment_id,
    applied_commit_or_credit: l.applied_commit_or_credit ? { id: l.applied_commit_or_credit.id, type: l.applied_commit_or_credit.type } : undefined,
    postpaid_commit: l.type === 'postpaid_trueup' && l.commit_id ? { id: l.commit_id } : undefined,
    scheduled_charge_id: l.scheduled_charge_id,
    discount_id: l.discount_id,
    corrected_invoice_id: l.corrected_invoice_id,
    reason: l.reason,
    trial_contract_id: l.trial_contract_id,
    sub_line_items: l.tiers ? [{
      name: l.name, custom_fields: {}, quantity: jsonDecimal(l.quantity ?? 0), subtotal: num(l.total),
      tiers: l.tiers.map((t) => ({ price: jsonDecimal(t.price), quantity: jsonDecimal(t.quantity), starting_at: jsonDecimal(t.starting_at), subtotal: jsonDecimal(t.subtotal) })),
    }] : undefined,
  };
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined));
}

/** Metronome's Invoice shape, plus Accrue's approval fields. */
function invoiceJson(v: InvoiceView, opts: { skipZeroQty?: boolean; payment?: PaymentStanding; external?: ExternalInvoice; dunning?: DunningState } = {}) {
  const creditType = v.creditType;
  const lines = opts.skipZeroQty ? v.lines.filter((l) => l.quantity === undefined || !dec(l.quantity).isZero()) : v.lines;
  return {
    id: v.id,
    customer_id: v.customerId,
    contract_id: v.contractId,
    type: v.type,
    status: v.status,
    credit_type: creditType,
    total: jsonDecimal(v.total),
    subtotal: jsonDecimal(v.subtotal),
    start_timestamp: v.periodStart,
    end_timestamp: v.periodEnd,
    issued_at: v.periodEnd,
    created_at: v.createdAt,
    line_items: lines.map((l) => lineJson(l, creditType)),
    approval_status: v.approvalStatus,
    rejection_reason: v.rejectionReason,
    finalized_at: v.finalizedAt,
    emailed_at: v.emailedAt,
    ...(v.voidedAt ? { voided_at: v.voidedAt } : {}),
    ...(v.regeneratedFromInvoiceId ? { regenerated_from_invoice_id: v.regeneratedFromInvoiceId } : {}),
    // Accrue: the payment standing of a finalized (or voided) invoice; drafts have none.
    ...(opts.payment ? { payment_status: opts.payment.status, amount_paid: jsonDecimal(opts.payment.paid), amount_due: jsonDecimal(opts.payment.amountDue), due_at: opts.payment.dueAt } : {}),
    // Metronome's external_invoice: the invoice's copy at Stripe.
    ...(opts.external ? {
      external_invoice: {
        billing_provider: 'stripe', invoice_id: opts.external.externalId ?? undefined, external_status: opts.external.status,
        ...(opts.external.hostedUrl ? { hosted_invoice_url: opts.external.hostedUrl } : {}),
      },
    } : {}),
    // Accrue: dunning of a failed Stripe payment (the number of attempts made so far, of how many).
    ...(opts.dunning ? { dunning: { status: opts.dunning.status, step: opts.dunning.step, steps: opts.dunning.steps, next_attempt_at: opts.dunning.nextAttemptAt } } : {}),
  };
}

/** Payment standing, Stripe copy and dunning of each closed invoice, for invoiceJson. */
async function invoiceExtras(em: EntityManager, views: readonly InvoiceView[]) {
  const ids = views.filter((v) => v.status !== 'DRAFT').map((v) => v.id);
  const [payments, external, dunning] = await Promise.all([standings(em.fork(), views), externalInvoices(em.fork(), ids), dunningStates(em.fork(), ids)]);
  return (id: string) => ({ payment: payments.get(id), external: external.get(id), dunning: dunning.get(id) });
}

export function invoicesRouter(orm: MikroORM, temporal: Client, taskQueue: string): Router {
  const r = Router();

  r.get('/v1/customers/:customer_id/invoices', allow('read', 'finance'), async (req, res) => {
    const q = objectAt(req.query, '', ['status', 'contract_id', 'starting_on', 'ending_before', 'sort', 'skip_zero_qty_line_items', 'type', 'credit_type_id', 'limit', 'next_page']);
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const status = typeof q.status === 'string' ? q.status.toUpperCase() : undefined;
    const contractId = typeof q.contract_id === 'string' ? q.contract_id.toLowerCase() : undefined;
    if (contractId !== undefined && !UUID_RE.test(contractId)) throw new ValidationError('contract_id', `must be a UUID, got ${JSON.stringify(q.contract_id)}`);
    const startingOn = typeof q.starting_on === 'string' ? Date.parse(q.starting_on) : undefined;
    const endingBefore = typeof q.ending_before === 'string' ? Date.parse(q.ending_before) : undefined;
    if (Number.isNaN(startingOn)) throw new ValidationError('starting_on', 'must be an RFC 3339 timestamp');
    if (Number.isNaN(endingBefore)) throw new ValidationError('ending_before', 'must be an RFC 3339 timestamp');
    // A period's invoice is USAGE; a commit bought on its own (a recharge without a payment gate) is SCHEDULED.
    const type = oneOf(q, 'type', ['USAGE', 'USAGE_CONSOLIDATED', 'SCHEDULED'] as const, '', { optional: true });
    const creditTypeId = uuid(q, 'credit_type_id', '', { optional: true });
    const views = (await listCustomerInvoices(em, customer.id))
      .filter((v) => (!status || v.status === status) && (!contractId || v.contractId === contractId)
        && (!type || type === v.type) && (!creditTypeId || v.creditType.id === creditTypeId)
        && (startingOn === undefined || Date.parse(v.periodStart) >= startingOn) && (endingBefore === undefined || Date.parse(v.periodEnd) <= endingBefore));
    if (q.sort === 'date_desc') views.reverse();
    // Drafts are derived, not rows: pages are offsets into the filtered, sorted list.
    const pageOf = offsetPage(views, q);
    const skipZeroQty = q.skip_zero_qty_line_items === 'true';
    const extras = await invoiceExtras(em, pageOf.data);
    res.json({ data: pageOf.data.map((v) => invoiceJson(v, { skipZeroQty, ...extras(v.id) })), next_page: pageOf.next_page });
  });

  // Breakdowns: each invoice overlapping [starting_on, ending_before) split into UTC days (or
  // hours), each window's usage and subscriptions priced on their own. Registered before
  // /:invoice_id so "breakdowns" is not taken for an id.
  r.get('/v1/customers/:customer_id/invoices/breakdowns', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const q = req.query as Record<string, unknown>;
    const from = timestamp(q, 'starting_on')!;
    const to = timestamp(q, 'ending_before')!;
    if (Date.parse(to) <= Date.parse(from)) throw new ValidationError('ending_before', 'must be after starting_on');
    const window = oneOf(q, 'window_size', ['HOUR', 'DAY'] as const, '', { optional: true }) ?? 'DAY';
    const step = window === 'DAY' ? 86_400_000 : 3_600_000;
    const max = window === 'DAY' ? 35 : 24;
    const status = typeof q.status === 'string' ? q.status.toUpperCase() : undefined;
    const views = (await listCustomerInvoices(em, customer.id)).filter((v) => v.status !== 'VOID' && (!status || v.status === status)
      && Date.parse(v.periodStart) < Date.parse(to) && Date.parse(v.periodEnd) > Date.parse(from));
    if (q.sort === 'date_desc') views.reverse();
    const windows: { view: InvoiceView; start: number; end: number }[] = [];
    for (const v of views) {
      const lo = Math.max(Date.parse(v.periodStart), Date.parse(from));
      const hi = Math.min(Date.parse(v.periodEnd), Date.parse(to));
      for (let t = Math.floor(lo / step) * step; t < hi; t += step) windows.push({ view: v, start: Math.max(t, lo), end: Math.min(t + step, hi) });
    }
    const pageOf = offsetPage(windows, q, max);
    const contracts = new Map<string, Contract>();
    const data = [];
    for (const w of pageOf.data) {
      const contract = contracts.get(w.view.contractId) ?? (await em.findOne(Contract, { id: w.view.contractId }))!;
      contracts.set(contract.id, contract);
      const inv = await computeInvoice(em, contract, { start: new Date(w.start).toISOString(), end: new Date(w.end).toISOString() }, { usageOnly: true });
      const lines = storedLines(inv);
      data.push({
        ...invoiceJson({ ...w.view, lines, total: inv.total.toString(), subtotal: inv.subtotal.toString() }, { skipZeroQty: q.skip_zero_qty_line_items === 'true' }),
        breakdown_start_timestamp: new Date(w.start).toISOString(),
        breakdown_end_timestamp: new Date(w.end).toISOString(),
      });
    }
    res.json({ data, next_page: pageOf.next_page });
  });

  r.get('/v1/customers/:customer_id/invoices/:invoice_id/pdf', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const id = String(req.params.invoice_id).toLowerCase();
    const view = UUID_RE.test(id) ? await findInvoiceView(em, customer.id, id) : undefined;
    if (!view) throw new NotFoundError('invoice', id, 'invoice_id');
    res.type('application/pdf').set('content-disposition', `inline; filename="invoice-${view.id}.pdf"`).send(renderInvoicePdf(view, customer));
  });

  r.get('/v1/customers/:customer_id/invoices/:invoice_id', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const id = String(req.params.invoice_id).toLowerCase();
    const view = UUID_RE.test(id) ? await findInvoiceView(em, customer.id, id) : undefined;
    if (!view) throw new NotFoundError('invoice', id, 'invoice_id');
    const extras = await invoiceExtras(em, [view]);
    res.json({ data: invoiceJson(view, { skipZeroQty: req.query.skip_zero_qty_line_items === 'true', ...extras(view.id) }) });
  });

  // Finance approval: a Temporal Update on the invoice's close workflow, answered once finalized.
  // `total` (required) is the total finance approves, as the invoice shows it: 409 when the
  // invoice's total is no longer that (re-frozen after a rejection), so nobody finalizes a total
  // they have not seen.
  r.post('/v1/invoices/:invoice_id/approve', allow('finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['approved_by', 'total']);
    const approvedBy = str(body, 'approved_by', '', { optional: true, max: 256 });
    if (body.total === undefined) throw new ValidationError('total', 'is required: the invoice total you approve, as the invoice shows it');
    const total = decimal(body, 'total')!;
    const inv = await closedInvoice(orm, String(req.params.invoice_id));
    if (inv.status !== 'DRAFT') throw alreadyDecided(inv);
    await approveInvoice(orm, temporal, inv, { approvedBy, total });
    res.json({ data: invoiceJson(viewOfStored(await closedInvoice(orm, inv.id))) });
  });

  r.post('/v1/invoices/:invoice_id/reject', allow('finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['reason', 'rejected_by']);
    if (body.reason === undefined) throw new ValidationError('reason', 'is required when rejecting an invoice');
    const reason = reqStr(body, 'reason', '', 2000);
    const rejectedBy = str(body, 'rejected_by', '', { optional: true, max: 256 });
    const inv = await closedInvoice(orm, String(req.params.invoice_id));
    if (inv.status !== 'DRAFT') throw alreadyDecided(inv);
    await rejectInvoice(orm, temporal, inv, { reason, rejectedBy });
    res.json({ data: invoiceJson(viewOfStored(await closedInvoice(orm, inv.id))) });
  });

  // Void: a FINALIZED invoice becomes VOID (lines kept); its commit and credit draw-downs are
  // released. A pending invoice is rejected instead; one with payments not refunded is refused
  // (409 naming them). Voiding twice is a no-op.
  r.post('/v1/invoices/void', allow('finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['id']);
    const id = reqUuid(body, 'id');
    let contractId: string | undefined;
    await orm.em.fork().transactional(async (em) => {
      const found = await em.findOne(Invoice, { id }, { fields: ['customerId'] });
      if (!found) throw new NotFoundError('closed invoice', id, 'id');
      // Voiding releases draw-downs: it takes its turn with freezes on the customer's balances.
      await lockCustomerBalances(em, found.customerId);
      const inv = await em.findOne(Invoice, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
      if (!inv) throw new NotFoundError('closed invoice', id, 'id');
      contractId = inv.contractId; // told again on a repeated void (an earlier one may not have reached it)
      if (inv.status === 'VOID') return;
      if (inv.status !== 'FINALIZED') throw new ConflictError(`invoice ${id} is ${inv.status} (${inv.approvalStatus}); only finalized invoices are voided — reject a pending one instead`);
      const paid = await voidBlockedByPayments(em, [inv.id]);
      if (paid) throw new ConflictError(`${paid}: a paid invoice is not voided (its period would be billed again); refund the payments first`);
      const givenBack = await voidBlockedByGiveBacks(em, [inv.id]);
      if (givenBack) throw new ConflictError(givenBack);
      const liveCommit = await voidBlockedByLiveCommit(em, inv);
      if (liveCommit) throw new ConflictError(`invoice ${id} bills commit ${liveCommit}, whose balance is still usable; voiding it would leave that commit unbilled`);
      inv.status = 'VOID';
      inv.voidedAt = new Date();
      const standing = (await standings(em, [inv])).get(inv.id);
      if (standing) await notifyPaymentStatus(em, inv, standing.status, standing.amountDue, 'void', { invoice_status: 'VOID' });
    });
    // A voided invoice is owed nothing: the contract leaves ARREARS when it was the overdue one.
    if (contractId) await tellContractPaymentsChanged(temporal, contractId, `the void of invoice ${id}`);
    // Its Stripe copy (if any) is voided by a workflow of its own; its dunning (if any) stops.
    if (contractId) await voidAtProvider(temporal, taskQueue, id);
    res.json({ data: { id } });
  });

  // Regenerate: a VOID invoice's period is computed again now (current rates, usage, balances)
  // into a new invoice (regenerated_from_invoice_id), frozen here and closed by its own workflow
  // (approval, finalize, email). Repeating the call returns the same new invoice.
  r.post('/v1/invoices/regenerate', allow('finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['id']);
    const id = reqUuid(body, 'id');
    const em = orm.em.fork();
    const old = await em.findOne(Invoice, { id });
    if (!old) throw new NotFoundError('closed invoice', id, 'id');
    if (old.status !== 'VOID') throw new ConflictError(`invoice ${id} is ${old.status}; only a voided invoice can be regenerated`);
    if (old.type === 'SCHEDULED') throw new ConflictError(`invoice ${id} bills a commit's purchase (type SCHEDULED); it has no period to bill again and is not regenerated`);
    // Paid at Stripe after all (a charge or an out-of-band mark that raced the void): not billed again.
    const settling = await settlingAtStripe(em, [old.id], { chargesInFlight: false });
    if (settling.length) throw new ConflictError(`${settling.join('; ')}: a paid period is not billed again`);
    const newId = uuidV5(`regenerated:${old.id}`);
    const input = { invoiceId: newId, contractId: old.contractId, periodStart: old.periodStart.toISOString(), periodEnd: old.periodEnd.toISOString(), regeneratedFromInvoiceId: old.id };
    await orm.em.fork().transactional((tx) => freezeInvoiceTx(tx, { ...input, recompute: false }));
    await startRegeneratedInvoiceClose(temporal, taskQueue, old.customerId, input);
    res.json({ data: { id: newId } });
  });

  return r;
}
