import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { migrate, openOrm } from '../db/orm.js';
import { freePort } from '../stack/net.js';
import { startPostgres, type RunningPostgres } from '../stack/postgres.js';
import { eventually, http, startApp, type RunningApp } from './stack.js';

/**
 * PostgreSQL dies under the API and comes back: the postmaster of a cluster of this file's own
 * (never the shared test cluster) is SIGKILLed mid-ingest and restarted. The API and worker
 * processes stay up, answer 503 (never 500) while it is down and 200 again after, and every
 * event acknowledged with a 200 is in the database.
 */
describe('a PostgreSQL restart under load', () => {
  let work: string;
  let postgres: RunningPostgres;
  let port: number;
  let app: RunningApp | undefined;
  let ingesting = true;

  const start = (attempts = 1) => startPostgres({ dataDir: join(work, 'pg'), port, database: 'accrue' }).catch((err) => {
    // The orphaned backends of a SIGKILLed postmaster may hold its shared memory for a moment.
    if (attempts >= 20) throw err;
    return new Promise<RunningPostgres>((r) => setTimeout(() => r(start(attempts + 1)), 500));
  });

  async function query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    const c = new pg.Client({ connectionString: postgres.url });
    await c.connect();
    try {
      return (await c.query(sql, params)).rows as T[];
    } finally {
      await c.end();
    }
  }
  const ratingCursor = async () => (await query<{ xid: string }>(`select xid::text as xid from rating_cursor where id = 'events'`))[0]!.xid;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'accrue-pg-restart-'));
    chmodSync(work, 0o755); // under root, PostgreSQL runs as an unprivileged user that must reach its folder
    port = await freePort();
    postgres = await start();
    const setup = await openOrm(postgres.url, { poolMax: 1 });
    await migrate(setup);
    await setup.close();
    app = await startApp({ databaseUrl: postgres.url });
  });

  afterAll(async () => {
    ingesting = false;
    await app?.stop();
    await postgres?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  test('503 while down, 200 after, processes alive, no acknowledged event lost', async () => {
    const running = app!;
    const acknowledged: string[] = [];
    const statuses = new Map<number, number>();
    let batch = 0;
    let calm = false;
    // Six clients ingest back to back (filling the API's ingest pool), then one carries on, so the
    // pool holds idle connections as well as a busy one when the server dies. No retries here.
    const ingest = async (lane: number) => {
      while (ingesting && (lane === 0 || !calm)) {
        const ids = Array.from({ length: 20 }, (_, i) => `restart-${lane}-${batch}-${i}`);
        batch++;
        const res = await http(running, 'POST', '/v1/ingest', {
          token: running.adminToken,
          body: ids.map((id) => ({ transaction_id: id, customer_id: 'restart-customer', event_type: 'api_call', timestamp: new Date().toISOString() })),
        }).catch(() => ({ status: 0 }));
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (res.status === 200) acknowledged.push(...ids);
        else await new Promise((r) => setTimeout(r, 20));
      }
    };
    const cursorAtStart = await ratingCursor();
    const lanes = [0, 1, 2, 3, 4, 5].map(ingest);
    await eventually('some events acknowledged', async () => {
      if (acknowledged.length < 400) throw new Error(`${acknowledged.length} acknowledged`);
    });
    calm = true;
    await Promise.all(lanes.slice(1));
    await new Promise((r) => setTimeout(r, 200));

    // The worker is up and rating before the server dies.
    await eventually('the rater to move its cursor', async () => {
      if ((await ratingCursor()) === cursorAtStart) throw new Error('cursor still');
    });
    const postmasterPid = Number(readFileSync(join(work, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(postmasterPid, 'SIGKILL');
    const before = statuses.get(200) ?? 0;
    await eventually('ingest refused while PostgreSQL is down', async () => {
      if ([...statuses.keys()].every((s) => s === 200)) throw new Error('still 200');
    });
    const health = await http(running, 'GET', '/health');
    expect(health.status).toBe(503);
    // Long enough for every idle pooled connection to see its server gone.
    await new Promise((r) => setTimeout(r, 1500));
    expect(running.api.exitCode).toBeNull();
    expect(running.worker.exitCode).toBeNull();

    postgres = await start();
    await eventually('ingest accepted again', async () => {
      if ((statuses.get(200) ?? 0) <= before + 10) throw new Error(`${statuses.get(200)} accepted`);
    });
    await eventually('/health 200 again', async () => {
      const h = await http(running, 'GET', '/health');
      if (h.status !== 200) throw new Error(`health ${h.status}: ${h.text}`);
    });
    ingesting = false;
    await Promise.all(lanes);

    expect(running.api.exitCode).toBeNull();
    expect(running.worker.exitCode).toBeNull();
    // Every answer was a 200 or a 503 (a refused connection would be status 0: the API died).
    expect([...statuses.keys()].sort()).toEqual([200, 503]);

    const stored = await query<{ n: string }>('select count(*)::text as n from event where transaction_id = any($1)', [acknowledged]);
    expect(Number(stored[0]!.n)).toBe(acknowledged.length);
    // The worker's rater carried on after the restart: the cursor moves past the new events.
    const cursorAfterRestart = await ratingCursor();
    await eventually('the rater to run again', async () => {
      if (BigInt(await ratingCursor()) <= BigInt(cursorAfterRestart)) throw new Error('cursor still');
    });
  });
});
