import Stripe from 'stripe';
import type { StripeSettings } from '../../stack/config.js';

/**
 * The official `stripe` client, pointed at STRIPE_API_BASE when set (a Stripe-protocol server in
 * tests). No retries inside the client: a failed call fails the activity and Temporal retries it
 * with the same idempotency keys. Undefined when Stripe is off (no STRIPE_SECRET_KEY).
 */
export function stripeClient(s: Pick<StripeSettings, 'secretKey' | 'apiBase'> | undefined, extra: Partial<Stripe.StripeConfig> = {}): Stripe | undefined {
  if (!s?.secretKey) return undefined;
  const config: Stripe.StripeConfig = { maxNetworkRetries: 0, timeout: 10_000, telemetry: false, ...extra };
  if (s.apiBase) {
    const u = new URL(s.apiBase);
    const protocol = u.protocol === 'http:' ? 'http' : 'https';
    Object.assign(config, { host: u.hostname, port: u.port ? Number(u.port) : protocol === 'http' ? 80 : 443, protocol });
  }
  return new Stripe(s.secretKey, config);
}

/**
 * Stripe's answer was a refusal of the request itself (4xx other than 429 and 409): retrying the
 * same call cannot help. A 409 is a conflict with another request in progress — above all
 * `idempotency_key_in_use`, an earlier attempt with the same key still running at Stripe — and
 * is "try again later": the retry gets that request's answer.
 */
export function isStripeRequestError(err: unknown): err is Stripe.errors.StripeError {
  return err instanceof Stripe.errors.StripeError && typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500
    && err.statusCode !== 429 && err.statusCode !== 409 && err.type !== 'StripeCardError';
}

export function isStripeCardError(err: unknown): err is Stripe.errors.StripeCardError {
  return err instanceof Stripe.errors.StripeCardError;
}

/** The same error without anything that could carry the key (Stripe's errors keep request headers). */
export function describeStripeError(err: unknown): string {
  if (err instanceof Stripe.errors.StripeError) return `Stripe ${err.statusCode ?? 'error'} ${err.type}${err.code ? ` (${err.code})` : ''}: ${err.message}`;
  return String((err as Error)?.message ?? err);
}
