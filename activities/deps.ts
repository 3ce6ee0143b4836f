import type { MikroORM } from '@mikro-orm/postgresql';
import type { Mailer } from '../integrations/email/mailer.js';
import type { HubSpotSettings, LifecycleSettings, StripeSettings, WebhookSettings } from '../stack/config.js';

/** Everything activities need, injected once by the worker (and by tests). */
export interface ActivityDeps {
  orm: MikroORM;
  mailer: Mailer;
  invoiceGracePeriodMs: number;
  /**
   * How long after a contract's end late events can still arrive (the ingest window, 34 days by
   * default): then an ended contract with no renewal bills its late usage on an invoice of its own.
   */
  lateUsageWindowMs?: number;
  /** How long raw events and their deduplication keys are kept (ACCRUE_EVENT_RETENTION); the ingest window + 2 days by default. */
  eventRetentionMs?: number;
  /** Least time between the starts of two rating passes that each found fewer than 10,000 events (ACCRUE_RATING_INTERVAL, 250 ms). */
  ratingIntervalMs?: number;
  /** Operator defaults for trials, approvals and reminders; DEFAULT_LIFECYCLE_SETTINGS where a field is missing. */
  lifecycle?: Partial<LifecycleSettings>;
  /** Webhook delivery retries and address policy; DEFAULT_WEBHOOK_SETTINGS where a field is missing. */
  webhooks?: Partial<WebhookSettings>;
  /** Stripe (key, API base, dunning schedule); Stripe is off without a key. */
  stripe?: StripeSettings;
  /** HubSpot (token, API base, property names, sync intervals); the CRM integration is off without a token. */
  hubspot?: HubSpotSettings;
}
