import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDurationMs } from '../billing/periods.js';
import { parseApprovalPolicyEnv, type ApprovalPolicy } from '../billing/approval-policy.js';

/** Repository root (dist/stack/config.js and stack/config.ts both sit two levels below it). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).includes('/dist/') ? '../..' : '..');

/** Accrue's Temporal search attributes: registered on the embedded server, set by workflows. */
export const SEARCH_ATTRIBUTES = {
  CustomerId: 'Keyword',
  ContractId: 'Keyword',
  InvoiceId: 'Keyword',
  LifecycleState: 'Keyword',
} as const;

export interface Config {
  databaseUrl: string;
  temporalAddress: string;
  temporalNamespace: string;
  taskQueue: string;
  smtpUrl: string;
  mailFrom: string;
  port: number;
  adminToken?: string;
  invoiceGracePeriodMs: number;
  /** Oldest event timestamp ingest accepts, as an age (Metronome: 34 days). */
  ingestMaxAgeMs: number;
  /**
   * How long raw events and their deduplication keys are kept (ACCRUE_EVENT_RETENTION; default
   * the ingest window + 2 days, and never less: a retry of any event ingest still accepts must
   * find its key). Aggregates are kept forever.
   */
  eventRetentionMs: number;
  /**
   * Least time between two small rating passes (ACCRUE_RATING_INTERVAL, default 250ms): usage
   * shows up to this much later, and the rater spends a fraction of the CPU per event.
   */
  ratingIntervalMs: number;
  dataDir: string;
  lifecycle: LifecycleSettings;
  webhooks: WebhookSettings;
  stripe: StripeSettings;
  hubspot: HubSpotSettings;
  console: ConsoleSettings;
}

/**
 * The web console. A finance login lasts ACCRUE_CONSOLE_SESSION_TTL (8h); a customer
 * dashboard URL (v1.dashboards.getEmbeddableUrl) is valid for ACCRUE_DASHBOARD_URL_TTL (24h).
 * ACCRUE_TEMPORAL_UI_URL links each contract to its workflow in the Temporal Web UI (`npm start`
 * sets it to the embedded one); ACCRUE_PUBLIC_URL is the address in dashboard URLs. One token
 * holds at most ACCRUE_CONSOLE_MAX_SESSIONS (10) console sessions that have not expired. The live
 * feed's LISTEN connection must answer a probe every ACCRUE_CONSOLE_FEED_PROBE (20s) within as
 * long, or it is made again (and every open page reads its data again).
 */
export interface ConsoleSettings {
  sessionTtlMs: number;
  maxSessionsPerToken: number;
  dashboardUrlTtlMs: number;
  feedProbeMs: number;
  temporalUiUrl?: string;
  temporalNamespace: string;
  publicUrl?: string;
}

export function loadConsoleSettings(env: NodeJS.ProcessEnv = process.env): ConsoleSettings {
  const sessionTtlMs = parseDurationMs(env.ACCRUE_CONSOLE_SESSION_TTL ?? '8h', 'ACCRUE_CONSOLE_SESSION_TTL');
  const dashboardUrlTtlMs = parseDurationMs(env.ACCRUE_DASHBOARD_URL_TTL ?? '24h', 'ACCRUE_DASHBOARD_URL_TTL');
  if (sessionTtlMs <= 0 || dashboardUrlTtlMs <= 0) throw new Error('ACCRUE_CONSOLE_SESSION_TTL and ACCRUE_DASHBOARD_URL_TTL must be positive');
  const ui = env.ACCRUE_TEMPORAL_UI_URL?.trim().replace(/\/+$/, '') || undefined;
  if (ui && !/^https?:\/\/[^\s]+$/.test(ui)) throw new Error(`ACCRUE_TEMPORAL_UI_URL must be a URL like http://127.0.0.1:8233: ${JSON.stringify(ui)}`);
  const publicUrl = env.ACCRUE_PUBLIC_URL?.trim().replace(/\/+$/, '') || undefined;
  const maxSessionsPerToken = Number(env.ACCRUE_CONSOLE_MAX_SESSIONS ?? 10);
  if (!Number.isInteger(maxSessionsPerToken) || maxSessionsPerToken < 1) throw new Error(`ACCRUE_CONSOLE_MAX_SESSIONS must be a positive integer: ${env.ACCRUE_CONSOLE_MAX_SESSIONS}`);
  const feedProbeMs = parseDurationMs(env.ACCRUE_CONSOLE_FEED_PROBE ?? '20s', 'ACCRUE_CONSOLE_FEED_PROBE');
  if (feedProbeMs <= 0) throw new Error(`ACCRUE_CONSOLE_FEED_PROBE must be positive: ${env.ACCRUE_CONSOLE_FEED_PROBE}`);
  return { sessionTtlMs, maxSessionsPerToken, dashboardUrlTtlMs, feedProbeMs, ...(ui ? { temporalUiUrl: ui } : {}), temporalNamespace: env.TEMPORAL_NAMESPACE ?? 'default', ...(publicUrl ? { publicUrl } : {}) };
}

