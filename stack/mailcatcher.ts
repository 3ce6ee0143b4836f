import { createServer as createHttpServer, type Server } from 'node:http';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { assertPortFree } from './net.js';

/**
 * A local mail catcher: a real SMTP server that keeps every message, plus a small web page (and
 * JSON at /api/messages) listing them, so a person can see exactly what customers would receive.
 * Messages are kept as .eml files when a folder is given, so they survive restarts.
 */
export interface CaughtMail {
  id: number;
  messageId?: string;
  from?: string;
  to: string[];
  subject?: string;
  date?: string;
  text?: string;
  html?: string;
  /** Attachments, their content base64-encoded (tests read the invoice PDF from here). */
  attachments: { filename?: string; contentType: string; size: number; contentBase64: string }[];
  receivedAt: string;
}

export interface RunningMailCatcher {
  smtpUrl: string;
  webUrl: string;
  messages(): CaughtMail[];
  stop(): Promise<void>;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export async function startMailCatcher(opts: { smtpPort: number; webPort: number; dir?: string }): Promise<RunningMailCatcher> {
  await assertPortFree(opts.smtpPort, 'the mail catcher (SMTP)', 'ACCRUE_SMTP_PORT');
  await assertPortFree(opts.webPort, 'the mail catcher (web)', 'ACCRUE_MAIL_UI_PORT');
  const mail: CaughtMail[] = [];
  let nextId = 1;

  async function keep(raw: Buffer, to: string[], receivedAt: string): Promise<void> {
    const id = nextId++;
    const parsed = await simpleParser(raw);
    mail.push({
      id,
      messageId: parsed.messageId,
      from: parsed.from?.text,
      to,
      subject: parsed.subject,
      date: parsed.date?.toISOString(),
      text: parsed.text,
      html: typeof parsed.html === 'string' ? parsed.html : undefined,
      attachments: parsed.attachments.map((a) => ({ filename: a.filename, contentType: a.contentType, size: a.size, contentBase64: a.content.toString('base64') })),
      receivedAt,
    });
  }

  if (opts.dir) {
    mkdirSync(opts.dir, { recursive: true });
    for (const name of readdirSync(opts.dir).filter((n) => n.endsWith('.eml')).sort()) {
      const raw = readFileSync(join(opts.dir, name));
      const [stamp, rcpt] = name.replace(/\.eml$/, '').split('__');
      await keep(raw, rcpt ? rcpt.split(',') : [], new Date(Number(stamp?.split('-')[0])).toISOString());
    }
  }

  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    banner: 'Accrue mail catcher',
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks);
        const to = session.envelope.rcptTo.map((r) => r.address);
        const receivedAt = new Date();
        if (opts.dir) {
          writeFileSync(join(opts.dir, `${receivedAt.getTime()}-${nextId}__${to.join(',')}.eml`), raw);
        }
        // Acknowledge once the message is held, as a real MTA queues before it processes: the
        // sender's 250 never waits on parsing here.
        callback();
        keep(raw, to, receivedAt.toISOString()).catch((err: Error) => console.error('[mail] could not parse a message:', err));
      });
    },
  });
  await new Promise<void>((r, j) => {
    smtp.on('error', j);
    smtp.listen(opts.smtpPort, '127.0.0.1', () => r());
  });

  const web: Server = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/api/messages') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify([...mail].sort((a, b) => a.id - b.id)));
      return;
    }
    const one = /^\/messages\/(\d+)$/.exec(url.pathname);
    if (one) {
      const m = mail.find((x) => x.id === Number(one[1]));
      if (!m) {
        res.writeHead(404).end('no such message');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(m.html ?? `<pre>${escapeHtml(m.text ?? '')}</pre>`);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    const rows = [...mail].reverse().map((m) =>
      `<tr><td>${escapeHtml(m.receivedAt)}</td><td>${escapeHtml(m.to.join(', '))}</td><td><a href="/messages/${m.id}">${escapeHtml(m.subject ?? '(no subject)')}</a></td></tr>`).join('');
    res.end(`<!doctype html><title>Accrue mail</title><h1>Mail sent by Accrue (${mail.length})</h1>
<table border="1" cellpadding="4"><tr><th>received</th><th>to</th><th>subject</th></tr>${rows}</table>`);
  });
  await new Promise<void>((r, j) => {
    web.on('error', j);
    web.listen(opts.webPort, '127.0.0.1', () => r());
  });

  return {
    smtpUrl: `smtp://127.0.0.1:${opts.smtpPort}`,
    webUrl: `http://127.0.0.1:${opts.webPort}`,
    messages: () => [...mail],
    async stop() {
      await new Promise<void>((r) => smtp.close(() => r()));
      await new Promise<void>((r) => web.close(() => r()));
    },
  };
}
