import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createActivities } from '../activities/index.js';
import { openOrm } from '../db/orm.js';
import { createSmtpMailer } from '../integrations/email/mailer.js';
import { parseDurationMs } from '../billing/periods.js';
import { loadConfig } from '../stack/config.js';
import { ensureBackgroundWorkflows } from './ensure-workflows.js';
import { withFailpoints } from './failpoints.js';

/** The worker process: runs Accrue's workflows and activities on the task queue. */
const config = loadConfig();
const orm = await openOrm(config.databaseUrl);
const mailer = createSmtpMailer(config.smtpUrl, config.mailFrom);
const connection = await NativeConnection.connect({ address: config.temporalAddress });
const worker = await Worker.create({
  connection,
  namespace: config.temporalNamespace,
  taskQueue: config.taskQueue,
  workflowsPath: fileURLToPath(new URL('../workflows/index.js', import.meta.url)),
  // withFailpoints: untouched unless ACCRUE_FAILPOINTS is set (crash tests only).
  activities: withFailpoints(createActivities({ orm, mailer, invoiceGracePeriodMs: config.invoiceGracePeriodMs, lateUsageWindowMs: config.ingestMaxAgeMs, eventRetentionMs: config.eventRetentionMs, ratingIntervalMs: config.ratingIntervalMs, lifecycle: config.lifecycle, webhooks: config.webhooks, stripe: config.stripe, hubspot: config.hubspot })),
  shutdownGraceTime: '10 seconds',
  // ACCRUE_WORKER_MAX_CACHED_WORKFLOWS: how many workflows stay in memory between their tasks
  // (the SDK's default is sized from the heap, ~2,300 here); a workflow evicted from the cache is
  // replayed from its history when it wakes. One per sleeping contract is cheap with a shared V8 context.
  ...(process.env.ACCRUE_WORKER_MAX_CACHED_WORKFLOWS ? { maxCachedWorkflows: Number(process.env.ACCRUE_WORKER_MAX_CACHED_WORKFLOWS) } : {}),
  // ACCRUE_WORKER_STICKY_TIMEOUT: how long a workflow task waits for this worker (which has the
  // workflow cached) before any worker may take it with the full history (the SDK's 10s). A
  // storm bigger than the worker drains in that time turns into replays unless this is longer;
  // a longer one also delays recovery after a worker dies.
  // ACCRUE_WORKER_WORKFLOW_THREADS: threads running workflow code (the SDK's 1 with a shared V8
  // context): with thousands of workflows cached, one thread is the worker's limit.
  ...(process.env.ACCRUE_WORKER_WORKFLOW_THREADS ? { workflowThreadPoolSize: Number(process.env.ACCRUE_WORKER_WORKFLOW_THREADS) } : {}),
  ...(process.env.ACCRUE_WORKER_STICKY_TIMEOUT ? { stickyQueueScheduleToStartTimeout: parseDurationMs(process.env.ACCRUE_WORKER_STICKY_TIMEOUT, 'ACCRUE_WORKER_STICKY_TIMEOUT') } : {}),
});
const clientConnection = await Connection.connect({ address: config.temporalAddress });
await ensureBackgroundWorkflows(new Client({ connection: clientConnection, namespace: config.temporalNamespace }), orm, config.taskQueue);
await clientConnection.close();
console.log(`[worker] polling task queue ${config.taskQueue} on ${config.temporalAddress}`);
await worker.run();
mailer.close();
await connection.close();
await orm.close();
