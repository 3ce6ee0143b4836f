import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import pg from 'pg';
import type { MikroORM } from '@mikro-orm/postgresql';
import { migrate, openOrm } from '../db/orm.js';
import { ROOT } from '../stack/config.js';
import type { CaughtMail } from '../stack/mailcatcher.js';
import { freePort, waitFor } from '../stack/net.js';
import { spawnService, stopChild } from '../stack/services.js';

/** Test helpers over the real servers started by global-setup.ts. */
export interface TestStack {
  postgresUrl: string;
  temporalAddress: string;
  smtpUrl: string;
  mailWebUrl: string;
  /** The Stripe-protocol server (localstripe) of the run: stack/stripe-server.ts. */
  stripeApiBase: string;
}

export function testStack(): TestStack {
  const raw = process.env.ACCRUE_TEST_STACK ?? readFileSync(join(ROOT, '.data', 'test-stack.json'), 'utf8');
  return JSON.parse(raw) as TestStack;
}

export const uniqueName = (prefix: string) => `${prefix}_${randomBytes(5).toString('hex')}`;

/** A fresh database with every migration applied. */
export async function createTestDatabase(prefix: string): Promise<{ url: string; orm: MikroORM }> {
  const stack = testStack();
  const name = uniqueName(`accrue_${prefix}`).toLowerCase();
  const admin = new pg.Client({ connectionString: stack.postgresUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = stack.postgresUrl.replace(/\/[^/]+$/, `/${name}`);
  const orm = await openOrm(url, { poolMax: 4 });
  await migrate(orm);
  return { url, orm };
}

export interface RunningApp {
  baseURL: string;
  adminToken: string;
  taskQueue: string;
  env: NodeJS.ProcessEnv;
  worker: ChildProcess;
  api: ChildProcess;
  startWorker(): Promise<ChildProcess>;
  stop(): Promise<void>;
}

/** Starts the real API and worker processes (from the build) against the test servers. */
export async function startApp(opts: { databaseUrl: string; gracePeriod?: string; withWorker?: boolean; temporalAddress?: string; ingestMaxAge?: string; env?: Record<string, string> }): Promise<RunningApp> {
  const stack = testStack();
  const port = await freePort();
  const adminToken = `test-admin-${randomBytes(12).toString('hex')}`;
  const taskQueue = uniqueName('accrue-test');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_OPTIONS: '',
    DATABASE_URL: opts.databaseUrl,
    TEMPORAL_ADDRESS: opts.temporalAddress ?? stack.temporalAddress,
    SMTP_URL: stack.smtpUrl,
    PORT: String(port),
    ACCRUE_TASK_QUEUE: taskQueue,
    ACCRUE_ADMIN_TOKEN: adminToken,
    ACCRUE_INVOICE_GRACE_PERIOD: opts.gracePeriod ?? '1s',
    // Tests bill backdated contracts, so they send usage from months ago.
    ACCRUE_INGEST_MAX_AGE: opts.ingestMaxAge ?? '400d',
    // Per-test settings (ACCRUE_APPROVAL_POLICY, ACCRUE_FINANCE_EMAIL, …).
    ...opts.env,
  };
  const quiet = process.env.ACCRUE_TEST_VERBOSE !== '1';
  const api = spawnService('api', env, { quiet });
  const baseURL = `http://127.0.0.1:${port}`;
  await waitFor('the API to answer /health', async () => {
    if (api.exitCode !== null) throw new Error(`api exited with ${api.exitCode}`);
    const res = await fetch(`${baseURL}/health`);
    // Pointed at an unreachable Temporal on purpose, a 503 is the expected answer.
    if (res.status !== 200 && !(opts.temporalAddress && res.status === 503)) throw new Error(`health ${res.status}`);
  }, 60_000);
  const app: RunningApp = {
    baseURL, adminToken, taskQueue, env, api,
    worker: undefined as unknown as ChildProcess,
    async startWorker() {
      app.worker = spawnService('worker', env, { quiet });
      return app.worker;
    },
    async stop() {
      await Promise.all([stopChild(api), app.worker ? stopChild(app.worker) : Promise.resolve()]);
    },
  };
  if (opts.withWorker !== false) await app.startWorker();
  return app;
}

export async function mailTo(address: string): Promise<CaughtMail[]> {
  const res = await fetch(`${testStack().mailWebUrl}/api/messages`);
  return ((await res.json()) as CaughtMail[]).filter((m) => m.to.includes(address));
}

export async function eventually<T>(what: string, probe: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  return waitFor(what, probe, timeoutMs, 250);
}

/** Raw HTTP against the API, for what the Metronome SDK does not cover (and for bad input). */
export async function http(app: { baseURL: string }, method: string, path: string, opts: { token?: string; body?: unknown; rawBody?: string } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(`${app.baseURL}${path}`, {
    method,
    headers,
    body: opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
  });
  const text = await res.text();
  let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}

/** First instant (UTC) of the month `offset` months from now's month. */
export function monthStart(offset: number, now = new Date()): string {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1)).toISOString();
}

/**
 * `env.sleep(duration)` on the time-skipping test server, unstuck: the server (1.40) now and then
 * keeps a lock it should have released (after a continue-as-new, or while a workflow task runs
 * local activities) and then skips nothing — its clock crawls at real-time pace and the sleep
 * would take days. While the sleep is pending and the clock moved no faster than real time for
 * 3 s, unlock time skipping once more (an error — nothing to unlock — is harmless).
 */
export async function skipTime(env: { sleep(d: number | string): Promise<void>; currentTimeMs(): Promise<number>; connection: { testService?: { unlockTimeSkipping(r: object): Promise<unknown> } } }, duration: number | string): Promise<void> {
  let settled = false;
  const p = env.sleep(duration).finally(() => { settled = true; });
  let last = Number(await env.currentTimeMs());
  while (!settled) {
    await Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, 3000))]);
    if (settled) break;
    const now = Number(await env.currentTimeMs());
    if (now - last < 60_000) await env.connection.testService?.unlockTimeSkipping({}).catch(() => undefined);
    last = now;
  }
  return p;
}
