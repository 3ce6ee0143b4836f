import { Agent } from 'node:http';
import type Metronome from '@metronome/sdk';
import Stripe from 'stripe';
import { stripeClient } from '../../integrations/stripe/client.js';
import { testStack, uniqueName } from '../stack.js';

/** The tests' Stripe key, webhook secret and client for the run's Stripe-protocol server (localstripe). */
export const STRIPE_KEY = 'sk_test_accrue_local_only';
export const STRIPE_WEBHOOK_SECRET = 'whsec_accrue_local_only';

export function testStripe(): Stripe {
  // No keep-alive: the test process leaves no sockets open behind it.
  return stripeClient({ secretKey: STRIPE_KEY, apiBase: testStack().stripeApiBase }, { httpAgent: new Agent({ keepAlive: false }) })!;
}

export function stripeEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { STRIPE_SECRET_KEY: STRIPE_KEY, STRIPE_API_BASE: testStack().stripeApiBase, STRIPE_WEBHOOK_SECRET, ...extra };
}

/** A Stripe customer with a default card: 4242… pays, 4000000000000341 is declined when charged. */
export async function stripeCustomer(stripe: Stripe, card: 'pays' | 'declines' | 'none' = 'pays'): Promise<string> {
  const customer = await stripe.customers.create({ name: uniqueName('stripe-co'), email: `${uniqueName('pay')}@example.test` });
  if (card === 'none') return customer.id;
  const pm = await stripe.paymentMethods.create({ type: 'card', card: { number: card === 'pays' ? '4242424242424242' : '4000000000000341', exp_month: 12, exp_year: 2031, cvc: '123' } } as Stripe.PaymentMethodCreateParams);
  await stripe.paymentMethods.attach(pm.id, { customer: customer.id });
  await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: pm.id } });
  return customer.id;
}

/**
 * Faults of the Stripe-protocol server: the next `count` API requests made with the secret `key`
 * answer `status` (before or after doing the work). The server is shared by test files running in
 * parallel, so an Accrue under fault gets a key of its own and nobody else's requests are hit.
 */
export async function stripeFaults(key: string, status: number, count: number, when: 'before' | 'after' = 'before'): Promise<void> {
  const res = await fetch(`${testStack().stripeApiBase}/_config/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key, status, count, when }) });
  if (!res.ok) throw new Error(`faults ${res.status}`);
}

/** Drops the faults still queued for `key`: Stripe answers it normally again. */
export async function stripeFaultsClear(key: string): Promise<void> {
  const res = await fetch(`${testStack().stripeApiBase}/_config/faults?key=${encodeURIComponent(key)}`, { method: 'DELETE' });
  if (!res.ok) throw new Error(`faults clear ${res.status}`);
}

export async function stripeFaultsLeft(key: string): Promise<number> {
  const res = await fetch(`${testStack().stripeApiBase}/_config/faults?key=${encodeURIComponent(key)}`);
  return ((await res.json()) as { count: number }).count;
}

/**
 * Holds the next `count` requests made with `key` on `route` (`POST /v1/invoices/{id}/pay`) inside
 * the Stripe-protocol server — idempotency key registered, nothing done — until stripeRelease.
 */
export async function stripeHold(key: string, route: string, count = 1): Promise<void> {
  const res = await fetch(`${testStack().stripeApiBase}/_config/holds`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key, route, count }) });
  if (!res.ok) throw new Error(`holds ${res.status}`);
}

/** How many requests made with `key` the server holds now. */
export async function stripeHeld(key: string): Promise<number> {
  const res = await fetch(`${testStack().stripeApiBase}/_config/holds?key=${encodeURIComponent(key)}`);
  return ((await res.json()) as { held: number }).held;
}

/** Lets every request held for `key` go on, and holds no more. */
export async function stripeRelease(key: string): Promise<void> {
  const res = await fetch(`${testStack().stripeApiBase}/_config/holds/release`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key }) });
  if (!res.ok) throw new Error(`release ${res.status}`);
}

/** Stripe's own webhooks from the server to an Accrue, signed with the test secret. */
export async function stripeSendsWebhooksTo(id: string, url: string): Promise<void> {
  const res = await fetch(`${testStack().stripeApiBase}/_config/webhooks/${id}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ url, secret: STRIPE_WEBHOOK_SECRET }).toString() });
  if (!res.ok) throw new Error(`webhook config ${res.status}`);
}

/** An event as Stripe would send it, signed the way Stripe signs (`Stripe.webhooks.generateTestHeaderString`). */
export function signedEvent(type: string, object: unknown, opts: { id?: string; secret?: string } = {}): { body: string; headers: Record<string, string> } {
  const body = JSON.stringify({ id: opts.id ?? `evt_${uniqueName('t').replace(/[^A-Za-z0-9]/g, '')}`, object: 'event', type, created: Math.floor(Date.now() / 1000), data: { object }, api_version: '2024-06-20', livemode: false });
  const header = Stripe.webhooks.generateTestHeaderString({ payload: body, secret: opts.secret ?? STRIPE_WEBHOOK_SECRET });
  return { body, headers: { 'content-type': 'application/json', 'stripe-signature': header } };
}

/** A metric, a product priced `price` cents a call from three months back, and a customer with a billing contact. */
export async function billedCustomer(client: Metronome, price: number | string) {
  const metric = await client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
  const product = await client.v1.contracts.products.create({ name: uniqueName('API calls'), type: 'USAGE', billable_metric_id: metric.data.id });
  const card = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
  const start = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() - 3, 1)).toISOString();
  await client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: Number(price), starting_at: start });
  const alias = uniqueName('stripe');
  const billingEmail = `${alias}@example.test`;
  const customer = await client.v1.customers.create({ name: 'Stripe Co', ingest_aliases: [alias], billing_email: billingEmail } as Metronome.V1.CustomerCreateParams);
  return { customerId: customer.data.id, rateCardId: card.data.id, productId: product.data.id, alias, billingEmail };
}
