import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createActivities } from '../activities/index.js';
import { Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { ROOT, SEARCH_ATTRIBUTES } from '../stack/config.js';
import { temporal } from '@temporalio/proto';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, mailTo, testStack, uniqueName } from '../test/stack.js';
import { contractWorkflow } from './contract.js';
import { approveInvoiceUpdate, invoiceCloseStageQuery, invoiceCloseWorkflow } from './invoice-close.js';
import { contractWorkflowId, invoiceWorkflowId } from './search-attributes.js';

/**
 * The contract and invoice-close workflows on Temporal's time-skipping test server, with the real
 * activities on real PostgreSQL and SMTP: a month-long period plus the 24 h grace period pass in
 * seconds, and the invoice waits for finance however long that takes.
 */
describe('contract workflow (time-skipping)', () => {
  let env: TestWorkflowEnvironment;
  let orm: MikroORM;
  let mailer: Mailer;

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    const path = process.env.ACCRUE_TEMPORAL_TEST_SERVER_BIN;
    if (!path) throw new Error('ACCRUE_TEMPORAL_TEST_SERVER_BIN is not set: run the tests with `npm test`');
    env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path } } });
    // The test server starts without custom search attributes; register Accrue's like the dev server.
    await env.connection.operatorService.addSearchAttributes({
      namespace: env.namespace ?? 'default',
      searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((k) => [k, temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD])),
    });
    orm = (await createTestDatabase('workflows')).orm;
    mailer = createSmtpMailer(testStack().smtpUrl, 'Accrue Billing <billing@accrue.local>');
  });
  afterAll(async () => {
    mailer?.close();
    await orm?.close();
    await env?.teardown();
  });

  test('closes the period only after its end plus 24 h, then waits for approval before finalizing', async () => {
    const now = new Date(await env.currentTimeMs());
    const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
    const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString();
    const billingEmail = `${uniqueName('ap')}@skipping.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: start, endingBefore: end, price: '3', billingEmail });
    await s.ingest([{ id: '1', at: start, seconds: 100 }, { id: '2', at: new Date(Date.parse(end) - 1).toISOString(), seconds: '0.5' }]);
    const invoiceId = invoiceIdFor(s.contractId, start);
    const graceMs = 24 * 3_600_000;

    const taskQueue = uniqueName('wf');
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue,
      workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'), // the build `npm test` made
      activities: createActivities({ orm, mailer, invoiceGracePeriodMs: graceMs }),
    });

    await worker.runUntil(async () => {
      const contract = await env.client.workflow.start(contractWorkflow, {
        workflowId: contractWorkflowId(s.contractId), taskQueue, args: [{ contractId: s.contractId }],
      });
      await contract.result(); // the contract's only period is closed: time skipped a month and a day
      expect(await env.currentTimeMs()).toBeGreaterThanOrEqual(Date.parse(end) + graceMs);

      const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceId));
      for (let i = 0; i < 100 && (await close.query(invoiceCloseStageQuery)) !== 'AWAITING_APPROVAL'; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await close.query(invoiceCloseStageQuery)).toBe('AWAITING_APPROVAL');
      const frozen = await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId });
      expect([frozen.status, frozen.approvalStatus, frozen.total]).toEqual(['DRAFT', 'PENDING_APPROVAL', '302']); // 100.5 × 3 = 301.5 → 302

      // Finance takes a week: nothing is finalized or sent meanwhile.
      await env.sleep('7 days');
      expect((await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId })).status).toBe('DRAFT');
      expect(await mailTo(billingEmail)).toHaveLength(0);

      const result = await close.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance' }] });
      expect(result).toEqual({ invoiceId, status: 'FINALIZED', approvalStatus: 'APPROVED', total: '302' });
      expect(await close.result()).toMatchObject({ status: 'FINALIZED', total: '302' });
    });

    const finalized = await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId });
    expect([finalized.status, finalized.approvedBy, !!finalized.emailedAt]).toEqual(['FINALIZED', 'finance', true]);
    const mail = await mailTo(billingEmail);
    expect(mail.map((m) => m.subject)).toEqual([`Your invoice for ${start.slice(0, 10)} to ${end.slice(0, 10)}: $3.02`]);
  });
});