/** The billing facts Accrue keeps current on HubSpot companies and deals. */
export const CRM_FIELDS = ['current_period_spend', 'commit_remaining', 'lifecycle_state', 'last_invoice_number', 'last_invoice_total', 'last_invoice_status', 'renewal_date'] as const;
export type CrmField = typeof CRM_FIELDS[number];

/**
 * HubSpot both ways. Without HUBSPOT_ACCESS_TOKEN the integration is off. Calls go
 * through @hubspot/api-client, pointed at HUBSPOT_API_BASE when set (a HubSpot-protocol server in
 * tests); HUBSPOT_CLIENT_SECRET verifies inbound webhooks (v3 signatures). A deal moved to
 * ACCRUE_HUBSPOT_CLOSED_WON_STAGE (`closedwon`) starts its contract. The billing facts are written
 * to properties named `accrue_<field>` unless ACCRUE_HUBSPOT_PROPERTIES renames them
 * (`lifecycle_state=billing_state,renewal_date=renews_on`); current-period spend and commit
 * remaining are refreshed every ACCRUE_HUBSPOT_SYNC_INTERVAL (1h), changes (transitions,
 * invoices, payments) are pushed within ACCRUE_HUBSPOT_COALESCE (10s), and a customer is pushed
 * at least daily. ACCRUE_PUBLIC_URL is the address HubSpot calls (the v3 signature covers the full
 * URI); without it the request's own host is used. A prepaid commit from a deal is given on
 * ACCRUE_HUBSPOT_COMMIT_PRODUCT (a product id), or on a FIXED product Accrue creates once.
 * The token and secret are never logged or returned.
 */
export interface HubSpotSettings {
  accessToken?: string;
  apiBase?: string;
  clientSecret?: string;
  closedWonStage: string;
  publicUrl?: string;
  commitProductId?: string;
  properties: Record<CrmField, string>;
  syncIntervalMs: number;
  coalesceMs: number;
}

export const DEFAULT_HUBSPOT_PROPERTIES = Object.fromEntries(CRM_FIELDS.map((f) => [f, `accrue_${f}`])) as Record<CrmField, string>;

