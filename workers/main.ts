import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createActivities } from '../activities/index.js';
import { openOrm } from '../db/orm.js';
import { createSmtpMailer } from '../integrations/email/mailer.js';
import { loadConfig } from '../stack/config.js';

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
  activities: createActivities({ orm, mailer, invoiceGracePeriodMs: config.invoiceGracePeriodMs }),
  shutdownGraceTime: '10 seconds',
});
console.log(`[worker] polling task queue ${config.taskQueue} on ${config.temporalAddress}`);
await worker.run();
mailer.close();
await connection.close();
await orm.close();
