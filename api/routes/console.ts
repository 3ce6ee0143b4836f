import { existsSync } from 'node:fs';
import { join } from 'node:path';
import express, { Router, type Request, type Response } from 'express';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import { AccrueError, ForbiddenError, NotFoundError, UnauthorizedError, ValidationError } from '../../billing/errors.js';
import { dec, jsonDecimal, USD_CENTS, type Dec } from '../../billing/money.js';
import { UUID_RE } from '../../db/ids.js';
import { alertsForCustomer, customerAlertStates } from '../../db/alerts.js';
import { pendingApprovals } from '../../db/approvals.js';
import { customerBalances } from '../../db/balances.js';
import { createConsoleSession, dashboardSecret, endConsoleSession } from '../../db/console.js';
import { crmFacts } from '../../db/crm.js';
import { findCustomer } from '../../db/customers.js';
import { BillableMetric, Contract, Customer, Invoice, Product } from '../../db/entities.js';
import { customerDrafts, preloadDrafts } from '../../db/invoices.js';
import { lifecycleStates } from '../../db/lifecycle.js';
import { findTokenScope, sameSecret } from '../../db/tokens.js';
import { usageSeries, windowStarts, type WindowSize } from '../../db/usage-series.js';
import { ROOT, type ConsoleSettings, type LifecycleSettings } from '../../stack/config.js';
import { contractWorkflowId } from '../../operations/workflow-ids.js';
import { allow } from '../auth.js';
import { ConsoleFeed } from '../console-feed.js';
import { DASHBOARDS, signDashboard, verifyDashboard } from '../dashboard-tokens.js';
import { objectAt, oneOf, reqStr, reqUuid, stringRecord, type Obj } from '../../operations/input/validate.js';

const DAY_MS = 86_400_000;
/** Customers whose drafts the revenue page prices together (one preload each). */
const DRAFT_BATCH = 500;
const DASHBOARD_OPTIONS = ['show_zero_usage_line_items', 'contract_id', 'invoice_type', 'invoice_status_filter', 'hide_voided_invoices', 'billable_status_filter', 'hide_grant_name', 'credit_ledger_credit_type_id'];
const COLOR_NAMES = ['Gray_dark', 'Gray_medium', 'Gray_light', 'Gray_extralight', 'White', 'Primary_medium', 'Primary_light', 'UsageLine_0', 'UsageLine_1', 'UsageLine_2', 'UsageLine_3', 'UsageLine_4', 'UsageLine_5', 'UsageLine_6', 'UsageLine_7', 'UsageLine_8', 'UsageLine_9', 'Primary_green', 'Primary_red', 'Progress_bar', 'Progress_bar_background', 'Action', 'Action_hover'];

/** Revenue is kept apart by credit type and product (by id; lines without one by their type). */
function revenueKey(creditType: string, l: { product_id?: string; name: string; type: string }): string {
  return JSON.stringify([creditType, l.product_id ?? '', l.product_id ? l.name : l.type]);
}

/** Temporal Web UI link of a contract's workflow. */
function workflowUrl(settings: ConsoleSettings, contractId: string): string | null {
  return settings.temporalUiUrl ? `${settings.temporalUiUrl}/namespaces/${encodeURIComponent(settings.temporalNamespace)}/workflows/${encodeURIComponent(contractWorkflowId(contractId))}` : null;
}

const cents = (d: Dec | string | null | undefined) => (d === null || d === undefined ? null : jsonDecimal(dec(d).toFixed()));

/**
 * Usage over time for a customer: every metric with usage in [from, to), per group of its first
 * group key (if any), per hour or day — the same aggregates invoices read.
 */
async function usageChart(em: EntityManager, customerId: string, from: string, to: string, window: Exclude<WindowSize, 'NONE'>, onlyMetricIds?: string[]) {
  const ids = onlyMetricIds ?? (await em.execute<{ metric_id: string }[]>(
    'select distinct metric_id::text as metric_id from usage_daily where customer_id = ? and day >= ? and day < ?',
    [customerId, new Date(Date.parse(from) - DAY_MS), to])).map((r) => r.metric_id);
  const metrics = ids.length ? await em.find(BillableMetric, { id: { $in: ids } }, { orderBy: { name: 'asc' } }) : [];
  return Promise.all(metrics.map(async (m) => {
    const groupKeys = m.groupKeys[0]?.length ? [m.groupKeys[0][0]!] : [];
    const rows = await usageSeries(em, m, { customerIds: [customerId], from, to, window, groupKeys });
    const groups = new Map<string, { group: Record<string, string | null> | null; points: [string, string | null][] }>();
    for (const r of rows) {
      const key = JSON.stringify(r.group ?? {});
      (groups.get(key) ?? groups.set(key, { group: r.group, points: [] }).get(key)!).points.push([r.windowStart, r.value]);
    }
    // Every window of the range, 0 where nothing was measured: the chart's time axis is the range.
    const size = window === 'DAY' ? DAY_MS : 3_600_000;
    const starts = windowStarts(new Date(Math.floor(Date.parse(from) / size) * size).toISOString(), to, window);
    const filled = [...groups.values()].map((g) => {
      const at = new Map(g.points);
      return { group: g.group, points: starts.map((w) => [w, at.get(w) ?? '0'] as [string, string | null]) };
    });
    return { metric_id: m.id, name: m.name, group_key: groupKeys[0] ?? null, groups: filled };
  }));
}

