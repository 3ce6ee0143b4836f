// Starts the real servers the suite talks to, once per run, on 127.0.0.1 only: a PostgreSQL
// cluster in a temporary folder, a Temporal dev server (in memory), the SMTP mail catcher and a
// Stripe-protocol server (localstripe, stack/stripe-server.ts).
// Each test file then gets its own database and task queue (test/stack.ts).
// Plain ESM importing the build: Jest loads global setup outside its module system.
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../dist/stack/config.js';
import { startMailCatcher } from '../dist/stack/mailcatcher.js';
import { freePort } from '../dist/stack/net.js';
import { startPostgres } from '../dist/stack/postgres.js';
import { startTemporal } from '../dist/stack/temporal.js';
import { startStripeServer } from '../dist/stack/stripe-server.js';

export default async function globalSetup() {
  const temporalBin = process.env.ACCRUE_TEMPORAL_BIN;
  if (!temporalBin) throw new Error('ACCRUE_TEMPORAL_BIN is not set: run the tests with `npm test`, which installs the Temporal CLI');
  const work = mkdtempSync(join(tmpdir(), 'accrue-test-'));
  chmodSync(work, 0o755); // under root, PostgreSQL runs as an unprivileged user that must reach its folder
  const [pgPort, temporalPort, smtpPort, mailWebPort, stripePort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const [postgres, temporal, mail, stripe] = await Promise.all([
    startPostgres({ dataDir: join(work, 'postgres'), port: pgPort, database: 'postgres', unsafeFast: true, trust: true }),
    startTemporal({ bin: temporalBin, port: temporalPort }),
    startMailCatcher({ smtpPort, webPort: mailWebPort }),
    startStripeServer({ port: stripePort, pythonPath: process.env.ACCRUE_LOCALSTRIPE_PATH }),
  ]);
  const stack = { postgresUrl: postgres.url, temporalAddress: temporal.address, smtpUrl: mail.smtpUrl, mailWebUrl: mail.webUrl, stripeApiBase: stripe.apiBase, workDir: work };
  globalThis.__ACCRUE_STACK__ = { postgres, temporal, mail, stripe };
  process.env.ACCRUE_TEST_STACK = JSON.stringify(stack);
  mkdirSync(join(ROOT, '.data'), { recursive: true });
  writeFileSync(join(ROOT, '.data', 'test-stack.json'), JSON.stringify(stack, null, 2));
}
