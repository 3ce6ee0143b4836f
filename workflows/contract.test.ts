import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createActivities } from '../activities/index.js';
import { Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { lateUsageInvoiceId } from '../db/invoices.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { ROOT, SEARCH_ATTRIBUTES } from '../stack/config.js';
import { temporal } from '@temporalio/proto';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, mailTo, testStack, uniqueName } from '../test/stack.js';
import { contractStateQuery, contractWorkflow } from './contract.js';
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

  // One time-skipping server per test: closes a test leaves waiting for approval wake for their
  // reminders on a task queue nobody polls any more, and their pending activities would hold the
  // next test's clock.
  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    orm = (await createTestDatabase('workflows')).orm;
    mailer = createSmtpMailer(testStack().smtpUrl, 'Accrue Billing <billing@accrue.local>');
  });
  beforeEach(async () => {
    const path = process.env.ACCRUE_TEMPORAL_TEST_SERVER_BIN;
    if (!path) throw new Error('ACCRUE_TEMPORAL_TEST_SERVER_BIN is not set: run the tests with `npm test`');
    env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path } } });
    // The test server starts without custom search attributes; register Accrue's like the dev server.
    await env.connection.operatorService.addSearchAttributes({
      namespace: env.namespace ?? 'default',
      searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((k) => [k, temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD])),
    });
  });
  afterEach(async () => {
    await env?.teardown();
  });
  afterAll(async () => {
    mailer?.close();
    await orm?.close();
  });

  test('closes the period only after its end plus 24 h, then waits for approval before finalizing', async () => {
    const now = new Date(await env.currentTimeMs());
    const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
    const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString();
    const billingEmail = `${uniqueName('ap')}@skipping.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: start, endingBefore: end, price: '3', billingEmail, terms: { renewal_notice_days: 0 } });
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
      const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceId));
      await skipToClose(close, Date.parse(end) + graceMs); // time skips a month and a day
      const frozen = await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId });
      expect([frozen.status, frozen.approvalStatus, frozen.total]).toEqual(['DRAFT', 'PENDING_APPROVAL', '302']); // 100.5 × 3 = 301.5 → 302

      // Finance takes a week: nothing is finalized or sent meanwhile, and the contract's workflow
      // waits for its last invoice (the rollover comes after it is final).
      await env.sleep('7 days');
      expect((await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId })).status).toBe('DRAFT');
      expect(await mailTo(billingEmail)).toHaveLength(0);
      expect((await contract.describe()).status.name).toBe('RUNNING');
      expect(await contract.query(contractStateQuery)).toMatchObject({ state: 'ACTIVE', unclosedPeriods: [start] });

      // The approval names the total it approves: another total is refused.
      await expect(close.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total: '301' }] })).rejects.toThrow(WorkflowUpdateFailedError);
      const result = await approve(close, '302');
      expect(result).toEqual({ invoiceId, status: 'FINALIZED', approvalStatus: 'APPROVED', total: '302' });
      expect(await close.result()).toMatchObject({ status: 'FINALIZED', total: '302' });
      await contract.result(); // ends once its only invoice is final
      expect(await contract.query(contractStateQuery)).toMatchObject({ state: 'ENDED', unclosedPeriods: [] });
    });

    const finalized = await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId });
    expect([finalized.status, finalized.approvedBy, !!finalized.emailedAt]).toEqual(['FINALIZED', 'finance', true]);
    const mail = await mailTo(billingEmail);
    expect(mail.map((m) => m.subject)).toEqual([`Your invoice for ${start.slice(0, 10)} to ${end.slice(0, 10)}: $3.02`]);
  });

  test('a terminated invoice close is started again: its period is never skipped', async () => {
    const now = new Date(await env.currentTimeMs());
    const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
    const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString();
    const billingEmail = `${uniqueName('term')}@skipping.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: start, endingBefore: end, price: '2', billingEmail, terms: { renewal_notice_days: 0 } });
    await s.ingest([{ id: '1', at: start, seconds: 7 }]);
    const invoiceId = invoiceIdFor(s.contractId, start);
    const graceMs = 3_600_000;
    const taskQueue = uniqueName('wf');
    const worker = await Worker.create({
      connection: env.nativeConnection, taskQueue, workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'),
      activities: createActivities({ orm, mailer, invoiceGracePeriodMs: graceMs }),
    });
    await worker.runUntil(async () => {
      const contract = await env.client.workflow.start(contractWorkflow, { workflowId: contractWorkflowId(s.contractId), taskQueue, args: [{ contractId: s.contractId }] });
      const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceId));
      await skipToClose(close, Date.parse(end) + graceMs);
      const firstRun = (await close.describe()).runId;
      await close.terminate('operator mistake');

      // The contract's workflow finds the period open and its close not running: it starts it
      // again (at the latest by its daily sweep; a real server also reports the termination to the
      // parent, which restarts it a minute later — the time-skipping server does not).
      await env.sleep('25 hours');
      const again = await waitFor(async () => {
        const d = await env.client.workflow.getHandle(invoiceWorkflowId(invoiceId)).describe();
        return d.runId !== firstRun && d.status.name === 'RUNNING' && (await close.query(invoiceCloseStageQuery)) === 'AWAITING_APPROVAL' ? d : undefined;
      });
      expect(again.runId).not.toBe(firstRun);
      expect(await contract.query(contractStateQuery)).toMatchObject({ state: 'ACTIVE', restartedCloses: 1, unclosedPeriods: [start] });
      await approve(close, '14');
      await contract.result();
    });
    const inv = await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId });
    expect([inv.status, inv.total, !!inv.emailedAt]).toEqual(['FINALIZED', '14', true]);
    expect(await mailTo(billingEmail)).toHaveLength(1);
  });

  test('an ended contract with no renewal bills late usage on an invoice of its own once the ingest window has passed', async () => {
    const now = new Date(await env.currentTimeMs());
    const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
    const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString();
    const billingEmail = `${uniqueName('late')}@skipping.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: start, endingBefore: end, price: '1', billingEmail, terms: { renewal_notice_days: 0 } });
    await s.ingest([{ id: '1', at: start, seconds: 40 }]);
    const invoiceId = invoiceIdFor(s.contractId, start);
    const lateId = lateUsageInvoiceId(s.contractId);
    const graceMs = 3_600_000;
    const taskQueue = uniqueName('wf');
    const worker = await Worker.create({
      connection: env.nativeConnection, taskQueue, workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'),
      activities: createActivities({ orm, mailer, invoiceGracePeriodMs: graceMs, lateUsageWindowMs: 34 * 86_400_000 }),
    });
    await worker.runUntil(async () => {
      const contract = await env.client.workflow.start(contractWorkflow, { workflowId: contractWorkflowId(s.contractId), taskQueue, args: [{ contractId: s.contractId }] });
      const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceId));
      await skipToClose(close, Date.parse(end) + graceMs);
      await approve(close, '40');
      // The period is final; then an event of it arrives late.
      await s.ingest([{ id: 'late', at: new Date(Date.parse(end) - 60_000).toISOString(), seconds: 2 }]);
      await waitFor(async () => ((await contract.query(contractStateQuery)).state === 'ENDED' ? true : undefined));
      expect(await orm.em.fork().findOne(Invoice, { id: lateId })).toBeNull(); // not before the window has passed
      const lateClose = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(lateId));
      await skipToClose(lateClose, Date.parse(end) + 34 * 86_400_000 + graceMs);
      const late = await orm.em.fork().findOneOrFail(Invoice, { id: lateId });
      expect([late.status, late.total, late.lineItems.map((l) => `${l.type}:${l.corrected_invoice_id}:${l.total}`)]).toEqual(['DRAFT', '2', [`correction:${invoiceId}:2`]]);
      await approve(lateClose, '2');
      expect(await lateClose.result()).toMatchObject({ status: 'FINALIZED', total: '2' });
      await contract.result(); // ends once its late-usage invoice is final
    });
    expect((await mailTo(billingEmail)).map((m) => m.subject)).toHaveLength(2);
  });

  /**
   * Finance approves. The time-skipping test server now and then answers a fresh update with
   * "update … not found" (seen under load); the update is idempotent at the workflow, so retry that.
   */
  async function approve(close: { executeUpdate: (u: typeof approveInvoiceUpdate, o: { args: [{ approvedBy: string; total: string }] }) => Promise<unknown> }, total: string) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await close.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total }] });
      } catch (err) {
        // A retry after an update that did land finds the close past approval: that is the success.
        if (attempt > 1 && err instanceof WorkflowUpdateFailedError && /not awaiting approval/.test(String(err.cause?.message))) return undefined;
        if (attempt >= 5 || !(err instanceof WorkflowNotFoundError) || !/update .* not found/.test(err.message)) throw err;
      }
    }
  }

  /** Skips time to the close and waits until the period's invoice awaits approval. */
  async function skipToClose(close: { query: (q: typeof invoiceCloseStageQuery) => Promise<string> }, closeAtMs: number): Promise<void> {
    await env.sleep(closeAtMs - (await env.currentTimeMs()) + 1000);
    await waitFor(async () => (await close.query(invoiceCloseStageQuery).catch(() => undefined)) === 'AWAITING_APPROVAL' || undefined);
  }

  async function waitFor<T>(probe: () => Promise<T | undefined>): Promise<T> {
    let last: unknown;
    for (let i = 0; i < 200; i++) {
      try {
        const v = await probe();
        if (v) return v;
      } catch (err) { last = err; }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`condition not reached: ${String(last)}`);
  }
});
