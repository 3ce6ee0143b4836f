import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import type { Client } from '../operations/workflow-client.js';
import type pg from 'pg';
import { allow, authenticate, type TokenCache } from './auth.js';
import { AccrueError, UnsupportedMediaTypeError, ValidationError } from '../billing/errors.js';
import { errorHandler, notFound } from './errors.js';
import { checkJsonDepth, checkRequestStrings, MAX_JSON_DEPTH } from './body-checks.js';
import { alertsRouter } from './routes/alerts.js';
import { entitlementsRouter } from './routes/entitlements.js';
import type { EntitlementsCache } from './entitlements-cache.js';
import { approvalsRouter } from './routes/approvals.js';
import { billableMetricsRouter } from './routes/billable-metrics.js';
import { balancesRouter } from './routes/balances.js';
import { contractChangesRouter } from './routes/contract-changes.js';
import { contractLifecycleRouter } from './routes/contract-lifecycle.js';
import { invoicePaymentsRouter } from './routes/invoice-payments.js';
import { contractReadsRouter } from './routes/contract-reads.js';
import { contractsRouter } from './routes/contracts.js';
import { customersRouter } from './routes/customers.js';
import { ingestRouter } from './routes/ingest.js';
import { invoicesRouter } from './routes/invoices.js';
import { pricingRouter } from './routes/pricing.js';
import { productsRouter } from './routes/products.js';
import { tokensRouter } from './routes/tokens.js';
import { usageRouter } from './routes/usage.js';
import { usageCollectorsRouter } from './routes/usage-collectors.js';
import { webhookEndpointsRouter } from './routes/webhook-endpoints.js';
import { metricsCache } from './metrics-cache.js';
import { DEFAULT_LIFECYCLE_SETTINGS, loadConsoleSettings, type ConsoleSettings, type HubSpotSettings, type LifecycleSettings, type StripeSettings } from '../stack/config.js';
import { billingConfigRouter, stripeWebhooksRouter } from './routes/stripe.js';
import { hubspotWebhooksRouter } from './routes/hubspot.js';
import { consolePublicRouter, consoleRouter, dashboardsRouter } from './routes/console.js';

export interface ApiDeps {
  orm: MikroORM;
  /** Entitlements from memory (api/entitlements-cache.ts), started by the caller. */
  entitlements: EntitlementsCache;
  temporal: Client;
  taskQueue: string;
  adminToken?: string;
  ingestMaxAgeMs: number;
  /** A plain pg pool for the ingest hot path (bound parameters, no ORM layer). */
  ingestPool: pg.Pool;
  /** Operator defaults (ACCRUE_APPROVAL_POLICY …): the approval queue applies the same policy the worker does. */
  lifecycle?: LifecycleSettings;
  /** Scopes of recently seen tokens, shared with the entitlements fast path (api/fast-path.ts). */
  tokenCache?: TokenCache;
  /** ACCRUE_WEBHOOK_ALLOW_PRIVATE: webhook URLs may point at private addresses (local use, tests). */
  webhooksAllowPrivate?: boolean;
  /** Stripe (off without a secret key): billing configs and inbound webhooks. */
  stripe?: StripeSettings;
  /** HubSpot (off without an access token): inbound deal webhooks. */
  hubspot?: HubSpotSettings;
  /** The web console: session and dashboard URL lifetimes, the Temporal UI link. */
  console?: ConsoleSettings;
}

/**
 * Keeps numbers exactly as sent: a JSON number that a JS double cannot hold exactly (e.g. 18
 * significant digits) becomes its decimal string, which every decimal consumer accepts.
 */
function exactNumbers(this: unknown, _key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value === 'number' && context?.source !== undefined && String(value) !== context.source) {
    const src = context.source;
    if (Number(src) !== value || !/^-?\d+$/.test(src) || !Number.isSafeInteger(value)) return src;
  }
  return value;
}

const EXACT_SOURCE = Symbol('exactNumbersSource');
const STRINGS_SAFE = Symbol('stringsSafe');
type RawJson = { [EXACT_SOURCE]?: string; [STRINGS_SAFE]?: boolean };
/**
 * A number literal in a value position: after `:`, `[`, `,` or at the start, and followed by `,`,
 * `}`, `]` or the end (so the digits of a timestamp string do not count). A string's content may
 * still match: then the slow path runs, still right.
 */
