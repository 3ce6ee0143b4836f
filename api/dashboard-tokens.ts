import { createHmac, timingSafeEqual } from 'node:crypto';
import { UnauthorizedError } from '../billing/errors.js';

/**
 * Signed dashboard URLs (v1.dashboards.getEmbeddableUrl): the claims travel in the token, HMAC'd
 * with the account's dashboard secret (db/console.ts), so serving a dashboard reads no session.
 */
export const DASHBOARDS = ['usage', 'invoices', 'credits', 'commits_and_credits'] as const;
export type Dashboard = typeof DASHBOARDS[number];

/** What a signed dashboard URL carries: whose dashboard, which one, until when, and how it looks. */
export interface DashboardClaims {
  customerId: string;
  dashboard: Dashboard;
  expiresAt: number;
  colors: Record<string, string>;
  /** Group key → its display name. */
  labels: Record<string, string>;
  /** Group key → value → its display name. */
  values: Record<string, Record<string, string>>;
  /** Metronome's dashboard_options (show_zero_usage_line_items, invoice_status_filter, hide_grant_name…). */
  options: Record<string, string>;
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export function signDashboard(secret: Buffer, claims: DashboardClaims): string {
  const payload = b64(JSON.stringify(claims));
  return `${payload}.${b64(createHmac('sha256', secret).update(payload).digest())}`;
}

/** The claims of a dashboard token, or why it is refused (tampered, expired). */
export function verifyDashboard(secret: Buffer, token: string | undefined, now = Date.now()): DashboardClaims {
  const [payload, sig, extra] = (token ?? '').split('.');
  if (!payload || !sig || extra !== undefined) throw new UnauthorizedError('dashboard URL: the token is missing or malformed');
  const expected = createHmac('sha256', secret).update(payload).digest();
  const given = Buffer.from(sig, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new UnauthorizedError('dashboard URL: the signature does not match (the URL was changed)');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as DashboardClaims;
  if (!(claims.expiresAt > now)) throw new UnauthorizedError('dashboard URL: expired; ask for a new one (v1.dashboards.getEmbeddableUrl)');
  return claims;
}
