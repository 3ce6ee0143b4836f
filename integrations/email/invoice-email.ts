import { formatUsdCents } from '../../billing/money.js';
import type { InvoiceView } from '../../db/invoices.js';
import { renderInvoicePdf } from '../pdf/invoice-pdf.js';
import type { OutgoingMail } from './mailer.js';
import { facts, note, paragraph, renderMail, table } from './templates.js';

/** Formats whole cents as dollars: the one formatter, in billing/money.ts (no rounding here). */
export { formatUsdCents } from '../../billing/money.js';

/**
 * The email a customer's billing contact receives for a finalized invoice: text and HTML from the
 * same blocks, and the invoice PDF attached. Every amount is the stored decimal (whole cents)
 * formatted by `formatUsdCents`, the same as the PDF and the API: they cannot disagree.
 */
export function renderInvoiceEmail(invoice: InvoiceView, customer: { name: string; billingEmail: string }): OutgoingMail {
  // A SCHEDULED invoice bills a commit bought at one instant (an auto-recharge): a date, not a period.
  const scheduled = invoice.type === 'SCHEDULED';
  const period = scheduled ? invoice.periodStart.slice(0, 10) : `${invoice.periodStart.slice(0, 10)} to ${invoice.periodEnd.slice(0, 10)}`;
  const total = formatUsdCents(invoice.total);
  const subject = `Your invoice ${scheduled ? 'of' : 'for'} ${period}: ${total}`;
  const { text, html } = renderMail(`Invoice ${scheduled ? 'of' : 'for'} ${period}`, [
    paragraph(`Hello ${customer.name},`),
    paragraph(scheduled ? `Your invoice of ${period} (UTC) for ${invoice.lines.map((l) => l.name).join(', ')} is final. The PDF is attached.` : `Your invoice for usage from ${period} (UTC) is final. The PDF is attached.`),
    facts([['Invoice', invoice.id], [scheduled ? 'Date' : 'Period', `${period} (UTC)`], ['Total', total]]),
    table(['Item', 'Quantity', 'Amount'], invoice.lines.map((l) => [l.name, l.quantity ?? '', formatUsdCents(l.total)]), { foot: ['Total', '', total], numeric: [1, 2] }),
    note(`Invoice total in cents: ${invoice.total}`),
  ]);
  return {
    to: customer.billingEmail, subject, text, html, messageId: `<invoice-${invoice.id}@accrue.local>`,
    attachments: [{ filename: `invoice-${invoice.id}.pdf`, contentType: 'application/pdf', content: renderInvoicePdf(invoice, customer) }],
  };
}
