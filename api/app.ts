import express, { type Express } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import { allow, authenticate } from './auth.js';
import { errorHandler, notFound } from './errors.js';
import { billableMetricsRouter } from './routes/billable-metrics.js';
import { balancesRouter } from './routes/balances.js';
import { contractChangesRouter } from './routes/contract-changes.js';
import { contractReadsRouter } from './routes/contract-reads.js';
import { contractsRouter } from './routes/contracts.js';
import { customersRouter } from './routes/customers.js';
import { ingestRouter } from './routes/ingest.js';
import { invoicesRouter } from './routes/invoices.js';
import { pricingRouter } from './routes/pricing.js';
import { productsRouter } from './routes/products.js';
import { tokensRouter } from './routes/tokens.js';
import { usageRouter } from './routes/usage.js';
import { usageCollectorsRouter } from './routes/usage-collectors.js';
import { metricsCache } from './metrics-cache.js';

export interface ApiDeps {
  orm: MikroORM;
  temporal: Client;
  taskQueue: string;
  adminToken?: string;
  ingestMaxAgeMs: number;
  /** A plain pg pool for the ingest hot path (bound parameters, no ORM layer). */
  ingestPool: pg.Pool;
}

/**
 * Keeps numbers exactly as sent: a JSON number that a JS double cannot hold exactly (e.g. 18
 * significant digits) becomes its decimal string, which every decimal consumer accepts.
 */
function exactNumbers(this: unknown, _key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value === 'number' && context?.source !== undefined && String(value) !== context.source) {
    const src = context.source;
    if (Number(src) !== value || !/^-?\d+$/.test(src) || !Number.isSafeInteger(value)) return src;
  }
  return value;
}

export function createApp(deps: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');

  app.get('/health', async (_req, res) => {
    const checks = await Promise.allSettled([
      // Events the rater quarantined (db/quarantine.ts): rating goes on, but someone should look.
      deps.orm.em.fork().execute<{ n: string }[]>('select count(*)::text as n from event_quarantine'),
      deps.temporal.connection.withDeadline(Date.now() + 3000, () => deps.temporal.connection.workflowService.getSystemInfo({})),
    ]);
    const [postgres, temporal] = checks.map((c) => (c.status === 'fulfilled' ? 'ok' : String((c as PromiseRejectedResult).reason)));
    const healthy = checks.every((c) => c.status === 'fulfilled');
    const quarantined = checks[0]!.status === 'fulfilled' ? Number((checks[0]!.value as { n: string }[])[0]!.n) : null;
    res.status(healthy ? 200 : 503).json({ status: healthy ? 'ok' : 'unavailable', postgres, temporal, quarantined_events: quarantined });
  });

  app.use(express.json({ limit: '1mb', strict: false, reviver: exactNumbers as (key: string, value: unknown) => unknown, type: ['application/json', 'application/*+json'] }));
  app.use(authenticate(deps.orm, deps.adminToken));
  app.use(tokensRouter(deps.orm));
  app.use(customersRouter(deps.orm));
  app.use(billableMetricsRouter(deps.orm, deps.temporal, deps.taskQueue));
  const metrics = metricsCache(deps.orm);
  app.use(ingestRouter(deps.ingestPool, metrics, { maxAgeMs: deps.ingestMaxAgeMs }));
  app.use(usageRouter(deps.orm, metrics));
  app.use(usageCollectorsRouter(deps.orm, deps.temporal, deps.taskQueue));
  app.use(productsRouter(deps.orm));
  app.use(pricingRouter(deps.orm));
  app.use(contractsRouter(deps.orm, deps.temporal, deps.taskQueue));
  app.use(contractReadsRouter(deps.orm));
  app.use(contractChangesRouter(deps.orm, deps.temporal, deps.taskQueue));
  app.use(balancesRouter(deps.orm));
  app.use(invoicesRouter(deps.orm, deps.temporal, deps.taskQueue));
  app.use(allow('read'), notFound);
  app.use(errorHandler);
  return app;
}
