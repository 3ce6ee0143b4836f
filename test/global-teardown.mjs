import { rmSync } from 'node:fs';
import pg from 'pg';
import { dec } from '../dist/billing/money.js';
import { openOrm } from '../dist/db/orm.js';
import { ratePass, ratingBacklog } from '../dist/db/rating.js';
import { reconcile } from '../dist/db/reconcile.js';

/**
 * After the whole suite, every test database must reconcile clean (invariants I1–I3): each
 * invoice line — frozen or draft — re-derived from the raw events, the rate schedule and the
 * contract, equals what Accrue billed or shows, and every total is the sum of its lines. Events a
 * stopped worker left unrated are rated first (drafts read the aggregates). Any drift fails the run.
 */
async function reconcileEveryDatabase(postgresUrl) {
  const admin = new pg.Client({ connectionString: postgresUrl });
  await admin.connect();
  const names = (await admin.query(`select datname from pg_database where datname like 'accrue\\_%' order by datname`)).rows.map((r) => r.datname);
  await admin.end();
  const problems = [];
  for (const name of names) {
    const orm = await openOrm(postgresUrl.replace(/\/[^/]+$/, `/${name}`), { poolMax: 2 });
    try {
      const tables = await orm.em.fork().execute(`select to_regclass('invoice') is not null as migrated`);
      if (!tables[0]?.migrated) continue;
      for (let i = 0; i < 1000 && (await ratingBacklog(orm.em.fork())); i++) {
        if ((await ratePass(orm.em.fork(), 50_000)).events === 0) await new Promise((res) => setTimeout(res, 20));
      }
      const report = await reconcile(orm.em.fork());
      for (const inv of report.invoices) {
        if (inv.drift.length || !dec(inv.totalVsLines).isZero()) problems.push(`${name}: invoice ${inv.invoiceId} (${inv.status}, ${inv.periodStart}) ${JSON.stringify(inv.drift)} total−lines ${inv.totalVsLines}`);
      }
    } finally {
      await orm.close();
    }
  }
  return { checked: names.length, problems };
}

export default async function globalTeardown() {
  const s = globalThis.__ACCRUE_STACK__;
  if (!s) return;
  let result;
  try {
    if (process.env.ACCRUE_TEST_SKIP_RECONCILE !== '1') result = await reconcileEveryDatabase(JSON.parse(process.env.ACCRUE_TEST_STACK).postgresUrl);
  } finally {
    await Promise.allSettled([s.mail.stop(), s.temporal.stop(), s.postgres.stop(), s.stripe?.stop()]);
    const { workDir } = JSON.parse(process.env.ACCRUE_TEST_STACK ?? '{}');
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  }
  if (result?.problems.length) {
    throw new Error(`reconciliation after the suite found drift in ${result.problems.length} invoice(s):\n${result.problems.join('\n')}`);
  }
  if (result) process.stderr.write(`[accrue] reconciliation after the suite: ${result.checked} test databases, no drift\n`);
}
