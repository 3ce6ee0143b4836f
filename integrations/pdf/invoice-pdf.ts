import { formatUsdCents } from '../../billing/money.js';
import type { InvoiceView } from '../../db/invoices.js';

/**
 * The invoice as a PDF: one A4 page per 48 lines, Helvetica, written by hand (PDF 1.4 text
 * objects; no dependency). Amounts are the stored cents, formatted with decimal arithmetic.
 */
export function renderInvoicePdf(invoice: InvoiceView, customer: { name: string }): Buffer {
  const rows: string[] = [
    `Invoice ${invoice.id}`,
    `Customer: ${customer.name}`,
    `Period: ${invoice.periodStart.slice(0, 10)} to ${invoice.periodEnd.slice(0, 10)} (UTC)   Status: ${invoice.status}`,
    '',
    ...invoice.lines.map((l) => `${l.name}${l.quantity !== undefined ? `  x ${l.quantity}` : ''}   ${formatUsdCents(l.total)}`),
    '',
    `Total: ${formatUsdCents(invoice.total)}`,
  ];
  const pages: string[][] = [];
  for (let i = 0; i < rows.length; i += 48) pages.push(rows.slice(i, i + 48));
  const esc = (t: string) => t.replace(/[^\x20-\x7e]/g, '?').replace(/([\\()])/g, '\\$1');
  const objects: string[] = [];
  const add = (body: string) => objects.push(body);
  add('<< /Type /Catalog /Pages 2 0 R >>');
  const pageIds = pages.map((_, i) => 4 + i * 2);
  add(`<< /Type /Pages /Kids [${pageIds.map((id) => `${id} 0 R`).join(' ')}] /Count ${pages.length} >>`);
  add('<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>');
  for (const [i, page] of pages.entries()) {
    const stream = ['BT', '/F1 11 Tf', '14 TL', '50 800 Td', ...page.map((line) => `(${esc(line)}) Tj T*`), 'ET'].join('\n');
    add(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents ${pageIds[i]! + 1} 0 R >>`);
    add(`<< /Length ${Buffer.byteLength(stream)} >>\nstream\n${stream}\nendstream`);
  }
  let out = '%PDF-1.4\n';
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(Buffer.byteLength(out));
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xref = Buffer.byteLength(out);
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('')}`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}
