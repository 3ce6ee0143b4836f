import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ROOT } from '../stack/config.js';
import { assertPortFree, freePort } from '../stack/net.js';
import { eventually, http } from './stack.js';

/**
 * `npm start` as a process manager runs it: the real npm → bootstrap → supervisor chain on free
 * ports and a temporary data folder (ACCRUE_SKIP_BUILD: `npm test` has just built dist/).
 * A SIGKILLed API, Temporal server or PostgreSQL comes back; a second `npm start` on the same
 * data folder or on a port that is taken is refused; the services connect as Accrue's own
 * password-protected, non-superuser role; SIGTERM or SIGINT to npm's pid alone stops every process.
 */

/** pid → parent pid of every process, from /proc. */
function processTable(): Map<number, number> {
  const table = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      table.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* exited meanwhile */ }
  }
  return table;
}

function descendants(pid: number): number[] {
  const table = processTable();
  const found: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of table) if (parent === p) { found.push(child); walk(child); }
  };
  walk(pid);
  return found;
}

const cmdline = (pid: number) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch { return ''; } };
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};
const findChild = (top: number, pattern: string) => descendants(top).find((p) => cmdline(p).includes(pattern));

interface Stack { npm: ChildProcess; log(): string; exit: Promise<number | null> }

describe('npm start supervises its stack', () => {
  const work = mkdtempSync(join(tmpdir(), 'accrue-supervisor-'));
  chmodSync(work, 0o755); // under root, PostgreSQL runs as an unprivileged user that must reach its folder
  let env: NodeJS.ProcessEnv;
  let ports: Record<string, number>;
  let first: Stack;
  const started: Stack[] = [];

  function npmStart(overrides: NodeJS.ProcessEnv = {}): Stack {
    const npm = spawn('npm', ['start'], { cwd: ROOT, env: { ...env, ...overrides }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (b: Buffer) => { out += b.toString(); if (process.env.ACCRUE_TEST_VERBOSE === '1') process.stdout.write(b); };
    npm.stdout!.on('data', keep);
    npm.stderr!.on('data', keep);
    const stack = { npm, log: () => out, exit: new Promise<number | null>((r) => npm.once('exit', (code) => r(code))) };
    started.push(stack);
    return stack;
  }
  const health = (port = ports.api!) => http({ baseURL: `http://127.0.0.1:${port}` }, 'GET', '/health');
  // On a timeout the error carries the stack's log: what it was doing when it did not come up.
  const healthy = (what: string, stack?: Stack) => eventually(what, async () => {
    const h = await health().catch((err: Error) => { throw new Error(`${err.message}${stack ? `\n--- npm start log (tail) ---\n${stack.log().slice(-3000)}` : ''}`); });
    if (h.status !== 200) throw new Error(`health ${h.status} ${h.text}`);
  }, 120_000);
  const logShows = (stack: Stack, text: string) => eventually(`the log to say "${text}"`, async () => {
    if (!stack.log().includes(text)) throw new Error(stack.log().slice(-2000));
  }, 120_000);
  const credentials = () => JSON.parse(readFileSync(join(work, 'data', 'postgres-credentials.json'), 'utf8')) as { superuser: string; app: string };
  const connect = async (user: string, password: string | undefined) => {
    const c = new pg.Client({ host: '127.0.0.1', port: ports.pg, user, password, database: 'accrue' });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };

  beforeAll(async () => {
    const [api, pgPort, temporal, temporalUi, smtp, mailUi] = await Promise.all(Array.from({ length: 6 }, freePort));
    ports = { api: api!, pg: pgPort!, temporal: temporal!, temporalUi: temporalUi!, smtp: smtp!, mailUi: mailUi! };
    env = {
      ...process.env,
      NODE_OPTIONS: '',
      ACCRUE_SKIP_BUILD: '1',
      ACCRUE_DATA_DIR: join(work, 'data'),
      PORT: String(ports.api),
      ACCRUE_PG_PORT: String(ports.pg),
      ACCRUE_TEMPORAL_PORT: String(ports.temporal),
      ACCRUE_TEMPORAL_UI_PORT: String(ports.temporalUi),
      ACCRUE_SMTP_PORT: String(ports.smtp),
      ACCRUE_MAIL_UI_PORT: String(ports.mailUi),
    };
    for (const name of ['DATABASE_URL', 'TEMPORAL_ADDRESS', 'SMTP_URL', 'ACCRUE_ADMIN_TOKEN', 'ACCRUE_INGEST_MAX_AGE']) delete env[name];
    first = npmStart();
    await healthy('the stack to come up');
  });

  afterAll(async () => {
    for (const s of started) if (s.npm.exitCode === null) s.npm.kill('SIGTERM');
    await Promise.all(started.map((s) => s.exit));
    rmSync(work, { recursive: true, force: true });
  });

  test('a SIGKILLed API, Temporal server or PostgreSQL is restarted and the log says so', async () => {
    const top = first.npm.pid!;
    const api = findChild(top, 'dist/api/main.js')!;
    expect(api).toBeDefined();
    process.kill(api, 'SIGKILL');
    await logShows(first, 'api exited (SIGKILL); restarting in');
    await healthy('the API back');
    expect(findChild(top, 'dist/api/main.js')).not.toBe(api);

    const temporal = findChild(top, 'server start-dev')!;
    expect(temporal).toBeDefined();
    process.kill(temporal, 'SIGKILL');
    await logShows(first, 'Temporal exited (SIGKILL); restarting in');
    await logShows(first, 'Temporal restarted');
    await healthy('Temporal back');

    const postmaster = Number(readFileSync(join(work, 'data', 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);
    expect(descendants(top)).toContain(postmaster);
    process.kill(postmaster, 'SIGKILL');
    await logShows(first, 'PostgreSQL exited (SIGKILL); restarting in');
    await logShows(first, 'PostgreSQL restarted');
    await healthy('PostgreSQL back');

    // The whole stack works again: ingest is stored and the (possibly restarted) worker rates it.
    const token = /Dev token\s+(\S+)/.exec(first.log())![1]!;
    const su = await connect('accrue', credentials().superuser);
    try {
      const cursor = async () => (await su.query<{ xid: string }>(`select xid::text as xid from rating_cursor where id = 'events'`)).rows[0]!.xid;
      const before = BigInt(await cursor());
      const res = await http({ baseURL: `http://127.0.0.1:${ports.api}` }, 'POST', '/v1/ingest', {
        token, body: [{ transaction_id: 'after-restarts', customer_id: 'nobody-yet', event_type: 'api_call', timestamp: new Date().toISOString() }],
      });
      expect(res.status).toBe(200);
      await eventually('the worker to rate the event', async () => {
        if (BigInt(await cursor()) <= before) throw new Error('not rated');
      }, 120_000);
    } finally {
      await su.end();
    }
  });

  test('the services connect as a password-protected role that is not a superuser', async () => {
    const creds = credentials();
    const su = await connect('accrue', creds.superuser);
    try {
      const role = await su.query('select rolsuper, rolcreaterole, rolcreatedb from pg_roles where rolname = $1', ['accrue_app']);
      expect(role.rows).toEqual([{ rolsuper: false, rolcreaterole: false, rolcreatedb: false }]);
      // Every connection of the API and the worker to Accrue's database is the app role's.
      const users = await su.query<{ usename: string }>(
        `select distinct usename from pg_stat_activity where datname = 'accrue' and pid <> pg_backend_pid() and backend_type = 'client backend'`);
      expect(users.rows.map((r) => r.usename)).toEqual(['accrue_app']);
    } finally {
      await su.end();
    }

    const app = await connect('accrue_app', creds.app);
    try {
      await expect(app.query('create table not_allowed (x int)')).rejects.toMatchObject({ code: '42501' });
      await expect(app.query('select count(*) from accrue_migrations')).rejects.toMatchObject({ code: '42501' });
      expect((await app.query('select count(*)::int as n from event')).rows[0].n).toBeGreaterThanOrEqual(1);
    } finally {
      await app.end();
    }

    // Without the password, or with a wrong one, the server refuses (it would trust anyone before).
    await expect(connect('accrue', undefined)).rejects.toThrow();
    await expect(connect('accrue_app', undefined)).rejects.toThrow();
    await expect(connect('accrue', 'wrong')).rejects.toMatchObject({ code: '28P01' });
    await expect(connect('accrue_app', 'wrong')).rejects.toMatchObject({ code: '28P01' });
    expect(readFileSync(join(work, 'data', 'postgres', 'pg_hba.conf'), 'utf8')).not.toMatch(/\btrust\b/);
  });

  test('a second npm start is refused: same data folder, or a port held by a foreign server', async () => {
    const same = npmStart();
    expect(await same.exit).toBe(1);
    expect(same.log()).toMatch(/another `npm start` \(pid \d+\) is already running/);

    // Another data folder and API port, but the first stack's PostgreSQL port.
    const otherPorts = { PORT: String(await freePort()), ACCRUE_DATA_DIR: join(work, 'second') };
    const foreignPg = npmStart(otherPorts);
    expect(await foreignPg.exit).toBe(1);
    expect(foreignPg.log()).toContain(`PostgreSQL: port ${ports.pg} on 127.0.0.1 is already in use`);

    // Its own PostgreSQL, but the first stack's Temporal port: refused, and its PostgreSQL stopped.
    const ownPg = await freePort();
    const foreignTemporal = npmStart({ ...otherPorts, ACCRUE_PG_PORT: String(ownPg) });
    expect(await foreignTemporal.exit).toBe(1);
    expect(foreignTemporal.log()).toContain(`Temporal: port ${ports.temporal} on 127.0.0.1 is already in use`);
    await assertPortFree(ownPg, 'the refused stack\'s PostgreSQL', '-');

    expect((await health()).status).toBe(200);
  });

  test('SIGTERM to npm\'s pid alone stops every process of the stack', async () => {
    const top = first.npm.pid!;
    const all = descendants(top);
    const commands = all.map(cmdline).join('\n');
    for (const part of ['scripts/bootstrap.mjs', 'dist/stack/start.js', 'dist/api/main.js', 'dist/workers/main.js', 'server start-dev', 'postgres -D']) {
      expect(commands).toContain(part);
    }
    process.kill(top, 'SIGTERM');
    await first.exit;
    await eventually('every process of the stack gone', async () => {
      const left = all.filter(alive);
      if (left.length) throw new Error(`still running: ${left.map((p) => `${p} ${cmdline(p)}`).join('; ')}`);
    }, 10_000);
    expect(first.log()).toContain('[accrue] stopped');
    expect(existsSync(join(work, 'data', 'accrue.pid'))).toBe(false);
  });

  test('started again on the same data, SIGINT to npm\'s pid alone stops it all as well', async () => {
    const again = npmStart();
    await healthy('the stack up again on its data', again);
    const all = descendants(again.npm.pid!);
    expect(all.length).toBeGreaterThan(5);
    process.kill(again.npm.pid!, 'SIGINT');
    await again.exit;
    await eventually('every process of the stack gone', async () => {
      const left = all.filter(alive);
      if (left.length) throw new Error(`still running: ${left.map((p) => `${p} ${cmdline(p)}`).join('; ')}`);
    }, 10_000);
  });
});