const NUMBER_LITERAL = /(?:^|[:[,])\s*(-?\d[\d.eE+-]*)\s*(?=[,}\]]|$)/g;
/** Whether some number in this JSON text would not survive JSON.parse as written (exactNumbers keeps those as strings). */
export function needsExactNumbers(text: string): boolean {
  NUMBER_LITERAL.lastIndex = 0;
  for (let m = NUMBER_LITERAL.exec(text); m; m = NUMBER_LITERAL.exec(text)) if (String(Number(m[1])) !== m[1]) return true;
  return false;
}
/** Whether this JSON text could parse to a string PostgreSQL cannot store: only \u escapes make a NUL or a lone surrogate. */
const UNSTORABLE_ESCAPE = /\\u(?:0000|[dD][89abcdefABCDEF])/;
export const mayHoldUnstorable = (text: string) => UNSTORABLE_ESCAPE.test(text) || text.includes('\0');

/** A JSON media type (what the parsers below read): `application/json` or `application/<anything>+json`. */
const JSON_MEDIA_TYPE = /^\s*application\/(?:json|[^;\s]*\+json)\s*(?:;|$)/i;
const CHARSET_PARAM = /;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/i;

/**
 * JSON is UTF-8 (RFC 8259 §8.1): a JSON body declared in any other charset (utf-16, utf-32, utf-7,
 * latin1 …) is a 415 naming it, before a byte is read. Body-parser would decode some of them, and
 * the raw-body checks above (exact numbers, storable strings) read bytes as UTF-8 only.
 */
export const requireUtf8Json: RequestHandler = (req, _res, next) => {
  const type = req.headers['content-type'];
  if (type === undefined || !JSON_MEDIA_TYPE.test(type)) return next();
  const m = CHARSET_PARAM.exec(type);
  if (!m) return next();
  const charset = (m[1] ?? m[2] ?? '').trim();
  if (charset.toLowerCase() === 'utf-8') return next();
  next(new UnsupportedMediaTypeError('content-type', `charset "${charset}" is not supported: JSON bodies must be UTF-8`));
};

/** Body-parser types errors.ts answers itself (malformed JSON, 413, 415). */
const ANSWERED = new Set(['entity.parse.failed', 'entity.too.large', 'encoding.unsupported', 'charset.unsupported']);

/**
 * Client errors raised below Accrue's code become 400s naming what was wrong, before errors.ts
 * (which answers anything it does not know with a 500, and the SDK retries 5xx forever):
 * nesting that overflows the JSON reviver (a RangeError, "Maximum call stack size exceeded",
 * reported as the limit it breaks), a corrupt or truncated gzip/deflate/br body (a zlib error),
 * a path that does not URL-decode, and any other 4xx that body-parser or the router raises.
 */
const clientErrors: ErrorRequestHandler = (err, req, _res, next) => {
  const e = err as { type?: string; status?: number; message?: string; errno?: unknown; code?: unknown };
  if (err instanceof AccrueError || e?.status !== 400) return next(err);
  if (e.type === 'entity.parse.failed' && err instanceof RangeError) return next(new ValidationError('body', `is nested deeper than ${MAX_JSON_DEPTH} levels`));
  if (ANSWERED.has(e.type!)) return next(err);
  if (err instanceof URIError) return next(new ValidationError('path', `is not URL-encoded correctly (${req.path})`));
  if (typeof e.errno === 'number' && typeof e.code === 'string') { // zlib's errors (Z_DATA_ERROR, Z_BUF_ERROR, brotli's)
    return next(new ValidationError('body', `is not valid ${req.headers['content-encoding'] ?? 'compressed'} data (${e.message})`));
  }
  next(new ValidationError('body', String(e.message)));
};

