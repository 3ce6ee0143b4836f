import { formatUsdCents } from '../../billing/money.js';
import type { InvoiceView } from '../../db/invoices.js';
import type { OutgoingMail } from './mailer.js';

/** Formats whole cents as dollars: the one formatter, in billing/money.ts (no rounding here). */
export { formatUsdCents } from '../../billing/money.js';

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The email a customer's billing contact receives for a finalized invoice. */
export function renderInvoiceEmail(invoice: InvoiceView, customer: { name: string; billingEmail: string }): OutgoingMail {
  const period = `${invoice.periodStart.slice(0, 10)} to ${invoice.periodEnd.slice(0, 10)}`;
  const total = formatUsdCents(invoice.total);
  const subject = `Your invoice for ${period}: ${total}`;
  const lines = invoice.lines.map((l) => ({ name: l.name, quantity: l.quantity ?? '', amount: formatUsdCents(l.total) }));
  const text = [
    `Hello ${customer.name},`,
    '',
    `Your invoice ${invoice.id} for usage from ${period} (UTC) is final.`,
    '',
    ...lines.map((l) => `  ${l.name}: ${l.quantity ? `${l.quantity} units, ` : ''}${l.amount}`),
    '',
    `Total: ${total}`,
    `Invoice total in cents: ${invoice.total}`,
  ].join('\n');
  const html = `<!doctype html><html><body>
<p>Hello ${esc(customer.name)},</p>
<p>Your invoice <code>${esc(invoice.id)}</code> for usage from ${esc(period)} (UTC) is final.</p>
<table border="1" cellpadding="4" cellspacing="0"><tr><th>Item</th><th>Quantity</th><th>Amount</th></tr>
${lines.map((l) => `<tr><td>${esc(l.name)}</td><td>${esc(l.quantity)}</td><td>${esc(l.amount)}</td></tr>`).join('\n')}
<tr><th colspan="2">Total</th><th>${esc(total)}</th></tr></table>
</body></html>`;
  return { to: customer.billingEmail, subject, text, html, messageId: `<invoice-${invoice.id}@accrue.local>` };
}
