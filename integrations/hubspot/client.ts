import { timingSafeEqual } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Duplex } from 'node:stream';
import { Client, Signature } from '@hubspot/api-client';
import type { HubSpotSettings } from '../../stack/config.js';

/**
 * The official `@hubspot/api-client`, pointed at HUBSPOT_API_BASE when set (the tests' local
 * HubSpot-protocol server). No retries inside the client: a failed call fails the activity and
 * Temporal retries it — after HubSpot's `Retry-After` for a 429 (`hubspotRetryDelayMs`), with
 * backoff for a 5xx. Undefined when the integration is off (no HUBSPOT_ACCESS_TOKEN).
 */
export function hubspotClient(s: Pick<HubSpotSettings, 'accessToken' | 'apiBase'> | undefined): Client | undefined {
  if (!s?.accessToken) return undefined;
  const https = !s.apiBase || s.apiBase.startsWith('https:');
  return new Client({ accessToken: s.accessToken, numberOfApiCallRetries: 0, httpAgent: timeoutAgent(https, HUBSPOT_CALL_TIMEOUT_MS), ...(s.apiBase ? { basePath: s.apiBase } : {}) });
}

/** A HubSpot call that has not answered for this long is abandoned (and retried by Temporal). */
export const HUBSPOT_CALL_TIMEOUT_MS = 15_000;

/**
 * An agent whose sockets are destroyed after `ms` without traffic, so a HubSpot call that hangs
 * fails (the client has no timeout of its own) instead of outliving its activity's attempt.
 */
function timeoutAgent(https: boolean, ms: number): HttpAgent {
  const Base = https ? HttpsAgent : HttpAgent;
  class TimeoutAgent extends (Base as typeof HttpAgent) {
    override createConnection(...args: Parameters<HttpAgent['createConnection']>): Duplex {
      const socket = super.createConnection(...args) as Duplex & { setTimeout(ms: number, cb: () => void): void };
      socket.setTimeout(ms, () => socket.destroy(new Error(`HubSpot did not answer within ${ms} ms`)));
      return socket;
    }
  }
  // `timeout` too: Node resets a pooled socket's timeout to the agent's own when it is reused.
  return new TimeoutAgent({ keepAlive: true, timeout: ms });
}

/** The HTTP status of a HubSpot answer the client threw on (its ApiException), if it was one. */
export function hubspotStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' && code >= 100 && code < 600 ? code : undefined;
}

/**
 * HubSpot refused the request itself: the same call cannot succeed by retrying. Not 429 (rate
 * limit), 408 (timeout), 423 (record locked, e.g. during a merge), 401/403 (a token being
 * rotated or a scope being granted: fixed by an operator, then the retry succeeds).
 */
export function isHubSpotRequestError(err: unknown): boolean {
  const s = hubspotStatus(err);
  return s !== undefined && s >= 400 && s < 500 && ![401, 403, 408, 423, 429].includes(s);
}

/** A property write refused because the property does not exist (deleted on HubSpot since it was made). */
export function isMissingProperty(err: unknown): boolean {
  return hubspotStatus(err) === 400 && /PROPERTY_DOESNT_EXIST/.test(JSON.stringify((err as { body?: unknown }).body ?? ''));
}

/** How long HubSpot asked us to wait (a 429's `Retry-After`, in seconds or as an HTTP date). */
export function hubspotRetryDelayMs(err: unknown, now = Date.now()): number | undefined {
  if (hubspotStatus(err) !== 429) return undefined;
  const headers = (err as { headers?: Record<string, string> }).headers ?? {};
  const raw = Object.entries(headers).find(([k]) => k.toLowerCase() === 'retry-after')?.[1];
  if (raw === undefined) return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(raw)) return Math.round(Number(raw) * 1000);
  const at = Date.parse(raw);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/** The error in one line, without headers (the client's message carries the response's). */
export function describeHubSpotError(err: unknown): string {
  const status = hubspotStatus(err);
  if (status !== undefined) {
    const body = (err as { body?: { message?: string; category?: string } }).body;
    return `HubSpot ${status}${body?.category ? ` ${body.category}` : ''}: ${body?.message ?? 'no message'}`;
  }
  return String((err as Error)?.message ?? err);
}

/**
 * The URI as HubSpot signs it: the full URL it called, with these URL-encoded characters decoded
 * (HubSpot's documentation on validating v3 signatures).
 */
export function hubspotSignedUri(uri: string): string {
  const decoded: Record<string, string> = { '%3A': ':', '%2F': '/', '%3F': '?', '%40': '@', '%21': '!', '%24': '$', '%27': "'", '%28': '(', '%29': ')', '%2A': '*', '%2C': ',', '%3B': ';' };
  return uri.replace(/%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)/gi, (m) => decoded[m.toUpperCase()] ?? m);
}

/** HubSpot's v3 request signature: base64 HMAC-SHA256 of method + URI + body + timestamp, keyed with the app's client secret. */
export function hubspotV3Signature(clientSecret: string, req: { method: string; uri: string; body: string; timestamp: string }): string {
  return Signature.getSignature(req.method, 'v3', { clientSecret, url: hubspotSignedUri(req.uri), requestBody: req.body, timestamp: req.timestamp as unknown as number, signature: '' });
}

export const SIGNATURE_MAX_AGE_MS = 5 * 60_000;

/**
 * Whether a webhook request is HubSpot's: the v3 signature matches (constant-time compare) and
 * its timestamp is within 5 minutes of now, either way. Returns why not, or null when it verifies.
 */
export function verifyHubSpotRequest(clientSecret: string, req: { method: string; uri: string; body: string; signature: string | undefined; timestamp: string | undefined }, now = Date.now()): string | null {
  if (!req.signature) return 'X-HubSpot-Signature-v3 is missing';
  if (!req.timestamp || !/^\d{1,16}$/.test(req.timestamp)) return 'X-HubSpot-Request-Timestamp is missing or not a number of milliseconds';
  if (Math.abs(now - Number(req.timestamp)) > SIGNATURE_MAX_AGE_MS) return 'X-HubSpot-Request-Timestamp is more than 5 minutes from now';
  const expected = Buffer.from(hubspotV3Signature(clientSecret, { method: req.method, uri: req.uri, body: req.body, timestamp: req.timestamp }));
  const given = Buffer.from(req.signature);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return 'X-HubSpot-Signature-v3 does not match';
  return null;
}