export function loadHubSpotSettings(env: NodeJS.ProcessEnv = process.env): HubSpotSettings {
  const apiBase = env.HUBSPOT_API_BASE?.trim() || undefined;
  if (apiBase && !/^https?:\/\/[^/]+\/?$/.test(apiBase)) throw new Error(`HUBSPOT_API_BASE must be a URL like http://127.0.0.1:12112 (scheme, host and port only): ${JSON.stringify(apiBase)}`);
  const publicUrl = env.ACCRUE_PUBLIC_URL?.trim().replace(/\/+$/, '') || undefined;
  if (publicUrl && !/^https?:\/\/[^/]+(\/.*)?$/.test(publicUrl)) throw new Error(`ACCRUE_PUBLIC_URL must be a URL like https://billing.example.com: ${JSON.stringify(publicUrl)}`);
  const properties = { ...DEFAULT_HUBSPOT_PROPERTIES };
  for (const pair of (env.ACCRUE_HUBSPOT_PROPERTIES ?? '').split(',').map((x) => x.trim()).filter(Boolean)) {
    const [field, name] = pair.split('=').map((x) => x.trim());
    if (!(CRM_FIELDS as readonly string[]).includes(field ?? '')) throw new Error(`ACCRUE_HUBSPOT_PROPERTIES: ${JSON.stringify(field)} is not one of ${CRM_FIELDS.join(', ')}`);
    if (!name || !/^[a-z][a-z0-9_]{0,99}$/.test(name)) throw new Error(`ACCRUE_HUBSPOT_PROPERTIES: ${field} needs a HubSpot property name (lowercase letters, digits, _), got ${JSON.stringify(name ?? '')}`);
    properties[field as CrmField] = name;
  }
  if (new Set(Object.values(properties)).size !== CRM_FIELDS.length) throw new Error('ACCRUE_HUBSPOT_PROPERTIES: two fields have the same property name');
  const commitProductId = env.ACCRUE_HUBSPOT_COMMIT_PRODUCT?.trim() || undefined;
  if (commitProductId && !/^[0-9a-f-]{36}$/i.test(commitProductId)) throw new Error(`ACCRUE_HUBSPOT_COMMIT_PRODUCT must be a product id (uuid): ${JSON.stringify(commitProductId)}`);
  const syncIntervalMs = parseDurationMs(env.ACCRUE_HUBSPOT_SYNC_INTERVAL ?? '1h', 'ACCRUE_HUBSPOT_SYNC_INTERVAL');
  const coalesceMs = parseDurationMs(env.ACCRUE_HUBSPOT_COALESCE ?? '10s', 'ACCRUE_HUBSPOT_COALESCE');
  if (syncIntervalMs <= 0 || syncIntervalMs > 86_400_000) throw new Error('ACCRUE_HUBSPOT_SYNC_INTERVAL must be positive and at most 24h (a customer is pushed at least daily)');
  return {
    ...(env.HUBSPOT_ACCESS_TOKEN ? { accessToken: env.HUBSPOT_ACCESS_TOKEN } : {}),
    ...(apiBase ? { apiBase: apiBase.replace(/\/$/, '') } : {}),
    ...(env.HUBSPOT_CLIENT_SECRET ? { clientSecret: env.HUBSPOT_CLIENT_SECRET } : {}),
    closedWonStage: env.ACCRUE_HUBSPOT_CLOSED_WON_STAGE?.trim() || 'closedwon',
    ...(publicUrl ? { publicUrl } : {}),
    ...(commitProductId ? { commitProductId: commitProductId.toLowerCase() } : {}),
    properties, syncIntervalMs, coalesceMs,
  };
}

/**
 * Payments through Stripe. Without STRIPE_SECRET_KEY Stripe is off: no invoice is sent
 * and a Stripe billing config is refused (409). STRIPE_API_BASE points the client at another
 * Stripe-protocol server (tests); STRIPE_WEBHOOK_SECRET verifies inbound webhooks. Dunning retries
 * a failed payment on ACCRUE_DUNNING_SCHEDULE (delays from the failure: `1d,3d,5d,7d` by default,
 * each step measured from the previous one). The key is never logged or returned.
 */
export interface StripeSettings {
  secretKey?: string;
  apiBase?: string;
  webhookSecret?: string;
  dunningScheduleMs: number[];
}

export function loadStripeSettings(env: NodeJS.ProcessEnv = process.env): StripeSettings {
  const schedule = (env.ACCRUE_DUNNING_SCHEDULE ?? '1d,3d,5d,7d').split(',').map((s) => s.trim()).filter(Boolean);
  if (!schedule.length) throw new Error('ACCRUE_DUNNING_SCHEDULE must list at least one delay, like 1d,3d,5d,7d');
  const apiBase = env.STRIPE_API_BASE?.trim() || undefined;
  if (apiBase && !/^https?:\/\/[^/]+\/?$/.test(apiBase)) throw new Error(`STRIPE_API_BASE must be a URL like http://127.0.0.1:12111 (scheme, host and port only): ${JSON.stringify(apiBase)}`);
  return {
    ...(env.STRIPE_SECRET_KEY ? { secretKey: env.STRIPE_SECRET_KEY } : {}),
    ...(apiBase ? { apiBase } : {}),
    ...(env.STRIPE_WEBHOOK_SECRET ? { webhookSecret: env.STRIPE_WEBHOOK_SECRET } : {}),
    dunningScheduleMs: schedule.map((d) => {
      const ms = parseDurationMs(d, 'ACCRUE_DUNNING_SCHEDULE');
      if (ms <= 0) throw new Error(`ACCRUE_DUNNING_SCHEDULE: every delay must be positive, got ${JSON.stringify(d)}`);
      return ms;
    }),
  };
}

