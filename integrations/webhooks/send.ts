import { createHmac } from 'node:crypto';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isPublicAddress } from './address-policy.js';

/**
 * Signs like Metronome, so the official SDK's `webhooks.unwrap(body, headers, secret)` verifies
 * it: `Metronome-Webhook-Signature` is the lowercase hex HMAC-SHA256 of `date + "\n" + body` with
 * the endpoint's secret, and `X-Metronome-Date` is `date` (the send time).
 */
export function signWebhook(body: string, date: string, secret: string): string {
  return createHmac('sha256', secret).update(`${date}\n${body}`).digest('hex');
}

export interface WebhookAttempt {
  statusCode?: number;
  /** Set when no HTTP answer came (refused, timed out, blocked address). */
  error?: string;
  ok: boolean;
}

/** How long a receiver has to answer one delivery: the whole answer, not the time between bytes. */
export const WEBHOOK_SEND_TIMEOUT_MS = 10_000;

/**
 * POSTs one signed body. The connection goes only to a public address unless `allowPrivate`: the
 * check is in the DNS lookup the socket uses, so the address checked is the address connected to.
 * Redirects are not followed (a 3xx is a failed attempt). `timeoutMs` is a deadline for the whole
 * answer; `signal` (the activity's cancellation) ends the request early.
 */
export function sendWebhook(url: URL, body: string, secret: string, opts: { allowPrivate: boolean; now?: Date; timeoutMs?: number; signal?: AbortSignal }): Promise<WebhookAttempt> {
  const date = (opts.now ?? new Date()).toUTCString();
  const headers = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-metronome-date': date,
    'metronome-webhook-signature': signWebhook(body, date, secret),
    'user-agent': 'Accrue-Webhooks/1',
  };
  const lookup = (hostname: string, options: object, cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return cb(err, '');
      const list = addresses as LookupAddress[];
      const bad = opts.allowPrivate ? undefined : list.find((a) => !isPublicAddress(a.address));
      if (bad) return cb(Object.assign(new Error(`${hostname} resolves to ${bad.address}, a private address (refused)`), { code: 'EACCES' }), '');
      if ((options as { all?: boolean }).all) return cb(null, list);
      return cb(null, list[0]!.address, list[0]!.family);
    });
  };
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!opts.allowPrivate && /^[\d.]+$|:/.test(host) && !isPublicAddress(host)) {
    return Promise.resolve({ ok: false, error: `${host} is a private, loopback or link-local address (refused)` });
  }
  const mod = url.protocol === 'https:' ? https : http;
  const limit = opts.timeoutMs ?? WEBHOOK_SEND_TIMEOUT_MS;
  return new Promise((resolve) => {
    // `timeout` below is only the socket's idle time; the timer is the deadline for the whole
    // answer, so a receiver trickling bytes is cut off too. Every path settles exactly once.
    let settled = false;
    const settle = (a: WebhookAttempt) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve(a);
    };
    const req = mod.request(url, { method: 'POST', headers, lookup, timeout: limit, agent: false }, (res) => {
      res.resume();
      res.on('end', () => settle({ statusCode: res.statusCode, ok: !!res.statusCode && res.statusCode >= 200 && res.statusCode < 300 }));
      res.on('error', (err) => settle({ statusCode: res.statusCode, ok: false, error: err.message }));
      res.on('close', () => settle({ statusCode: res.statusCode, ok: false, error: 'the connection closed before the whole answer' }));
    });
    const timer = setTimeout(() => req.destroy(new Error(`no complete answer within ${limit} ms`)), limit);
    const onAbort = () => req.destroy(new Error('the delivery was cancelled'));
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${limit} ms`)));
    req.on('error', (err) => settle({ ok: false, error: err.message }));
    req.on('close', () => settle({ ok: false, error: 'the connection closed before an answer' }));
    req.end(body);
  });
}
