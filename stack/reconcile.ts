import { dec } from '../billing/money.js';
import { openOrm } from '../db/orm.js';
import { reconcile } from '../db/reconcile.js';
import { join } from 'node:path';
import { ROOT } from './config.js';
import { embeddedAppUrl } from './postgres.js';

/**
 * `npm run reconcile [-- --customer <id>] [-- --json]`: re-derives every invoice line from raw
 * events, the rate schedule and the contracts (DATABASE_URL), and prints any drift. Exit code 1
 * when any line differs by anything or a total is not the sum of its lines.
 */
const args = process.argv.slice(2);
const customerId = args.includes('--customer') ? args[args.indexOf('--customer') + 1] : undefined;
// Default: the embedded stack's database, as Accrue's app role (read-only work; passwords in .data/).
const url = process.env.DATABASE_URL ?? embeddedAppUrl(join(process.env.ACCRUE_DATA_DIR ?? join(ROOT, '.data'), 'postgres'), Number(process.env.ACCRUE_PG_PORT ?? 54329));
const orm = await openOrm(url, { poolMax: 2 });
try {
  const report = await reconcile(orm.em.fork(), { customerId });
  if (args.includes('--json')) console.log(JSON.stringify(report, null, 2));
  else {
    for (const inv of report.invoices) {
      const ok = !inv.drift.length && dec(inv.totalVsLines).isZero();
      console.log(`${ok ? "ok   " : "DRIFT"} invoice ${inv.invoiceId} (${inv.status}, period ${inv.periodStart.slice(0, 10)}, ${inv.lines} lines, total ${inv.total}${inv.corrected ? `, ${inv.corrected} lines changed later and corrected on a later invoice` : ""})`);
      for (const d of inv.drift) console.log(`        ${d.line}: billed ${JSON.stringify(d.billed)} re-derived ${JSON.stringify(d.rederived)}`);
      if (!dec(inv.totalVsLines).isZero()) console.log(`        total differs from the sum of its lines by ${inv.totalVsLines}`);
    }
    for (const c of report.commits) console.log(`DRIFT commit ${c.commitId} (contract ${c.contractId ?? 'none'}) is live and billed on ${c.invoices} SCHEDULED invoices, not 1`);
    console.log(`${report.invoices.length} invoices checked, ${report.drifting} with drift${report.ratingBehind ? ' (rating was still catching up: drafts may differ by events not rated yet)' : ''}`);
  }
  process.exitCode = report.drifting ? 1 : 0;
} finally {
  await orm.close();
}
