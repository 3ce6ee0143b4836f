import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { migrate, openOrm } from '../db/orm.js';
import { createToken, findTokenScope } from '../db/tokens.js';
import { loadConfig, ROOT } from './config.js';
import { startMailCatcher, type RunningMailCatcher } from './mailcatcher.js';
import { assertPortFree } from './net.js';
import { startPostgres, type RunningPostgres } from './postgres.js';
import { spawnService, stopChild } from './services.js';
import { startTemporal } from './temporal.js';

/**
 * `npm start`: the whole system on embedded defaults, supervised. Every part given by the
 * environment (DATABASE_URL, TEMPORAL_ADDRESS, SMTP_URL) is used as is; every part that is not is
 * started here, with its data under .data/ (ACCRUE_DATA_DIR) so it survives restarts.
 *
 * - A child that dies (API, worker, Temporal, PostgreSQL) is restarted with backoff (0.5 s
 *   doubling to 30 s, reset after a minute up), and the log says so.
 * - SIGINT, SIGTERM or SIGHUP to this process (or its parent going away) stops every child, in
 *   order (API and worker, Temporal, mail, PostgreSQL). Children run in their own process group,
 *   so a terminal's Ctrl-C reaches only this supervisor.
 * - A port already in use, or another `npm start` on the same data folder, is refused at start.
 */
const env = { ...process.env };
const dataDir = env.ACCRUE_DATA_DIR ?? join(ROOT, '.data');
mkdirSync(dataDir, { recursive: true });
const say = (msg: string) => console.log(`[accrue] ${msg}`);

/** Something started here that can die: how to (re)start it, and what is running now. */
interface Running { exited: Promise<string>; stop(): Promise<void> }
interface Supervised {
  name: string;
  start(): Promise<Running>;
  current?: Running;
  /** A restart in progress (awaited by shutdown, so nothing it starts is left behind). */
  starting?: Promise<unknown>;
}

let mail: RunningMailCatcher | undefined;
const services: Supervised[] = [];
let stopping = false;
let wake: () => void = () => undefined;
const stopped = new Promise<void>((r) => { wake = r; });
const lockFile = join(dataDir, 'accrue.pid');

const byName = (...names: string[]) => services.filter((s) => names.includes(s.name));

async function shutdown(code: number, why?: string) {
  if (stopping) return;
  stopping = true;
  wake();
  say(`stopping${why ? ` (${why})` : ''}…`);
  const stop = async (s: Supervised) => {
    await s.starting?.catch(() => undefined);
    await s.current?.stop().catch(() => undefined);
  };
  await Promise.all(byName('api', 'worker').map(stop));
  await Promise.all(byName('Temporal').map(stop));
  await mail?.stop().catch(() => undefined);
  await Promise.all(byName('PostgreSQL').map(stop));
  if (existsSync(lockFile) && readFileSync(lockFile, 'utf8').trim() === String(process.pid)) rmSync(lockFile, { force: true });
  say('stopped');
  process.exit(code);
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => void shutdown(0, sig));
// A parent that dies without passing a signal on (SIGKILLed, or a shell that does not forward)
// would leave the stack running: we are reparented, so stop.
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) void shutdown(0, 'parent process gone'); }, 1000).unref();