/**
 * What a customer's dashboard shows: usage over time, the current draft invoice, commits and
 * credits with their burn-down and the projected day they run out, and the alerts in effect.
 */
async function dashboardData(em: EntityManager, customerId: string, window: Exclude<WindowSize, 'NONE'>) {
  const now = new Date();
  const t = now.getTime();
  const customer = await findCustomer(em, customerId);
  const drafts = await customerDrafts(em, customerId, now);
  const current = drafts.filter((d) => Date.parse(d.view.periodStart) <= t && t < Date.parse(d.view.periodEnd));
  const from = window === 'HOUR'
    ? new Date(Math.floor(t / 3_600_000) * 3_600_000 - 47 * 3_600_000).toISOString()
    : new Date(Math.floor(t / DAY_MS) * DAY_MS - 29 * DAY_MS).toISOString();
  const to = new Date(Math.floor(t / 3_600_000) * 3_600_000 + 3_600_000).toISOString();
  const usage = await usageChart(em, customerId, from, to, window);
  const balances = await customerBalances(em, customerId, { now, drafts });
  const periodStart = current.length ? Math.min(...current.map((d) => Date.parse(d.view.periodStart))) : t;
  const drawnThisPeriod = new Map<string, Dec>();
  for (const d of current) for (const x of d.inv.drawdowns) drawnThisPeriod.set(x.grantId, (drawnThisPeriod.get(x.grantId) ?? dec(0)).plus(x.amount));
  const alerts = await alertsForCustomer(em, customerId);
  const states = await customerAlertStates(em, customerId, alerts.map((a) => a.id));
  return {
    customer: { id: customer.id, name: customer.name },
    generated_at: now.toISOString(),
    usage: { window, from, to, metrics: usage },
    draft: current.map((d) => ({
      invoice_id: d.view.id, start_timestamp: d.view.periodStart, end_timestamp: d.view.periodEnd, total: cents(d.view.total),
      lines: d.view.lines.filter((l) => !dec(l.total).isZero() || l.type === 'usage').map((l) => ({ name: l.name, type: l.type, quantity: l.quantity ?? null, unit_price: l.unit_price ?? null, total: cents(l.total) })),
    })),
    balances: balances.filter((b) => b.segments.some((s) => s.startingAt <= t && t < s.endingBefore)).map((b) => {
      const remaining = b.balance;
      const drawn = drawnThisPeriod.get(b.grant.id) ?? dec(0);
      const elapsedDays = Math.max((t - periodStart) / DAY_MS, 1 / 24);
      // The rate this period has drawn at, carried forward: the day the balance reaches zero.
      const perDay = drawn.div(elapsedDays);
      const expires = Math.max(...b.segments.filter((x) => x.startingAt <= t && t < x.endingBefore).map((x) => x.endingBefore));
      const at = perDay.gt(0) && remaining.gt(0) ? t + Math.round(remaining.div(perDay).toNumber() * DAY_MS) : null;
      // Running out after it expires is not running out: it lasts until it expires.
      const runsOut = at !== null && at < expires ? new Date(at).toISOString() : null;
      return {
        id: b.grant.id, name: b.grant.name ?? (b.grant.kind === 'CREDIT' ? 'Credit' : 'Commit'), type: b.grant.kind,
        remaining: cents(remaining), drawn_this_period: cents(drawn), period_start: new Date(periodStart).toISOString(),
        burn: [[new Date(periodStart).toISOString(), cents(remaining.plus(drawn))], [now.toISOString(), cents(remaining)]],
        projected_run_out: runsOut, expires_at: Number.isFinite(expires) ? new Date(expires).toISOString() : null,
      };
    }),
    alerts: alerts.map((a) => ({ id: a.id, name: a.name, type: a.type, threshold: jsonDecimal(a.threshold), status: states.get(a.id)?.status ?? 'evaluating' })),
  };
}

