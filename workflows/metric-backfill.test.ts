import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createActivities } from '../activities/index.js';
import { BillableMetric, Customer } from '../db/entities.js';
import { insertEvents } from '../db/events.js';
import { newId } from '../db/ids.js';
import { insertMetric } from '../db/metrics.js';
import { ratePass, ratingBacklog } from '../db/rating.js';
import { createSmtpMailer } from '../integrations/email/mailer.js';
import { ROOT } from '../stack/config.js';
import { expectAggregatesMatchRecount } from '../test/recount.js';
import { createTestDatabase, eventually, testStack, uniqueName } from '../test/stack.js';
import { metricBackfillWorkflow } from './metric-backfill.js';

/**
 * The backfill workflow on the Temporal dev server with the real activities on PostgreSQL: a
 * backfill longer than one run continues as new and still counts every older event exactly once.
 */
describe('metric backfill workflow', () => {
  let orm: MikroORM;

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    orm = (await createTestDatabase('backfill_wf')).orm;
  });
  afterAll(async () => orm?.close());

  test('a backfill spanning several runs completes with exact counts', async () => {
    const em = orm.em.fork();
    const customerId = newId();
    em.create(Customer, { id: customerId, name: 'backfilled', customFields: {}, createdAt: new Date(), updatedAt: new Date() });
    await em.flush();
    // Ten transactions of three events: chunks of six events take two transactions each.
    for (let t = 0; t < 10; t++) {
      await insertEvents(orm.em.fork(), Array.from({ length: 3 }, (_, i) => ({
        transactionId: `bf-${t}-${i}`, customerId, eventType: 'job', timestamp: new Date(Date.UTC(2026, 10, 1, t)).toISOString(), properties: { n: t + i },
      })));
    }
    await eventually('the events to be rated', async () => {
      await ratePass(orm.em.fork(), 1000);
      if (await ratingBacklog(orm.em.fork())) throw new Error('backlog');
    }, 30_000);
    const metricId = newId();
    const total = await insertMetric(orm.em.fork(), { id: metricId, name: 'n', aggregationType: 'SUM', aggregationKey: 'n', eventTypeFilter: null, propertyFilters: [], groupKeys: [], customFields: {} });
    expect(total).toBe(30);

    const stack = testStack();
    const taskQueue = uniqueName('backfill');
    const mailer = createSmtpMailer(stack.smtpUrl, 'Accrue Billing <billing@accrue.local>');
    const worker = await Worker.create({
      connection: await NativeConnection.connect({ address: stack.temporalAddress }),
      taskQueue,
      workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'), // the build `npm test` made
      activities: createActivities({ orm, mailer, invoiceGracePeriodMs: 0 }),
    });
    const connection = await Connection.connect({ address: stack.temporalAddress });
    const client = new Client({ connection });
    try {
      const result = await worker.runUntil(async () => {
        const handle = await client.workflow.start(metricBackfillWorkflow, {
          workflowId: uniqueName('metric-backfill'), taskQueue, args: [{ metricId, chunksPerRun: 2, chunkEvents: 6 }],
        });
        const out = await handle.result(); // follows the chain of runs
        const runs: string[] = [];
        await eventually('the runs to be listed', async () => {
          runs.length = 0;
          for await (const w of client.workflow.list({ query: `WorkflowId = '${handle.workflowId}'` })) runs.push(w.status.name);
          expect(runs.sort()).toEqual(['COMPLETED', 'CONTINUED_AS_NEW', 'CONTINUED_AS_NEW']);
        }, 20_000);
        return out;
      });
      expect(result).toEqual({ processed: 30 });
    } finally {
      mailer.close();
      await connection.close();
    }
    const m = await orm.em.fork().findOneOrFail(BillableMetric, { id: metricId });
    expect([m.backfillStatus, m.backfillEventsProcessed, m.backfillEventsTotal]).toEqual(['DONE', 30, 30]);
    await expectAggregatesMatchRecount(orm.em, m);
  });
});