/**
 * Outbound webhook delivery. Each delivery retries with exponential backoff from
 * ACCRUE_WEBHOOK_RETRY_INITIAL (10s) doubling up to ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL (1h), for
 * ACCRUE_WEBHOOK_RETRY_FOR (72h) in all; then it is marked FAILED. ACCRUE_WEBHOOK_ALLOW_PRIVATE=1
 * allows private, loopback and link-local addresses (local use and tests only). Each endpoint
 * gets at most ACCRUE_WEBHOOK_ENDPOINT_CONCURRENCY (8) requests at a time from each worker
 * process; the dispatcher's own first attempt of a delivery gets ACCRUE_WEBHOOK_FIRST_ATTEMPT_TIMEOUT
 * (2s) in all — waiting for a place in its endpoint's budget, then for the answer — before the
 * delivery goes to its retry workflow.
 */
export interface WebhookSettings {
  retryInitialMs: number;
  retryMaxIntervalMs: number;
  retryForMs: number;
  allowPrivate: boolean;
  endpointConcurrency: number;
  firstAttemptTimeoutMs: number;
}

export const DEFAULT_WEBHOOK_SETTINGS: WebhookSettings = {
  retryInitialMs: 10_000, retryMaxIntervalMs: 3_600_000, retryForMs: 72 * 3_600_000, allowPrivate: false, endpointConcurrency: 8, firstAttemptTimeoutMs: 2_000,
};

export function loadWebhookSettings(env: NodeJS.ProcessEnv = process.env): WebhookSettings {
  const s = {
    retryInitialMs: parseDurationMs(env.ACCRUE_WEBHOOK_RETRY_INITIAL ?? '10s', 'ACCRUE_WEBHOOK_RETRY_INITIAL'),
    retryMaxIntervalMs: parseDurationMs(env.ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL ?? '1h', 'ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL'),
    retryForMs: parseDurationMs(env.ACCRUE_WEBHOOK_RETRY_FOR ?? '72h', 'ACCRUE_WEBHOOK_RETRY_FOR'),
    allowPrivate: env.ACCRUE_WEBHOOK_ALLOW_PRIVATE === '1',
    endpointConcurrency: Number(env.ACCRUE_WEBHOOK_ENDPOINT_CONCURRENCY ?? 8),
    firstAttemptTimeoutMs: parseDurationMs(env.ACCRUE_WEBHOOK_FIRST_ATTEMPT_TIMEOUT ?? '2s', 'ACCRUE_WEBHOOK_FIRST_ATTEMPT_TIMEOUT'),
  };
  if (s.retryInitialMs <= 0 || s.retryMaxIntervalMs < s.retryInitialMs) throw new Error('ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL must be at least ACCRUE_WEBHOOK_RETRY_INITIAL, and both positive');
  if (!Number.isInteger(s.endpointConcurrency) || s.endpointConcurrency < 1 || s.endpointConcurrency > 1000) throw new Error(`ACCRUE_WEBHOOK_ENDPOINT_CONCURRENCY must be an integer from 1 to 1000: ${env.ACCRUE_WEBHOOK_ENDPOINT_CONCURRENCY}`);
  if (s.firstAttemptTimeoutMs <= 0) throw new Error('ACCRUE_WEBHOOK_FIRST_ATTEMPT_TIMEOUT must be positive');
  return s;
}

/**
 * Operator defaults for the contract lifecycle. Workflows never read the environment:
 * activities get these from the worker and hand them to workflows in their results (history).
 */
export interface LifecycleSettings {
  /** ACCRUE_APPROVAL_POLICY: default for contracts without approval_policy (ALWAYS). */
  approvalPolicy: ApprovalPolicy;
  /** ACCRUE_APPROVAL_CHANGE_PCT: also ask for approval when the total moved more than this % from the previous period. */
  approvalChangePct?: string;
  /** ACCRUE_APPROVAL_REMINDER: how often finance is reminded of an invoice waiting for approval (24h). */
  approvalReminderMs: number;
  /** ACCRUE_FINANCE_EMAIL: where approval reminders and renewal notices for finance go (none: not sent). */
  financeEmail?: string;
  /** ACCRUE_TRIAL_REMINDER_DAYS: the trial reminder goes this many days before the trial ends (3). */
  trialReminderDays: number;
}

