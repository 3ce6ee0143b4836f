import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { AccrueError, ConflictError, UnavailableError, ValidationError } from '../../billing/errors.js';
import { jsonDecimal } from '../../billing/money.js';
import { UUID_RE } from '../../db/ids.js';
import { recordManualPayment, type RecordedPayment } from '../../db/payments.js';
import { describeStripeError, stripeClient } from '../../integrations/stripe/client.js';
import { settleOutOfBand } from '../../integrations/stripe/out-of-band.js';
import type { StripeSettings } from '../../stack/config.js';
import { tellContractPaymentsChanged } from '../../operations/payments/tell-contract-payments-changed.js';
import type { Client } from '../../operations/workflow-client.js';
import { allow } from '../auth.js';
import { decimal, objectAt, reqStr, timestamp } from '../../operations/input/validate.js';

/**
 * `POST /v1/accrue/invoices/{id}/payments {amount, paid_at?, reference}` (finance): a payment
 * received outside a billing provider (wire transfer, cheque). Idempotent on `reference`; the
 * answer is the payment and the invoice's standing after it. On an invoice Stripe collects, only
 * the whole amount due (`recordManualPayment`), which marks its Stripe copy paid out of band.
 */
export function invoicePaymentsRouter(orm: MikroORM, temporal: Client, stripeSettings?: StripeSettings): Router {
  const stripe = stripeClient(stripeSettings);
  const r = Router();
  r.post('/v1/accrue/invoices/:invoice_id/payments', allow('finance'), async (req, res) => {
    const invoiceId = String(req.params.invoice_id).toLowerCase();
    if (!UUID_RE.test(invoiceId)) throw new ValidationError('invoice_id', 'must be an invoice id (UUID)');
    const body = objectAt(req.body ?? {}, '', ['amount', 'paid_at', 'reference']);
    const amount = decimal(body, 'amount')!;
    const reference = reqStr(body, 'reference', '', 256);
    if (!reference.trim()) throw new ValidationError('reference', 'must not be blank');
    const paidAt = timestamp(body, 'paid_at', '', { optional: true });
    if (paidAt && Date.parse(paidAt) > Date.now() + 5 * 60_000) throw new ValidationError('paid_at', `must not be in the future, got ${paidAt}`);
    const recorded = await recordManualPayment(orm.em.fork(), { invoiceId, amount, reference, recordedBy: req.scope ?? null, stripeOn: !!stripe, ...(paidAt ? { paidAt } : {}) });
    let p: RecordedPayment;
    if ('settleAtStripe' in recorded) {
      // Its Stripe copy is open: marked paid out of band there first (Stripe settles it once:
      // this, or a charge in flight), then recorded.
      const { stripeInvoiceId, contractId } = recorded.settleAtStripe;
      let settled;
      try {
        settled = await settleOutOfBand(stripe!, orm.em, invoiceId, stripeInvoiceId);
      } catch (err) {
        if (err instanceof AccrueError) throw err;
        throw new UnavailableError(`payment ${reference} is noted, but Stripe could not mark invoice ${stripeInvoiceId} paid out of band; retry the same request: ${describeStripeError(err)}`);
      }
      if (settled?.outcome !== 'RECORDED') {
        await tellContractPaymentsChanged(temporal, contractId, `Stripe's settlement of invoice ${invoiceId}`);
        throw new ConflictError(settled?.outcome === 'PAID_AT_STRIPE'
          ? `invoice ${invoiceId} was paid through Stripe (${stripeInvoiceId}) meanwhile; payment ${JSON.stringify(reference)} is not recorded`
          : `invoice ${invoiceId}'s Stripe copy ${stripeInvoiceId} is ${settled?.stripeStatus ?? 'no longer open'}; payment ${JSON.stringify(reference)} is not recorded`);
      }
      p = settled.payment;
    } else {
      p = recorded;
    }
    await tellContractPaymentsChanged(temporal, p.contractId, `payment ${reference}`);
    res.status(p.created ? 201 : 200).json({
      data: {
        invoice_id: p.invoiceId, reference: p.reference, amount: jsonDecimal(p.amount), paid_at: p.paidAt,
        payment_status: p.standing.status, amount_due: jsonDecimal(p.standing.amountDue), due_at: p.standing.dueAt,
      },
    });
  });
  return r;
}
