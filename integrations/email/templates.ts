/**
 * Email layout: a message is a list of blocks, rendered once to plain text and once to HTML, so
 * the two parts always say the same thing. Values are inserted as text and escaped for HTML here,
 * and nowhere else. Amounts come in already formatted (`formatUsdCents` on the stored decimals):
 * nothing here does arithmetic.
 */
export type Block =
  | { kind: 'paragraph'; text: string }
  /** Label/value pairs (invoice number, period, total…). */
  | { kind: 'facts'; rows: [label: string, value: string][] }
  /** A table with a header row and an optional footer row (e.g. the total); `numeric` columns align right. */
  | { kind: 'table'; head: string[]; rows: string[][]; foot?: string[]; numeric?: number[] }
  | { kind: 'note'; text: string };

export const paragraph = (text: string): Block => ({ kind: 'paragraph', text });
export const facts = (rows: [string, string][]): Block => ({ kind: 'facts', rows });
export const table = (head: string[], rows: string[][], opts: { foot?: string[]; numeric?: number[] } = {}): Block => ({ kind: 'table', head, rows, ...opts });
export const note = (text: string): Block => ({ kind: 'note', text });

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export interface RenderedMail {
  text: string;
  html: string;
}

/** Renders `blocks` under `title` as the text part and the HTML part of one message. */
export function renderMail(title: string, blocks: Block[]): RenderedMail {
  return { text: renderText(title, blocks), html: renderHtml(title, blocks) };
}

function renderText(title: string, blocks: Block[]): string {
  const out: string[] = [title, '='.repeat(Math.min(title.length, 72)), ''];
  for (const b of blocks) {
    switch (b.kind) {
      case 'paragraph':
        out.push(b.text, '');
        break;
      case 'note':
        out.push(`-- ${b.text}`, '');
        break;
      case 'facts': {
        const w = Math.max(...b.rows.map(([l]) => l.length));
        for (const [label, value] of b.rows) out.push(`${`${label}:`.padEnd(w + 2)}${value}`);
        out.push('');
        break;
      }
      case 'table': {
        const all = [b.head, ...b.rows, ...(b.foot ? [b.foot] : [])];
        const widths = b.head.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
        const line = (r: string[]) => r.map((cell, c) => (b.numeric?.includes(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
        const rule = widths.map((w) => '-'.repeat(w)).join('  ');
        out.push(line(b.head), rule, ...b.rows.map(line));
        if (b.foot) out.push(rule, line(b.foot));
        out.push('');
        break;
      }
    }
  }
  return out.join('\n').trimEnd() + '\n';
}

const CELL = 'padding:4px 8px;border-bottom:1px solid #ddd';

function renderHtml(title: string, blocks: Block[]): string {
  const body = blocks.map((b) => {
    switch (b.kind) {
      case 'paragraph':
        return `<p>${escapeHtml(b.text)}</p>`;
      case 'note':
        return `<p style="color:#666;font-size:12px">${escapeHtml(b.text)}</p>`;
      case 'facts':
        return `<table cellspacing="0">${b.rows.map(([l, v]) => `<tr><th align="left" style="${CELL}">${escapeHtml(l)}</th><td style="${CELL}">${escapeHtml(v)}</td></tr>`).join('')}</table>`;
      case 'table': {
        const align = (c: number) => (b.numeric?.includes(c) ? 'right' : 'left');
        const row = (r: string[], tag: 'td' | 'th') => `<tr>${r.map((cell, c) => `<${tag} align="${align(c)}" style="${CELL}">${escapeHtml(cell)}</${tag}>`).join('')}</tr>`;
        return `<table cellspacing="0"><thead>${row(b.head, 'th')}</thead><tbody>${b.rows.map((r) => row(r, 'td')).join('')}</tbody>${b.foot ? `<tfoot>${row(b.foot, 'th')}</tfoot>` : ''}</table>`;
      }
    }
  }).join('\n');
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body style="font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#222">
<h2>${escapeHtml(title)}</h2>
${body}
</body></html>
`;
}
