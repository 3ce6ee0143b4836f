import { ConflictError, NotFoundError, UnavailableError } from '../../billing/errors.js';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Invoice } from '../../db/entities.js';
import { UUID_RE } from '../../db/ids.js';
import { approveInvoiceUpdate, rejectInvoiceUpdate } from '../../workflows/invoice-close.js';
import { invoiceWorkflowId } from '../../workflows/search-attributes.js';
import { ApplicationFailure, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '../workflow-client.js';

/** A closed (frozen) invoice by id; a 404 naming `invoice_id` otherwise. */
export async function closedInvoice(orm: MikroORM, id: string): Promise<Invoice> {
  const inv = UUID_RE.test(id) ? await orm.em.fork().findOne(Invoice, { id: id.toLowerCase() }) : null;
  if (!inv) {
    throw new NotFoundError('closed invoice', id, 'invoice_id');
  }
  return inv;
}

/** What a decision on an invoice that is no longer DRAFT answers: the status it now has. */
export function alreadyDecided(inv: Invoice): ConflictError {
  return new ConflictError(`invoice ${inv.id} is already ${inv.status} (approval ${inv.approvalStatus})`);
}

/**
 * A decision on the invoice's close workflow. It waits briefly for the close to reach approval: an
 * invoice can be frozen (PENDING_APPROVAL in PostgreSQL) a moment before its own workflow knows,
 * when a later period's freeze froze it first (periods freeze in order) or its freeze activity is
 * between retries. A decision that lost a race with another one — the close decided, or finished
 * and completed, after this request read the invoice as DRAFT — answers what the invoice now is,
 * as a decision arriving after it would: a 409 naming its status, never a 5xx (which the SDK
 * retries). A refused update (a total that is not the invoice's) is a 409 with the workflow's reason.
 */
async function decide<T>(orm: MikroORM, inv: Invoice, run: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await run();
    } catch (err) {
      const failure = err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure ? err.cause : undefined;
      if (failure?.type === 'NotReady' && Date.now() <= deadline) {
        await new Promise((res) => setTimeout(res, 250));
        continue;
      }
      if (failure?.type === 'NotAwaitingApproval' || err instanceof WorkflowNotFoundError) {
        const now = await closedInvoice(orm, inv.id);
        if (now.status !== 'DRAFT') throw alreadyDecided(now);
        if (failure) throw new ConflictError(`invoice ${inv.id} is being decided: ${failure.message}`);
        throw new UnavailableError(`invoice ${inv.id} is ${now.status} but its close workflow is not running; retry in a moment`);
      }
      if (failure) throw new ConflictError(failure.message);
      throw err;
    }
  }
}

/** Finance approves a DRAFT invoice awaiting approval, at the total it was shown; answered once finalized. */
export async function approveInvoice(orm: MikroORM, temporal: Client, inv: Invoice, decision: { approvedBy: string | undefined; total: string }): Promise<void> {
  await decide(orm, inv, () => temporal.workflow.getHandle(invoiceWorkflowId(inv.id)).executeUpdate(approveInvoiceUpdate, { args: [decision] }));
}

/** Finance rejects a DRAFT invoice awaiting approval. */
export async function rejectInvoice(orm: MikroORM, temporal: Client, inv: Invoice, decision: { reason: string; rejectedBy: string | undefined }): Promise<void> {
  await decide(orm, inv, () => temporal.workflow.getHandle(invoiceWorkflowId(inv.id)).executeUpdate(rejectInvoiceUpdate, { args: [decision] }));
}
