import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { migrate, openOrm } from '../db/orm.js';
import { createToken, findTokenScope } from '../db/tokens.js';
import { loadConfig, ROOT } from './config.js';
import { startMailCatcher, type RunningMailCatcher } from './mailcatcher.js';
import { startPostgres, type RunningPostgres } from './postgres.js';
import { spawnService, stopChild } from './services.js';
import { startTemporal, type RunningTemporal } from './temporal.js';

/**
 * `npm start`: the whole system on embedded defaults. Every part given by the environment
 * (DATABASE_URL, TEMPORAL_ADDRESS, SMTP_URL) is used as is; every part that is not is started
 * here, with its data under .data/ so it survives restarts. Ctrl-C stops everything.
 */
const env = { ...process.env };
const dataDir = env.ACCRUE_DATA_DIR ?? join(ROOT, '.data');
mkdirSync(dataDir, { recursive: true });
const say = (msg: string) => console.log(`[accrue] ${msg}`);

let postgres: RunningPostgres | undefined;
let temporal: RunningTemporal | undefined;
let mail: RunningMailCatcher | undefined;
const children: ChildProcess[] = [];
let stopping = false;

async function shutdown(code: number) {
  if (stopping) return;
  stopping = true;
  say('stopping…');
  await Promise.all(children.map((c) => stopChild(c)));
  await mail?.stop().catch(() => undefined);
  await temporal?.stop().catch(() => undefined);
  await postgres?.stop().catch(() => undefined);
  say('stopped');
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

try {
  if (!env.DATABASE_URL) {
    postgres = await startPostgres({ dataDir: join(dataDir, 'postgres'), port: Number(env.ACCRUE_PG_PORT ?? 54329) });
    env.DATABASE_URL = postgres.url;
    say(`PostgreSQL   ${postgres.url}  (${postgres.source}, data in ${join(dataDir, 'postgres')})`);
  } else say('PostgreSQL   using DATABASE_URL');

  if (!env.TEMPORAL_ADDRESS) {
    if (!env.ACCRUE_TEMPORAL_BIN) throw new Error('no Temporal CLI: set TEMPORAL_ADDRESS or run through `npm start`, which installs it');
    temporal = await startTemporal({
      bin: env.ACCRUE_TEMPORAL_BIN,
      port: Number(env.ACCRUE_TEMPORAL_PORT ?? 7233),
      uiPort: Number(env.ACCRUE_TEMPORAL_UI_PORT ?? 8233),
      dbFile: join(dataDir, 'temporal.db'),
    });
    env.TEMPORAL_ADDRESS = temporal.address;
    say(`Temporal     ${temporal.address}  (Web UI ${temporal.uiUrl})`);
  } else say(`Temporal     using TEMPORAL_ADDRESS ${env.TEMPORAL_ADDRESS}`);

  if (!env.SMTP_URL) {
    mail = await startMailCatcher({ smtpPort: Number(env.ACCRUE_SMTP_PORT ?? 1025), webPort: Number(env.ACCRUE_MAIL_UI_PORT ?? 1080), dir: join(dataDir, 'mail') });
    env.SMTP_URL = mail.smtpUrl;
    say(`Mail         ${mail.smtpUrl}  (messages at ${mail.webUrl})`);
  } else say('Mail         using SMTP_URL');

  const config = loadConfig(env);
  const orm = await openOrm(config.databaseUrl, { poolMax: 2 });
  const applied = await migrate(orm);
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
    const child = spawnService(name, env);
    child.on('exit', (code, signal) => {
      if (!stopping) {
        say(`${name} exited (${signal ?? code}); stopping everything`);
        void shutdown(1);
      }
    });
    children.push(child);
  }
  say(`API          http://127.0.0.1:${config.port}  (GET /health; Authorization: Bearer <token>)`);
  say('Ctrl-C stops everything; data stays in ' + dataDir);
} catch (err) {
  console.error('[accrue] start failed:', err);
  await shutdown(1);
}