export function createApp(deps: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  // Server-Timing: how long Accrue took to answer (`app;dur=<ms>`), so a client can tell our time from the network's.
  app.use((_req, res, next) => {
    const t0 = performance.now();
    const writeHead = res.writeHead;
    res.writeHead = function (this: typeof res, ...args: Parameters<typeof writeHead>) {
      if (!this.headersSent) this.setHeader('server-timing', `app;dur=${(performance.now() - t0).toFixed(2)}`);
      return writeHead.apply(this, args);
    } as typeof res.writeHead;
    next();
  });

  app.use(requireUtf8Json);

  app.get('/health', async (_req, res) => {
    const checks = await Promise.allSettled([
      // Events the rater quarantined (db/quarantine.ts), and customers whose alert evaluation is
      // quarantined (db/alerts.ts): everything else goes on, but someone should look.
      deps.orm.em.fork().execute<{ n: string; customers: string }[]>(
        'select (select count(*) from event_quarantine)::text as n, (select count(distinct customer_id) from alert_quarantine)::text as customers'),
      deps.temporal.connection.withDeadline(Date.now() + 3000, () => deps.temporal.connection.workflowService.getSystemInfo({})),
    ]);
    const [postgres, temporal] = checks.map((c) => (c.status === 'fulfilled' ? 'ok' : String((c as PromiseRejectedResult).reason)));
    const healthy = checks.every((c) => c.status === 'fulfilled');
    const counts = checks[0]!.status === 'fulfilled' ? (checks[0]!.value as { n: string; customers: string }[])[0]! : null;
    res.status(healthy ? 200 : 503).json({
      status: healthy ? 'ok' : 'unavailable', postgres, temporal,
      quarantined_events: counts ? Number(counts.n) : null, quarantined_alert_customers: counts ? Number(counts.customers) : null,
    });
  });

  // Signed by Stripe, not by an Accrue token; verified on the raw body, so before the JSON parser.
  app.use(stripeWebhooksRouter(deps.orm, deps.temporal, deps.taskQueue, deps.stripe));
  // Signed by HubSpot (v3 signature over the raw body), likewise before the JSON parser and auth.
  app.use(hubspotWebhooksRouter(deps.temporal, deps.taskQueue, deps.hubspot));
  // The console's pages, its login and the customer dashboards' data (signed URLs): no Accrue token.
  const consoleSettings = deps.console ?? loadConsoleSettings({});
  app.use(consolePublicRouter(deps.orm, consoleSettings, deps.adminToken));
  // The raw body decides what parsing needs (verify runs on it just before JSON.parse): the exact
  // number reviver (about 7 µs per ingested event) only when a number literal is not written as a
  // double prints it, and the per-string storability check only when an escape could produce a
  // NUL or an unpaired surrogate (no raw UTF-8 can).
  app.use(express.json({
    limit: '1mb', strict: false, type: ['application/json', 'application/*+json'],
    verify: (req, _res, buf, encoding) => {
      const text = buf.toString((encoding || 'utf8') as BufferEncoding);
      const r = req as RawJson;
      if (needsExactNumbers(text)) r[EXACT_SOURCE] = text;
      r[STRINGS_SAFE] = !mayHoldUnstorable(text);
    },
  }));
  app.use((req, _res, next) => {
    const r = req as unknown as RawJson;
    if (r[EXACT_SOURCE] !== undefined) {
      try {
        req.body = JSON.parse(r[EXACT_SOURCE], exactNumbers as (key: string, value: unknown) => unknown);
      } catch (err) {
        // The reviver recurses: nesting far past the limit overflows the stack (a plain parse did not).
        if (err instanceof RangeError) throw new ValidationError('body', `is nested deeper than ${MAX_JSON_DEPTH} levels`);
        throw err;
      }
    }
    if (r[STRINGS_SAFE]) checkJsonDepth(req.body);
    else checkRequestStrings(req.body);
    checkRequestStrings(req.query);
    next();
  });
  app.use(authenticate(deps.orm, deps.adminToken, deps.tokenCache));
  // The products' hot path first: access checks answered from memory.
  app.use(entitlementsRouter(deps.entitlements));
  app.use(tokensRouter(deps.orm));
  app.use(customersRouter(deps.orm));
  app.use(billableMetricsRouter(deps.orm, deps.temporal, deps.taskQueue));
  const metrics = metricsCache(deps.orm);
  app.use(ingestRouter(deps.ingestPool, metrics, { maxAgeMs: deps.ingestMaxAgeMs }));
  app.use(usageRouter(deps.orm, metrics));
  app.use(usageCollectorsRouter(deps.orm, deps.temporal, deps.taskQueue, { ingestMaxAgeMs: deps.ingestMaxAgeMs }));
  app.use(productsRouter(deps.orm));
  app.use(pricingRouter(deps.orm));
  app.use(contractsRouter(deps.orm, deps.temporal, deps.taskQueue, deps.stripe));
  app.use(contractReadsRouter(deps.orm));
  app.use(contractLifecycleRouter(deps.orm));
  app.use(contractChangesRouter(deps.orm, deps.temporal, deps.taskQueue));
  app.use(balancesRouter(deps.orm));
  app.use(invoicesRouter(deps.orm, deps.temporal, deps.taskQueue));
  app.use(invoicePaymentsRouter(deps.orm, deps.temporal, deps.stripe));
  app.use(billingConfigRouter(deps.orm, deps.stripe));
  app.use(approvalsRouter(deps.orm, { ...DEFAULT_LIFECYCLE_SETTINGS, ...deps.lifecycle }));
  app.use(alertsRouter(deps.orm));
  app.use(webhookEndpointsRouter(deps.orm, { allowPrivate: deps.webhooksAllowPrivate ?? false }));
  app.use(consoleRouter(deps.orm, consoleSettings, { ...DEFAULT_LIFECYCLE_SETTINGS, ...deps.lifecycle }));
  app.use(dashboardsRouter(deps.orm, consoleSettings));
  app.use(allow('read'), notFound);
  app.use(clientErrors, errorHandler);
  return app;
}