/** A cheap fingerprint of what the dashboard shows: it changes when usage is rated or an invoice moves. */
async function dashboardFingerprint(em: EntityManager, customerId: string): Promise<string> {
  const [r] = await em.execute<{ f: string }[]>(`
    select concat_ws('|',
      (select max(rated_at)::text from usage_daily where customer_id = ?),
      (select count(*)::text from usage_daily where customer_id = ?),
      (select max(coalesce(finalized_at, frozen_at))::text from invoice where customer_id = ?),
      (select max(created_at)::text from balance_grant where customer_id = ?)) as f`, [customerId, customerId, customerId, customerId]);
  return r?.f ?? '';
}

/** Open streams per dashboard URL or console session: more are refused (429). */
const MAX_STREAMS_PER_HOLDER = 20;
const holders = new Map<string, number>();

/**
 * A server-sent event stream: `ready`, then `changed` whenever `fingerprint` answers something new
 * (asked once a second: one small indexed query per open page), a comment line otherwise to keep
 * the connection alive, and `expired` (then the end) at `expiresAt`. It ends when the client goes:
 * the close listener is set before anything is awaited, and every write checks it.
 */
async function streamChanges(req: Request, res: Response, opts: { holder: string; fingerprint: () => Promise<string>; expiresAt: number }): Promise<void> {
  const open = holders.get(opts.holder) ?? 0;
  if (open >= MAX_STREAMS_PER_HOLDER) throw new TooManyStreams();
  holders.set(opts.holder, open + 1);
  let closed = false;
  res.on('close', () => {
    closed = true;
  });
  try {
    let last = await opts.fingerprint();
    if (closed) return;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write('event: ready\ndata: {}\n\n');
    while (!closed && !res.destroyed) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (closed || res.destroyed) break;
      if (Date.now() >= opts.expiresAt) {
        res.write('event: expired\ndata: {}\n\n');
        break;
      }
      try {
        const now = await opts.fingerprint();
        if (now !== last) {
          last = now;
          res.write(`event: changed\ndata: ${JSON.stringify({ at: new Date().toISOString() })}\n\n`);
        } else res.write(': keep-alive\n\n');
      } catch {
        // PostgreSQL briefly away: try again next second
      }
    }
  } finally {
    const n = (holders.get(opts.holder) ?? 1) - 1;
    if (n > 0) holders.set(opts.holder, n);
    else holders.delete(opts.holder);
    if (res.headersSent && !res.writableEnded) res.end();
  }
  void req;
}

/**
 * A server-sent event stream driven by the process's shared change feed: `ready` once the feed
 * listens (so a change committed after it is always told), then `changed` after every change the
 * feed reports (no query per page), `ready` again whenever the feed's connection was lost and made
 * again (changes may have gone by unheard: the page reads everything again), a comment line at
 * once and every 15 s to keep the connection alive, and `expired` (then the end) at `expiresAt`.
 */
async function streamFeed(res: Response, opts: { holder: string; feed: ConsoleFeed; expiresAt: number }): Promise<void> {
  const open = holders.get(opts.holder) ?? 0;
  if (open >= MAX_STREAMS_PER_HOLDER) throw new TooManyStreams();
  holders.set(opts.holder, open + 1);
  let unsubscribe = () => {};
  const timers: NodeJS.Timeout[] = [];
  try {
    await new Promise<void>((resolve) => {
      res.on('close', () => resolve());
      if (res.destroyed) return resolve();
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      // The stream is open at once, even while the feed is (re)connecting: `ready` follows.
      res.write(': open\n\n');
      const write = (chunk: string) => {
        if (!res.destroyed && !res.writableEnded) res.write(chunk);
      };
      unsubscribe = opts.feed.subscribe({
        ready: () => write('event: ready\ndata: {}\n\n'),
        changed: () => write(`event: changed\ndata: ${JSON.stringify({ at: new Date().toISOString() })}\n\n`),
      });
      timers.push(setInterval(() => write(': keep-alive\n\n'), 15_000));
      timers.push(setTimeout(() => {
        write('event: expired\ndata: {}\n\n');
        resolve();
      }, Math.max(0, opts.expiresAt - Date.now())));
    });
  } finally {
    unsubscribe();
    for (const t of timers) clearTimeout(t);
    const n = (holders.get(opts.holder) ?? 1) - 1;
    if (n > 0) holders.set(opts.holder, n);
    else holders.delete(opts.holder);
    if (res.headersSent && !res.writableEnded) res.end();
  }
}

class TooManySessions extends AccrueError {
  readonly status = 429;
  readonly code = 'too_many_requests';
  constructor(limit: number) {
    super(`token: already holds ${limit} open console sessions, the most one token may hold (ACCRUE_CONSOLE_MAX_SESSIONS); log out of one (POST /v1/accrue/console/sessions/end) or wait until one expires`);
  }
}

class TooManyStreams extends AccrueError {
  readonly status = 429;
  readonly code = 'too_many_requests';
  constructor() {
    super('too many live connections for this dashboard URL or session; close some pages');
  }
}