/** Restarts `s` whenever it exits, until shutdown. */
async function supervise(s: Supervised): Promise<void> {
  let failures = 0;
  let upSince = Date.now();
  while (!stopping) {
    const reason = s.current ? await Promise.race([s.current.exited, stopped.then(() => undefined)]) : 'failed to start';
    if (stopping || reason === undefined) return;
    if (Date.now() - upSince > 60_000) failures = 0;
    const delay = Math.min(30_000, 500 * 2 ** failures);
    failures++;
    say(`${s.name} exited (${reason}); restarting in ${delay / 1000} s (restart ${failures})`);
    s.current = undefined;
    await Promise.race([new Promise((r) => setTimeout(r, delay)), stopped]);
    if (stopping) return;
    const attempt = s.start();
    s.starting = attempt;
    try {
      s.current = await attempt;
      upSince = Date.now();
      say(`${s.name} restarted`);
    } catch (err) {
      say(`${s.name} could not be restarted: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      s.starting = undefined;
    }
  }
}

/** First start of a service, registered before it starts so that shutdown waits for it. */
async function startService<T extends Running>(name: string, start: () => Promise<T>): Promise<T> {
  const s: Supervised = { name, start };
  services.push(s);
  const attempt = start();
  s.starting = attempt;
  try {
    const running = await attempt;
    s.current = running;
    return running;
  } finally {
    s.starting = undefined;
  }
}

function childRunning(child: ChildProcess): Running {
  return {
    exited: new Promise((r) => child.once('exit', (code, signal) => r(signal ?? `exit code ${code}`))),
    stop: () => stopChild(child),
  };
}

/** Refuses a second `npm start` on the same data folder while the first one runs. */
function takeLock() {
  if (existsSync(lockFile)) {
    const pid = Number(readFileSync(lockFile, 'utf8').trim());
    let alive = false;
    try {
      alive = Number.isInteger(pid) && pid > 0 && pid !== process.pid && (process.kill(pid, 0), true);
    } catch { /* not running: a stale lock from a crash */ }
    if (alive) throw new Error(`another \`npm start\` (pid ${pid}) is already running with its data in ${dataDir}; stop it first, or set ACCRUE_DATA_DIR (and the ports) for a second stack`);
  }
  writeFileSync(lockFile, `${process.pid}\n`);
}

try {
  takeLock();
  const apiPort = Number(env.PORT ?? 8080);
  await assertPortFree(apiPort, 'the API', 'PORT');
  let postgres: RunningPostgres | undefined;
  if (!env.DATABASE_URL) {
    const pgDir = join(dataDir, 'postgres');
    postgres = await startService('PostgreSQL', () => startPostgres({ dataDir: pgDir, port: Number(env.ACCRUE_PG_PORT ?? 54329), detached: true }));
    env.DATABASE_URL = postgres.appUrl;
    say(`PostgreSQL   127.0.0.1:${postgres.port} as role accrue_app  (${postgres.source}, data in ${pgDir}, passwords in ${pgDir}-credentials.json)`);
  } else say('PostgreSQL   using DATABASE_URL');

  if (!env.TEMPORAL_ADDRESS) {
    if (!env.ACCRUE_TEMPORAL_BIN) throw new Error('no Temporal CLI: set TEMPORAL_ADDRESS or run through `npm start`, which installs it');
    const temporal = await startService('Temporal', () => startTemporal({
        bin: env.ACCRUE_TEMPORAL_BIN!,
        port: Number(env.ACCRUE_TEMPORAL_PORT ?? 7233),
        uiPort: Number(env.ACCRUE_TEMPORAL_UI_PORT ?? 8233),
        dbFile: join(dataDir, 'temporal.db'),
        detached: true,
      }));
    env.TEMPORAL_ADDRESS = temporal.address;
    if (temporal.uiUrl && !env.ACCRUE_TEMPORAL_UI_URL) env.ACCRUE_TEMPORAL_UI_URL = temporal.uiUrl;
    say(`Temporal     ${temporal.address}  (Web UI ${temporal.uiUrl})`);
  } else say(`Temporal     using TEMPORAL_ADDRESS ${env.TEMPORAL_ADDRESS}`);

  if (!env.SMTP_URL) {
    mail = await startMailCatcher({ smtpPort: Number(env.ACCRUE_SMTP_PORT ?? 1025), webPort: Number(env.ACCRUE_MAIL_UI_PORT ?? 1080), dir: join(dataDir, 'mail') });
    env.SMTP_URL = mail.smtpUrl;
    say(`Mail         ${mail.smtpUrl}  (messages at ${mail.webUrl})`);
  } else say('Mail         using SMTP_URL');

  const config = loadConfig(env);
  // Migrations run as the cluster's superuser (the tables' owner); the services never get it.
  const orm = await openOrm(postgres?.url ?? config.databaseUrl, { poolMax: 2 });
  const applied = await migrate(orm);
  await postgres?.grantAppRole();
  say(`Migrations   ${applied.length ? `applied ${applied.join(', ')}` : 'up to date'}`);

  if (!config.adminToken) {
    // A local dev token, kept in the git-ignored data folder so restarts print the same one.
    const tokenFile = join(dataDir, 'dev-admin-token');
    let token = existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : '';
    if (!token || !(await findTokenScope(orm.em.fork(), token))) {
      token = await createToken(orm.em.fork(), 'local dev admin (npm start)', 'admin');
      writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    }
    say(`Dev token    ${token}  (admin scope; local only, stored in ${tokenFile})`);
  }
  await orm.close();

  for (const name of ['worker', 'api'] as const) {
    await startService(name, async () => childRunning(spawnService(name, env, { detached: true })));
  }
  say(`API          http://127.0.0.1:${config.port}  (GET /health; Authorization: Bearer <token>)`);
  say(config.stripe.secretKey
    ? `Stripe       on (${config.stripe.apiBase ?? 'api.stripe.com'}; webhooks ${config.stripe.webhookSecret ? 'verified with STRIPE_WEBHOOK_SECRET' : 'off: STRIPE_WEBHOOK_SECRET is not set'}; dunning ${process.env.ACCRUE_DUNNING_SCHEDULE ?? '1d,3d,5d,7d'})`
    : 'Stripe       off (set STRIPE_SECRET_KEY to send invoices to Stripe; billing configs for Stripe are refused until then)');
  say(config.hubspot.accessToken
    ? `HubSpot      on (${config.hubspot.apiBase ?? 'api.hubapi.com'}; deal webhooks ${config.hubspot.clientSecret ? `verified with HUBSPOT_CLIENT_SECRET at ${config.hubspot.publicUrl ?? 'this host'}/v1/accrue/webhooks/hubspot` : 'off: HUBSPOT_CLIENT_SECRET is not set'}; closed-won stage ${config.hubspot.closedWonStage})`
    : 'HubSpot      off (set HUBSPOT_ACCESS_TOKEN and HUBSPOT_CLIENT_SECRET to start contracts from closed-won deals and keep the CRM current)');
  say('Ctrl-C stops everything; data stays in ' + dataDir);
  for (const s of services) void supervise(s);
} catch (err) {
  console.error(`[accrue] start failed: ${err instanceof Error ? err.message : String(err)}`);
  await shutdown(1);
}
