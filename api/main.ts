import { createServer } from 'node:http';
import { PerformanceObserver } from 'node:perf_hooks';
import { openOrm } from '../db/orm.js';
import { createPool } from '../db/pool.js';
import { loadConfig } from '../stack/config.js';
import { connectWorkflowClient } from '../operations/workflow-client.js';
import { createApp } from './app.js';
import { TokenCache } from './auth.js';
import { EntitlementsCache } from './entitlements-cache.js';
import { entitlementsFastPath } from './fast-path.js';

/** The API process: stateless, run as many replicas as needed behind a load balancer. */
const config = loadConfig();
// ACCRUE_LOG_GC_PAUSES_MS: log garbage-collection pauses at least this long (latency tails).
if (process.env.ACCRUE_LOG_GC_PAUSES_MS) {
  const min = Number(process.env.ACCRUE_LOG_GC_PAUSES_MS);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.duration >= min) console.log(`[api] gc pause ${e.duration.toFixed(1)} ms (kind ${((e as unknown as { detail?: { kind?: number } }).detail)?.kind ?? '?'})`);
  }).observe({ entryTypes: ['gc'] });
}
const orm = await openOrm(config.databaseUrl);
const ingestPool = createPool(config.databaseUrl, { max: Number(process.env.ACCRUE_INGEST_POOL ?? 4), name: 'api' });
// Lazy: the API starts (and ingests) while Temporal is down; /health reports it unavailable.
const temporal = connectWorkflowClient(config.temporalAddress, config.temporalNamespace);
// Entitlements answered from memory, kept current through LISTEN/NOTIFY (reconnects by itself).
const entitlements = new EntitlementsCache(orm, config.databaseUrl);
await entitlements.start().catch((err: Error) => console.error(`[api] entitlements: not listening yet (${err.message}); retrying`));
const tokenCache = new TokenCache();
const app = createApp({ orm, entitlements, tokenCache, temporal, taskQueue: config.taskQueue, adminToken: config.adminToken, ingestMaxAgeMs: config.ingestMaxAgeMs, ingestPool, lifecycle: config.lifecycle, webhooksAllowPrivate: config.webhooks.allowPrivate, stripe: config.stripe, hubspot: config.hubspot, console: config.console });
// Entitlement checks that are fully known in memory skip Express (api/fast-path.ts).
const fast = entitlementsFastPath(entitlements, tokenCache, config.adminToken);
const server = createServer((req, res) => {
  if (!fast(req, res)) app(req, res);
});
server.listen(config.port, process.env.ACCRUE_API_HOST ?? '127.0.0.1', () => {
  console.log(`[api] listening on http://${process.env.ACCRUE_API_HOST ?? '127.0.0.1'}:${config.port}`);
});

async function shutdown() {
  server.close();
  await entitlements.stop();
  await temporal.connection.close().catch(() => undefined);
  await ingestPool.end().catch(() => undefined);
  await orm.close().catch(() => undefined);
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