function windowOf(req: Request): Exclude<WindowSize, 'NONE'> {
  const w = String(req.query.window ?? 'HOUR').toUpperCase();
  if (w !== 'HOUR' && w !== 'DAY') throw new ValidationError('window', `must be HOUR or DAY, got ${JSON.stringify(req.query.window)}`);
  return w;
}

/**
 * The console's API (finance pages, customer dashboards) and the pages themselves, served from
 * the build (`dist/console`, bundled by esbuild at build time: no CDN, no second server).
 *
 * - `POST /v1/accrue/console/sessions {token}` logs in with an Accrue token (admin, finance or
 *   read; not ingest) and answers a session token that expires (ACCRUE_CONSOLE_SESSION_TTL);
 *   the page sends it as its bearer token, so every API rule (scopes) applies to the console too.
 * - `GET /v1/accrue/console/queue|customers|revenue`, `GET …/console/invoices/{id}/usage`.
 * - `POST /v1/dashboards/getEmbeddableUrl` (Metronome's): a signed, time-limited URL of
 *   `/console/embed/{dashboard}`; its data (`GET /v1/accrue/embed/data`) and live updates
 *   (`GET /v1/accrue/embed/events`, server-sent events) answer only for the URL's customer.
 */
export function consolePublicRouter(orm: MikroORM, settings: ConsoleSettings, adminToken: string | undefined): Router {
  const r = Router();
  const secret = () => dashboardSecret(orm.em.fork());

  r.post('/v1/accrue/console/sessions', express.json({ limit: '16kb' }), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['token']);
    const token = reqStr(body, 'token', '', 512);
    const operator = !!adminToken && sameSecret(token, adminToken);
    const scope = operator ? 'admin' : await findTokenScope(orm.em.fork(), token);
    if (!scope) throw new UnauthorizedError('token: unknown or revoked');
    if (scope === 'ingest') throw new ForbiddenError('token: an ingest token cannot open the console (use a finance, read or admin token)');
    // Finance's console: an admin token logs in with finance scope; revoking the token ends its sessions.
    const session = await createConsoleSession(orm.em.fork(), scope, operator ? null : token, settings.sessionTtlMs, settings.maxSessionsPerToken);
    if ('limited' in session) throw new TooManySessions(settings.maxSessionsPerToken);
    res.status(201).json({ data: { session_token: session.token, scope: session.scope, expires_at: session.expiresAt.toISOString() } });
  });

  const claims = async (req: Request) => {
    const c = verifyDashboard(await secret(), typeof req.query.t === 'string' ? req.query.t : undefined);
    if (req.query.customer_id !== undefined && req.query.customer_id !== c.customerId) throw new ForbiddenError('customer_id: this dashboard URL is for another customer');
    return c;
  };

  /**
   * The dashboard's data — only what its kind shows: `usage` (usage over time, the draft invoice,
   * alerts), `invoices` (the draft and past invoices, `invoice_status_filter`), `credits` (credit
   * balances) or `commits_and_credits` (commit and credit balances), with alerts.
   */
  r.get('/v1/accrue/embed/data', async (req, res) => {
    const c = await claims(req);
    const em = orm.em.fork();
    const all = await dashboardData(em, c.customerId, windowOf(req));
    const zeroLines = c.options.show_zero_usage_line_items === 'true';
    const draft = all.draft.map((d) => ({ ...d, lines: d.lines.filter((l) => zeroLines || JSON.stringify(l.total) !== "0") }));
    const base = { customer: all.customer, generated_at: all.generated_at, dashboard: c.dashboard, colors: c.colors, labels: c.labels, values: c.values, expires_at: new Date(c.expiresAt).toISOString(), alerts: all.alerts };
    let body: Record<string, unknown>;
    if (c.dashboard === 'usage') body = { ...base, usage: all.usage, draft };
    else if (c.dashboard === 'invoices') {
      const filter = c.options.invoice_status_filter ?? 'FINALIZED_AND_DRAFT';
      // Every Accrue invoice is billable: unbillable ones are none. Drafts are a period's (USAGE) invoices.
      const none = c.options.billable_status_filter === 'unbillable';
      const invoiceType = c.options.invoice_type as 'USAGE' | 'SCHEDULED' | undefined;
      const hideVoid = c.options.hide_voided_invoices === 'true';
      const statuses = none ? [] : (filter === 'ALL' ? ['FINALIZED', 'VOID'] : filter === 'VOID' ? ['VOID'] : filter === 'DRAFT' ? [] : ['FINALIZED']).filter((x) => !hideVoid || x !== 'VOID');
      const invoices = statuses.length
        ? (await em.find(Invoice, { customerId: c.customerId, status: { $in: statuses as ('FINALIZED' | 'VOID')[] }, ...(c.options.contract_id ? { contractId: c.options.contract_id } : {}), ...(invoiceType ? { type: invoiceType } : {}) }, { orderBy: { periodEnd: 'desc' }, limit: 24 }))
          .map((i) => ({ id: i.id, start_timestamp: i.periodStart.toISOString(), end_timestamp: i.periodEnd.toISOString(), status: i.status, total: cents(i.total) }))
        : [];
      body = { ...base, invoices, ...(!none && invoiceType !== 'SCHEDULED' && (filter === 'ALL' || filter.includes('DRAFT')) ? { draft } : {}) };
    } else {
      const hideName = c.options.hide_grant_name === 'true';
      // Balances are in USD cents: another credit_ledger_credit_type_id has none.
      const creditType = c.options.credit_ledger_credit_type_id;
      body = { ...base, balances: all.balances.filter((b) => (!creditType || creditType === USD_CENTS.id) && (c.dashboard === 'commits_and_credits' || b.type === 'CREDIT')).map((b) => (hideName ? { ...b, name: b.type === 'CREDIT' ? 'Credit' : 'Commit' } : b)) };
    }
    res.json({ data: body });
  });

  /** Server-sent events: `changed` whenever the customer's rated usage, invoices or grants move. */
  r.get('/v1/accrue/embed/events', async (req, res) => {
    const c = await claims(req);
    await streamChanges(req, res, { holder: `url:${String(req.query.t).slice(-43)}`, fingerprint: () => dashboardFingerprint(orm.em.fork(), c.customerId), expiresAt: c.expiresAt });
  });

  // The pages: the finance console and the embeddable dashboards (built into dist/console).
  const dir = join(ROOT, 'dist', 'console');
  const page = (file: string, frameable: boolean) => (_req: Request, res: Response) => {
    if (!existsSync(join(dir, file))) throw new NotFoundError('console page', file);
    res.setHeader('content-security-policy', `default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors ${frameable ? '*' : "'none'"}`);
    if (!frameable) res.setHeader('x-frame-options', 'DENY');
    res.sendFile(join(dir, file));
  };
  r.get('/console', page('index.html', false));
  r.get('/console/embed/:dashboard', (req, res) => {
    if (!(DASHBOARDS as readonly string[]).includes(String(req.params.dashboard))) throw new NotFoundError('dashboard', String(req.params.dashboard));
    return page('embed.html', true)(req, res);
  });
  r.use('/console/assets', express.static(join(dir, 'assets'), { immutable: false, index: false, fallthrough: false }));
  return r;
}

