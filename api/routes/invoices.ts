import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { ConflictError, NotFoundError, ValidationError } from '../../billing/errors.js';
import { dec, toJsonNumber } from '../../billing/money.js';
import { Invoice } from '../../db/entities.js';
import { findCustomer } from '../../db/customers.js';
import { UUID_RE } from '../../db/ids.js';
import { listCustomerInvoices, viewOfStored, type InvoiceView } from '../../db/invoices.js';
import { approveInvoiceUpdate, rejectInvoiceUpdate } from '../../workflows/invoice-close.js';
import { invoiceWorkflowId } from '../../workflows/search-attributes.js';
import { allow } from '../auth.js';
import { objectAt, reqStr, str } from '../validate.js';

/** Metronome's Invoice shape, plus Accrue's approval fields. */
export function invoiceJson(v: InvoiceView) {
  const creditType = v.creditType;
  return {
    id: v.id,
    customer_id: v.customerId,
    contract_id: v.contractId,
    type: 'USAGE',
    status: v.status,
    credit_type: creditType,
    total: toJsonNumber(dec(v.total)),
    subtotal: toJsonNumber(dec(v.total)),
    start_timestamp: v.periodStart,
    end_timestamp: v.periodEnd,
    issued_at: v.periodEnd,
    created_at: v.createdAt,
    line_items: v.lines.map((l) => ({
      type: l.type,
      name: l.name,
      credit_type: creditType,
      product_id: l.product_id,
      quantity: toJsonNumber(dec(l.quantity)),
      ...(l.unit_price !== null ? { unit_price: toJsonNumber(dec(l.unit_price)) } : {}),
      total: toJsonNumber(dec(l.total)),
      starting_at: l.starting_at,
      ending_before: l.ending_before,
    })),
    approval_status: v.approvalStatus,
    rejection_reason: v.rejectionReason,
    finalized_at: v.finalizedAt,
    emailed_at: v.emailedAt,
  };
}

async function closedInvoice(orm: MikroORM, id: string): Promise<Invoice> {
  const inv = UUID_RE.test(id) ? await orm.em.fork().findOne(Invoice, { id: id.toLowerCase() }) : null;
  if (!inv) {
    throw new NotFoundError('closed invoice', id, 'invoice_id');
  }
  return inv;
}

/** Turns a refused or failed Temporal update into a clear 409 (or rethrows what is not ours). */
function decisionError(err: unknown): never {
  if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) {
    throw new ConflictError(err.cause.message);
  }
  throw err;
}

export function invoicesRouter(orm: MikroORM, temporal: Client): Router {
  const r = Router();

  r.get('/v1/customers/:customer_id/invoices', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const status = typeof req.query.status === 'string' ? req.query.status.toUpperCase() : undefined;
    const contractId = typeof req.query.contract_id === 'string' ? req.query.contract_id : undefined;
    const views = (await listCustomerInvoices(em, customer.id))
      .filter((v) => (!status || v.status === status) && (!contractId || v.contractId === contractId));
    if (req.query.sort === 'date_desc') views.reverse();
    res.json({ data: views.map(invoiceJson), next_page: null });
  });

  r.get('/v1/customers/:customer_id/invoices/:invoice_id', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const customer = await findCustomer(em, String(req.params.customer_id));
    const id = String(req.params.invoice_id).toLowerCase();
    const view = (await listCustomerInvoices(em, customer.id)).find((v) => v.id === id);
    if (!view) throw new NotFoundError('invoice', id, 'invoice_id');
    res.json({ data: invoiceJson(view) });
  });

  // Finance approval: a Temporal Update on the invoice's close workflow, answered once finalized.
  r.post('/v1/invoices/:invoice_id/approve', allow('finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['approved_by']);
    const approvedBy = str(body, 'approved_by', '', { optional: true, max: 256 });
    const inv = await closedInvoice(orm, String(req.params.invoice_id));
    if (inv.status !== 'DRAFT') throw new ConflictError(`invoice ${inv.id} is already ${inv.status}`);
    await temporal.workflow.getHandle(invoiceWorkflowId(inv.id))
      .executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy }] })
      .catch(decisionError);
    res.json({ data: invoiceJson(viewOfStored(await closedInvoice(orm, inv.id))) });
  });

  r.post('/v1/invoices/:invoice_id/reject', allow('finance'), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['reason', 'rejected_by']);
    if (body.reason === undefined) throw new ValidationError('reason', 'is required when rejecting an invoice');
    const reason = reqStr(body, 'reason', '', 2000);
    const rejectedBy = str(body, 'rejected_by', '', { optional: true, max: 256 });
    const inv = await closedInvoice(orm, String(req.params.invoice_id));
    if (inv.status !== 'DRAFT') throw new ConflictError(`invoice ${inv.id} is already ${inv.status}`);
    await temporal.workflow.getHandle(invoiceWorkflowId(inv.id))
      .executeUpdate(rejectInvoiceUpdate, { args: [{ reason, rejectedBy }] })
      .catch(decisionError);
    res.json({ data: invoiceJson(viewOfStored(await closedInvoice(orm, inv.id))) });
  });

  return r;
}