export const DEFAULT_LIFECYCLE_SETTINGS: LifecycleSettings = { approvalPolicy: { mode: 'ALWAYS' }, approvalReminderMs: 86_400_000, trialReminderDays: 3 };

export function loadLifecycleSettings(env: NodeJS.ProcessEnv = process.env): LifecycleSettings {
  const pct = env.ACCRUE_APPROVAL_CHANGE_PCT?.trim();
  if (pct && !/^\d+(\.\d+)?$/.test(pct)) throw new Error(`ACCRUE_APPROVAL_CHANGE_PCT must be a non-negative percentage like 25 or 12.5: ${JSON.stringify(pct)}`);
  const days = env.ACCRUE_TRIAL_REMINDER_DAYS?.trim();
  if (days && !/^\d+$/.test(days)) throw new Error(`ACCRUE_TRIAL_REMINDER_DAYS must be a whole number of days: ${JSON.stringify(days)}`);
  return {
    approvalPolicy: parseApprovalPolicyEnv(env.ACCRUE_APPROVAL_POLICY),
    ...(pct ? { approvalChangePct: pct } : {}),
    approvalReminderMs: parseDurationMs(env.ACCRUE_APPROVAL_REMINDER ?? '24h', 'ACCRUE_APPROVAL_REMINDER'),
    ...(env.ACCRUE_FINANCE_EMAIL ? { financeEmail: env.ACCRUE_FINANCE_EMAIL } : {}),
    trialReminderDays: days ? Number(days) : 3,
  };
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new Error(`${name} is not set (npm start sets it for the embedded stack)`);
  return v;
}

/** Process configuration from the environment; API and worker processes read only this. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = Number(env.PORT ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number: ${env.PORT}`);
  const ingestMaxAgeMs = parseDurationMs(env.ACCRUE_INGEST_MAX_AGE ?? '34d', 'ACCRUE_INGEST_MAX_AGE');
  const minRetentionMs = ingestMaxAgeMs + 2 * 86_400_000;
  const eventRetentionMs = env.ACCRUE_EVENT_RETENTION ? parseDurationMs(env.ACCRUE_EVENT_RETENTION, 'ACCRUE_EVENT_RETENTION') : minRetentionMs;
  if (eventRetentionMs < minRetentionMs) {
    throw new Error(`ACCRUE_EVENT_RETENTION must be at least the ingest window plus 2 days (${minRetentionMs / 86_400_000}d): ${env.ACCRUE_EVENT_RETENTION}`);
  }
  return {
    databaseUrl: required(env, 'DATABASE_URL'),
    temporalAddress: required(env, 'TEMPORAL_ADDRESS'),
    temporalNamespace: env.TEMPORAL_NAMESPACE ?? 'default',
    taskQueue: env.ACCRUE_TASK_QUEUE ?? 'accrue',
    smtpUrl: required(env, 'SMTP_URL'),
    mailFrom: env.ACCRUE_MAIL_FROM ?? 'Accrue Billing <billing@accrue.local>',
    port,
    adminToken: env.ACCRUE_ADMIN_TOKEN || undefined,
    invoiceGracePeriodMs: parseDurationMs(env.ACCRUE_INVOICE_GRACE_PERIOD ?? '24h', 'ACCRUE_INVOICE_GRACE_PERIOD'),
    ingestMaxAgeMs,
    eventRetentionMs,
    ratingIntervalMs: parseDurationMs(env.ACCRUE_RATING_INTERVAL ?? '250ms', 'ACCRUE_RATING_INTERVAL'),
    dataDir: env.ACCRUE_DATA_DIR ?? join(ROOT, '.data'),
    lifecycle: loadLifecycleSettings(env),
    webhooks: loadWebhookSettings(env),
    stripe: loadStripeSettings(env),
    hubspot: loadHubSpotSettings(env),
    console: loadConsoleSettings(env),
  };
}