/** The console's authenticated API (behind the usual bearer-token authentication). */
export function consoleRouter(orm: MikroORM, settings: ConsoleSettings, lifecycle: LifecycleSettings): Router {
  const r = Router();
  const feed = new ConsoleFeed(orm.config.get('clientUrl')!, { probeMs: settings.feedProbeMs });

  r.post('/v1/accrue/console/sessions/end', allow('read', 'finance'), async (req, res) => {
    const token = /^Bearer\s+(\S+)/i.exec(req.headers.authorization ?? '')?.[1];
    if (token) await endConsoleSession(orm.em.fork(), token);
    res.json({});
  });

  /** Live updates of the finance pages (server-sent events; the page reads them with its bearer token). */
  r.get('/v1/accrue/console/events', allow('read', 'finance'), async (req, res) => {
    // Ends after 5 minutes: the page reconnects, and its session is checked again.
    const bearer = /^Bearer\s+(\S+)/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
    await streamFeed(res, { holder: `session:${bearer.slice(-16)}`, feed, expiresAt: Date.now() + 300_000 });
  });

  r.get('/v1/accrue/console/me', allow('read', 'finance'), (req, res) => {
    res.json({ data: { scope: req.scope, temporal_ui_url: settings.temporalUiUrl ?? null } });
  });

  /** The approval queue with each invoice's biggest lines. */
  r.get('/v1/accrue/console/queue', allow('finance'), async (_req, res) => {
    const em = orm.em.fork();
    const rows = await pendingApprovals(em, lifecycle);
    const invoices = new Map((rows.length ? await em.find(Invoice, { id: { $in: rows.map((x) => x.invoice_id) } }) : []).map((i) => [i.id, i]));
    res.json({
      data: rows.map((row) => {
        const inv = invoices.get(row.invoice_id);
        const lines = [...(inv?.lineItems ?? [])].sort((a, b) => dec(b.total).abs().cmp(dec(a.total).abs())).slice(0, 3);
        const change = row.previous_total !== null && !dec(row.previous_total).isZero() ? dec(row.total).minus(row.previous_total).div(row.previous_total).times(100).toDecimalPlaces(1).toFixed() : null;
        return {
          invoice_id: row.invoice_id, customer_id: row.customer_id, customer_name: row.customer_name, contract_id: row.contract_id,
          start_timestamp: row.period_start, end_timestamp: row.period_end, total: cents(row.total), previous_total: cents(row.previous_total),
          change_percent: change !== null ? jsonDecimal(change) : null, approval_status: row.approval_status,
          biggest_lines: lines.map((l) => ({ name: l.name, total: cents(l.total) })),
          workflow_url: workflowUrl(settings, row.contract_id),
        };
      }),
    });
  });

  /** The usage behind an invoice: its period, per metric and group, by day (by hour for periods under 3 days). */
  r.get('/v1/accrue/console/invoices/:invoice_id/usage', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    const id = String(req.params.invoice_id);
    if (!UUID_RE.test(id)) throw new ValidationError('invoice_id', 'must be an invoice id (UUID)');
    const inv = await em.findOne(Invoice, { id: id.toLowerCase() });
    if (!inv) throw new NotFoundError('invoice', id, 'invoice_id');
    const window = inv.periodEnd.getTime() - inv.periodStart.getTime() < 3 * DAY_MS ? 'HOUR' : 'DAY';
    // The metrics the invoice's usage lines are priced on.
    const productIds = [...new Set(inv.lineItems.filter((l) => l.type === 'usage' && l.product_id).map((l) => l.product_id!))];
    const metricIds = productIds.length ? (await em.find(Product, { id: { $in: productIds } })).map((p) => p.billableMetricId).filter((m): m is string => !!m) : [];
    res.json({ data: { window, metrics: await usageChart(em, inv.customerId, inv.periodStart.toISOString(), inv.periodEnd.toISOString(), window, [...new Set(metricIds)]) } });
  });

  /**
   * Customers with lifecycle state, current-period spend, commit remaining and renewals, a page at
   * a time by name (`limit` up to 500, `next_page`), with how many there are in all; each contract
   * links to its workflow. Upcoming renewals are every customer's, not only the page's.
   */
  r.get('/v1/accrue/console/customers', allow('read', 'finance'), async (req, res) => {
    const em = orm.em.fork();
    let limit = 100;
    if (req.query.limit !== undefined) {
      limit = Number(req.query.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new ValidationError('limit', 'must be an integer from 1 to 500');
    }
    let after: [string, string] | undefined;
    if (req.query.next_page !== undefined && req.query.next_page !== '') {
      try {
        const v = JSON.parse(Buffer.from(String(req.query.next_page), 'base64url').toString('utf8')) as unknown;
        if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'string' || typeof v[1] !== 'string' || !/^[0-9a-f-]{36}$/.test(v[1])) throw new Error('bad token');
        after = [v[0], v[1]];
      } catch {
        throw new ValidationError('next_page', 'is not a page token this API returned');
      }
    }
    const customers = await em.find(Customer, { archivedAt: null, ...(after ? { $or: [{ name: { $gt: after[0] } }, { name: after[0], id: { $gt: after[1] } }] } : {}) },
      { orderBy: { name: 'asc', id: 'asc' }, limit: limit + 1 });
    const more = customers.length > limit;
    const pageCustomers = customers.slice(0, limit);
    const [counted] = await em.execute<{ n: number }[]>('select count(*)::int as n from customer where archived_at is null');
    const contracts = pageCustomers.length ? await em.find(Contract, { customerId: { $in: pageCustomers.map((c) => c.id) } }, { orderBy: { startingAt: 'desc' } }) : [];
    const states = await lifecycleStates(em, contracts);
    const now = new Date();
    const out = [];
    for (const c of pageCustomers) {
      const mine = contracts.filter((k) => k.customerId === c.id);
      // One customer whose stored terms cannot be priced is shown with its error, not a 500 for the page.
      let facts: Awaited<ReturnType<typeof crmFacts>>['company'] | null = null;
      let amounts = { spend: cents(null), remaining: cents(null) };
      let error: string | undefined;
      try {
        facts = mine.length ? (await crmFacts(em, c.id, [], now)).company : null;
        amounts = { spend: cents(facts?.currentPeriodSpendCents), remaining: cents(facts?.commitRemainingCents) };
      } catch (err) {
        if (!(err instanceof RangeError)) throw err;
        error = `its billing data cannot be computed: ${err.message}`;
        console.error(`[console] customer ${c.id}: ${error}`);
      }
      out.push({
        id: c.id, name: c.name, billing_email: c.billingEmail ?? null, ...(error ? { error } : {}),
        lifecycle_state: facts?.lifecycleState ?? null,
        current_period_spend: amounts.spend, commit_remaining: amounts.remaining,
        renewal_date: facts?.renewalDate ?? null,
        contracts: mine.map((k) => ({
          id: k.id, name: k.name, starting_at: k.startingAt.toISOString(), ending_before: k.endingBefore?.toISOString() ?? null,
          lifecycle_state: states.get(k.id)?.state ?? null, workflow_url: workflowUrl(settings, k.id),
        })),
      });
    }
    // Renewals in the next 90 days, across all customers (contracts ending then are few).
    const soon = new Date(now.getTime() + 90 * DAY_MS);
    const ending = await em.find(Contract, { archivedAt: null, endingBefore: { $gt: now, $lte: soon } }, { orderBy: { endingBefore: 'asc', id: 'asc' } });
    const endingStates = await lifecycleStates(em, ending);
    const names = new Map((ending.length ? await em.find(Customer, { id: { $in: [...new Set(ending.map((k) => k.customerId))] } }) : []).map((c) => [c.id, c]));
    const last = pageCustomers[pageCustomers.length - 1];
    res.json({
      data: out,
      total_count: counted!.n,
      next_page: more && last ? Buffer.from(JSON.stringify([last.name, last.id])).toString('base64url') : null,
      upcoming_renewals: ending.filter((k) => !['ENDED', 'ARCHIVED'].includes(endingStates.get(k.id)?.state ?? '') && names.get(k.customerId)?.archivedAt === null)
        .map((k) => ({ customer_id: k.customerId, customer_name: names.get(k.customerId)!.name, contract_id: k.id, ending_before: k.endingBefore!.toISOString() })),
    });
  });

  /**
   * Revenue by day and product over [from, to): billed (finalized invoices' lines, on the day the
   * invoice's period ends) and draft (the open periods' live drafts, on today), in cents.
   */
  r.get('/v1/accrue/console/revenue', allow('read', 'finance'), async (req, res) => {
    const day = (v: unknown, field: string) => {
      if (typeof v !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`))) throw new ValidationError(field, `must be a date (YYYY-MM-DD), got ${JSON.stringify(v)}`);
      return Date.parse(`${v}T00:00:00Z`);
    };
    const from = day(req.query.from, 'from');
    const to = day(req.query.to, 'to') + DAY_MS;
    if (to <= from) throw new ValidationError('to', 'must not be before from');
    if (to - from > 400 * DAY_MS) throw new ValidationError('to', 'the range is at most 400 days');
    const em = orm.em.fork();
    const days: string[] = [];
    for (let t = from; t < to; t += DAY_MS) days.push(new Date(t).toISOString().slice(0, 10));
    const billed = new Map<string, Map<string, Dec>>();
    const draft = new Map<string, Map<string, Dec>>();
    const add = (m: Map<string, Map<string, Dec>>, product: string, d: string, v: Dec) => {
      const p = m.get(product) ?? m.set(product, new Map()).get(product)!;
      p.set(d, (p.get(d) ?? dec(0)).plus(v));
    };
    // Billed: summed in PostgreSQL, one row per day, credit type and product (not every invoice and line).
    const sums = await em.execute<{ day: string; credit_type: string; product_id: string | null; name: string; type: string; total: string }[]>(`
      select to_char((i.period_end - interval '1 millisecond') at time zone 'UTC', 'YYYY-MM-DD') as day, i.credit_type_name as credit_type,
             l ->> 'product_id' as product_id, l ->> 'name' as name, l ->> 'type' as type, sum((l ->> 'total')::numeric)::text as total
        from invoice i cross join lateral jsonb_array_elements(i.line_items) l
       where i.status = 'FINALIZED' and i.period_end > ? and i.period_end <= ? and (l ->> 'total')::numeric <> 0
       group by 1, 2, 3, 4, 5`, [new Date(from), new Date(to)]);
    for (const x of sums) add(billed, revenueKey(x.credit_type, { ...(x.product_id ? { product_id: x.product_id } : {}), name: x.name, type: x.type }), x.day, dec(x.total));
    const now = new Date();
    const today = now.toISOString().slice(0, 10);
    if (Date.parse(`${today}T00:00:00Z`) >= from && Date.parse(`${today}T00:00:00Z`) < to) {
      // Draft: every customer with a live contract, DRAFT_BATCH at a time over one shared preload each.
      for (let afterId = '00000000-0000-0000-0000-000000000000'; ;) {
        const batch = (await em.execute<{ customer_id: string }[]>(
          `select distinct customer_id from contract where archived_at is null and customer_id > ?::uuid order by 1 limit ?`, [afterId, DRAFT_BATCH])).map((x) => String(x.customer_id));
        if (!batch.length) break;
        const preload = await preloadDrafts(em, batch, now);
        const drafts = await Promise.all(batch.map((id) => customerDrafts(em, id, now, { preload })));
        for (const dr of drafts.flat()) {
          if (Date.parse(dr.view.periodStart) > now.getTime()) continue;
          for (const l of dr.view.lines) if (!dec(l.total).isZero()) add(draft, revenueKey(dr.view.creditType.name, l), today, dec(l.total));
        }
        afterId = batch[batch.length - 1]!;
      }
    }
    const series = (m: Map<string, Map<string, Dec>>) => [...m.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, byDay]) => {
      const [creditType, product, name] = JSON.parse(key) as [string, string, string];
      return { product: name, product_id: product || null, credit_type: creditType, values: days.map((d) => cents(byDay.get(d) ?? dec(0))) };
    });
    res.json({ data: { days, billed: series(billed), draft: series(draft) } });
  });

  return r;
}

/** `v1.dashboards.getEmbeddableUrl`: a signed URL of the customer's dashboard, valid ACCRUE_DASHBOARD_URL_TTL. */
export function dashboardsRouter(orm: MikroORM, settings: ConsoleSettings): Router {
  const r = Router();
  r.post('/v1/dashboards/getEmbeddableUrl', allow('finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['customer_id', 'dashboard', 'color_overrides', 'bm_group_key_overrides', 'dashboard_options']);
    const customerId = reqUuid(body, 'customer_id');
    const dashboard = oneOf(body, 'dashboard', DASHBOARDS, '')!;
    await findCustomer(orm.em.fork(), customerId);
    const colors: Record<string, string> = {};
    const list = (key: string) => {
      const v = body[key];
      if (v === undefined || v === null) return [];
      if (!Array.isArray(v)) throw new ValidationError(key, 'must be an array');
      return v.map((x, i) => objectAt(x, `${key}[${i}]`, key === 'color_overrides' ? ['name', 'value'] : key === 'bm_group_key_overrides' ? ['group_key_name', 'display_name', 'value_display_names'] : ['key', 'value']) as Obj);
    };
    list('color_overrides').forEach((c, i) => {
      const name = reqStr(c, 'name', `color_overrides[${i}]`, 64);
      if (!COLOR_NAMES.includes(name)) throw new ValidationError(`color_overrides[${i}].name`, `must be one of ${COLOR_NAMES.join(', ')}, got ${JSON.stringify(name)}`);
      const value = reqStr(c, 'value', `color_overrides[${i}]`, 16);
      if (!/^#[0-9a-fA-F]{6}$/.test(value)) throw new ValidationError(`color_overrides[${i}].value`, `must be a hex colour like #1A2B3C, got ${JSON.stringify(value)}`);
      colors[name] = value;
    });
    const labels: Record<string, string> = {};
    const values: Record<string, Record<string, string>> = {};
    list('bm_group_key_overrides').forEach((g, i) => {
      const key = reqStr(g, 'group_key_name', `bm_group_key_overrides[${i}]`, 128);
      if (g.display_name !== undefined) labels[key] = reqStr(g, 'display_name', `bm_group_key_overrides[${i}]`, 128);
      if (g.value_display_names !== undefined) values[key] = stringRecord(g, 'value_display_names', `bm_group_key_overrides[${i}]`) ?? {};
    });
    const options: Record<string, string> = {};
    list('dashboard_options').forEach((o, i) => {
      const key = reqStr(o, 'key', `dashboard_options[${i}]`, 64);
      if (!DASHBOARD_OPTIONS.includes(key)) throw new ValidationError(`dashboard_options[${i}].key`, `must be one of ${DASHBOARD_OPTIONS.join(', ')}, got ${JSON.stringify(key)}`);
      options[key] = reqStr(o, 'value', `dashboard_options[${i}]`, 64);
    });
    const allowed: Record<string, readonly string[]> = {
      invoice_status_filter: ['VOID', 'FINALIZED', 'DRAFT', 'FINALIZED_AND_DRAFT', 'ALL'], invoice_type: ['USAGE', 'SCHEDULED'], hide_voided_invoices: ['true', 'false'],
      billable_status_filter: ['billable', 'unbillable'], show_zero_usage_line_items: ['true', 'false'], hide_grant_name: ['true', 'false'],
    };
    for (const [key, values] of Object.entries(allowed)) {
      if (options[key] !== undefined && !values.includes(options[key])) throw new ValidationError(`dashboard_options.${key}`, `must be ${values.join(', ')}, got ${JSON.stringify(options[key])}`);
    }
    for (const key of ['contract_id', 'credit_ledger_credit_type_id']) {
      if (options[key] !== undefined && !UUID_RE.test(options[key])) throw new ValidationError(`dashboard_options.${key}`, 'must be a UUID');
    }
    const secret = await dashboardSecret(orm.em.fork());
    const token = signDashboard(secret, { customerId, dashboard, expiresAt: Date.now() + settings.dashboardUrlTtlMs, colors, labels, values, options });
    const base = settings.publicUrl ?? `${req.protocol}://${req.get('host') ?? ''}`;
    res.json({ data: { url: `${base}/console/embed/${dashboard}?t=${token}` } });
  });
  return r;
}
