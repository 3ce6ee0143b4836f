import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { MikroORM } from '@mikro-orm/postgresql';
import { temporal } from '@temporalio/proto';
import { createActivities, type Activities } from '../activities/index.js';
import type { ContractTerms } from '../billing/contract-terms.js';
import { Contract, Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { lifecycleView } from '../db/lifecycle.js';
import { recordPayment } from '../db/payments.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { ROOT, SEARCH_ATTRIBUTES } from '../stack/config.js';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, mailTo, testStack, uniqueName } from '../test/stack.js';
import { contractChangedSignal, contractWorkflow, invoicePaymentChangedSignal, lifecycleStateQuery } from './contract.js';
import { approveInvoiceUpdate, invoiceCloseStageQuery, type invoiceCloseWorkflow } from './invoice-close.js';
import { contractWorkflowId, invoiceWorkflowId } from './search-attributes.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;

/**
 * The contract lifecycle on Temporal's time-skipping test server, with the real activities on
 * real PostgreSQL and SMTP: trials convert or expire, the renewal notice comes and goes with the
 * end date, an unpaid invoice puts the contract in arrears and paying it takes it out — each
 * transition in the PostgreSQL log and each email at the SMTP server exactly once, also when the
 * worker dies between recording a transition and acknowledging it.
 */
describe('contract lifecycle (time-skipping)', () => {
  let env: TestWorkflowEnvironment;
  let orm: MikroORM;
  let mailer: Mailer;

  // One time-skipping server per test: workflows a test leaves behind (closes awaiting approval)
  // must not hold or move the next test's clock.
  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger((process.env.ACCRUE_TEST_LOG as 'WARN') ?? 'ERROR') });
    orm = (await createTestDatabase('lifecycle')).orm;
    mailer = createSmtpMailer(testStack().smtpUrl, 'Accrue Billing <billing@accrue.local>');
  });
  beforeEach(async () => {
    const path = process.env.ACCRUE_TEMPORAL_TEST_SERVER_BIN;
    if (!path) throw new Error('ACCRUE_TEMPORAL_TEST_SERVER_BIN is not set: run the tests with `npm test`');
    env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path } } });
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

  // Finance's address per test: invoices left waiting for approval by one test must not remind into another's count.
  const activities = (financeEmail = `${uniqueName('finance')}@skipping.test`) => createActivities({ orm, mailer, invoiceGracePeriodMs: HOUR, lifecycle: { financeEmail, trialReminderDays: 3 } });
  const newWorker = (taskQueue: string, acts: Activities = activities(), opts: { shutdownForceTime?: string } = {}) => Worker.create({
    connection: env.nativeConnection, taskQueue, workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'), activities: acts,
    shutdownGraceTime: '1 second', ...(opts.shutdownForceTime ? { shutdownForceTime: opts.shutdownForceTime } : {}),
  });
  const hourNow = async () => Math.floor((await env.currentTimeMs()) / HOUR) * HOUR;
  const iso = (ms: number) => new Date(ms).toISOString();
  const history = async (contractId: string) => {
    const c = await orm.em.fork().findOneOrFail(Contract, { id: contractId });
    return (await lifecycleView(orm.em.fork(), c)).history.map((h) => h.state);
  };
  const startContract = (contractId: string, taskQueue: string) => env.client.workflow.start(contractWorkflow, {
    workflowId: contractWorkflowId(contractId), taskQueue, args: [{ contractId }],
  });
  async function seed(opts: { start: number; end?: number; terms?: ContractTerms; price?: string }) {
    const billingEmail = `${uniqueName('life')}@skipping.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: iso(opts.start), ...(opts.end ? { endingBefore: iso(opts.end) } : {}), price: opts.price ?? '1', billingEmail, terms: opts.terms });
    return { ...s, billingEmail };
  }
  /** Skips to `atMs` (workflow time) and lets the workflow act on it. */
  async function skipTo(atMs: number) {
    const wait = atMs - (await env.currentTimeMs());
    if (wait > 0) await env.sleep(wait);
  }

  test('a trial with convert AUTO sends started, reminder and ended emails, then converts to ACTIVE', async () => {
    const start = await hourNow();
    const s = await seed({ start, terms: { trial_spec: { length_in_days: 14, convert: 'AUTO' } } });
    const taskQueue = uniqueName('life');
    await (await newWorker(taskQueue)).runUntil(async () => {
      const h = await startContract(s.contractId, taskQueue);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'TRIAL' || undefined);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 1 || undefined);
      expect((await h.query(lifecycleStateQuery)).nextLifecycleAt).toBe(iso(start + 11 * DAY)); // the reminder, 3 days before the end

      await skipTo(start + 11 * DAY + HOUR);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 2 || undefined);
      expect((await h.query(lifecycleStateQuery)).state).toBe('TRIAL');

      await skipTo(start + 14 * DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ACTIVE' || undefined);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 3 || undefined);
      await h.terminate('test over');
    });
    const subjects = (await mailTo(s.billingEmail)).map((m) => (m.subject ?? '').toLowerCase());
    expect(subjects).toHaveLength(3);
    expect(subjects.every((x) => x.includes('trial'))).toBe(true);
    expect(await history(s.contractId)).toEqual(['TRIAL', 'ACTIVE']);
    const contract = await orm.em.fork().findOneOrFail(Contract, { id: s.contractId });
    expect(contract.endingBefore).toBeNull(); // a converted trial keeps the contract open
  });

  test('a trial without a commit or automatic conversion ends the contract at the trial end (ENDED, access gated)', async () => {
    const start = await hourNow();
    const s = await seed({ start, end: start + 90 * DAY, terms: { trial_spec: { length_in_days: 7 } } });
    const taskQueue = uniqueName('life');
    await (await newWorker(taskQueue)).runUntil(async () => {
      const h = await startContract(s.contractId, taskQueue);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 1 || undefined);
      await skipTo(start + 7 * DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ENDED' || undefined);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 3 || undefined); // started, reminder (day 4), ended
      await h.terminate('test over');
    });
    const contract = await orm.em.fork().findOneOrFail(Contract, { id: s.contractId });
    expect(contract.endingBefore?.toISOString()).toBe(iso(start + 7 * DAY));
    expect(await history(s.contractId)).toEqual(['TRIAL', 'ENDED']);
    const log = (await lifecycleView(orm.em.fork(), contract)).history;
    expect(log[1]).toMatchObject({ from: 'TRIAL', reason: 'the trial ended' });
  });

  test('renewal notice: RENEWING renewal_notice_days before the end (customer and finance told), then ENDED at the end date', async () => {
    const start = await hourNow();
    const end = start + 20 * DAY;
    const s = await seed({ start, end, terms: { renewal_notice_days: 7 } });
    const taskQueue = uniqueName('life');
    const financeEmail = `${uniqueName('finance')}@skipping.test`;
    await (await newWorker(taskQueue, activities(financeEmail))).runUntil(async () => {
      const h = await startContract(s.contractId, taskQueue);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).nextLifecycleAt === iso(end - 7 * DAY) || undefined);
      await skipTo(end - 7 * DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'RENEWING' || undefined);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 1 || undefined);
      await waitFor(async () => (await mailTo(financeEmail)).length === 1 || undefined);
      await skipTo(end + 10 * 60_000);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ENDED' || undefined);
      await h.terminate('test over');
    });
    expect(await history(s.contractId)).toEqual(['ACTIVE', 'RENEWING', 'ENDED']);
    expect(await mailTo(s.billingEmail)).toHaveLength(1);
  });

  test('an amendment during RENEWING that moves the end date back to ACTIVE, and a new notice comes before the new end', async () => {
    const start = await hourNow();
    const end = start + 10 * DAY;
    const s = await seed({ start, end, terms: { renewal_notice_days: 5 } });
    const taskQueue = uniqueName('life');
    await (await newWorker(taskQueue)).runUntil(async () => {
      const h = await startContract(s.contractId, taskQueue);
      await skipTo(end - 5 * DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'RENEWING' || undefined);
      // Sales extends the contract by 30 days (what /v1/contracts/updateEndDate does: store, then signal).
      const em = orm.em.fork();
      const c = await em.findOneOrFail(Contract, { id: s.contractId });
      c.endingBefore = new Date(end + 30 * DAY);
      await em.flush();
      await h.signal(contractChangedSignal);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ACTIVE' || undefined);
      expect((await h.query(lifecycleStateQuery)).nextLifecycleAt).toBe(iso(end + 25 * DAY));
      await skipTo(end + 25 * DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'RENEWING' || undefined);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 2 || undefined); // one notice per end date
      await h.terminate('test over');
    });
    expect(await history(s.contractId)).toEqual(['ACTIVE', 'RENEWING', 'ACTIVE', 'RENEWING']);
  });

  test('arrears: an invoice unpaid at its due date puts the contract in ARREARS (overdue email); a partial payment keeps it there, the rest takes it out', async () => {
    const now = await env.currentTimeMs();
    const d = new Date(now);
    const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1);
    const periodEnd = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    const s = await seed({ start, terms: { net_payment_terms_days: 10 }, price: '3' });
    await s.ingest([{ id: '1', at: iso(start), seconds: 100 }]);
    const invoiceId = invoiceIdFor(s.contractId, iso(start));
    const taskQueue = uniqueName('life');
    await (await newWorker(taskQueue)).runUntil(async () => {
      const h = await startContract(s.contractId, taskQueue);
      const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceId));
      await waitFor(async () => (await close.query(invoiceCloseStageQuery).catch(() => undefined)) === 'AWAITING_APPROVAL' || undefined);
      await approve(close, '300');
      await close.result();
      const finalizedAt = (await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId })).finalizedAt!.getTime();
      await waitFor(async () => (await h.query(lifecycleStateQuery)).nextLifecycleAt === iso(finalizedAt + 10 * DAY) || undefined);
      expect((await h.query(lifecycleStateQuery)).state).toBe('ACTIVE');

      await skipTo(finalizedAt + 10 * DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ARREARS' || undefined);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 2 || undefined); // the invoice, then the overdue notice

      await recordPayment(orm.em.fork(), { invoiceId, amount: '100', reference: 'wire-1', recordedBy: 'finance' });
      await h.signal(invoicePaymentChangedSignal);
      await env.sleep(HOUR);
      expect((await h.query(lifecycleStateQuery))).toMatchObject({ state: 'ARREARS', overdue: [invoiceId] });

      await recordPayment(orm.em.fork(), { invoiceId, amount: '200', reference: 'wire-2', recordedBy: 'finance' });
      await h.signal(invoicePaymentChangedSignal);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ACTIVE' || undefined);
      await h.terminate('test over');
    });
    expect(await history(s.contractId)).toEqual(['ACTIVE', 'ARREARS', 'ACTIVE']);
    const c = await orm.em.fork().findOneOrFail(Contract, { id: s.contractId });
    const log = (await lifecycleView(orm.em.fork(), c)).history;
    expect(log.slice(1).map((t) => t.invoice_id)).toEqual([invoiceId, invoiceId]);
    expect(await mailTo(s.billingEmail)).toHaveLength(2);
    void periodEnd;
  });

  // The bad interleaving of a worker killed between two steps: the side effect (the log row, the
  // email) is done, Temporal never hears of it and runs the activity again.
  const lostAck = () => new Error('the worker died before Temporal heard of the result');

  test('a transition recorded but not acknowledged (worker died) is retried: one transition, one email', async () => {
    const start = await hourNow();
    const s = await seed({ start, terms: { trial_spec: { length_in_days: 2, convert: 'AUTO' } } });
    const taskQueue = uniqueName('life');
    const real = activities();
    let lost = 0;
    const dying: Activities = {
      ...real,
      async recordLifecycleTransition(row) {
        const out = await real.recordLifecycleTransition(row);
        if (row.state === 'ACTIVE' && row.from === 'TRIAL' && lost++ === 0) throw lostAck();
        return out;
      },
    };
    await (await newWorker(taskQueue, dying)).runUntil(async () => {
      const h = await startContract(s.contractId, taskQueue);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 1 || undefined); // trial started
      await skipTo(start + 2 * DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ACTIVE' || undefined);
      await waitFor(async () => (await mailTo(s.billingEmail)).length === 2 || undefined);
      await env.sleep(HOUR);
      await h.terminate('test over');
    });
    expect(lost).toBe(2); // the lost attempt and its retry
    expect(await history(s.contractId)).toEqual(['TRIAL', 'ACTIVE']);
    expect(await mailTo(s.billingEmail)).toHaveLength(2); // started, ended (2-day trial: no reminder)
  });

  test('an overdue email sent but not acknowledged (worker died) is not sent again', async () => {
    const now = await env.currentTimeMs();
    const d = new Date(now);
    const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1);
    const s = await seed({ start, terms: { net_payment_terms_days: 1 }, price: '2' });
    await s.ingest([{ id: '1', at: iso(start), seconds: 10 }]);
    const invoiceId = invoiceIdFor(s.contractId, iso(start));
    const taskQueue = uniqueName('life');
    const real = activities();
    let lost = 0;
    const dying: Activities = {
      ...real,
      async sendNotificationEmail(input) {
        const out = await real.sendNotificationEmail(input);
        if (input.kind === 'invoice_overdue' && lost++ === 0) throw lostAck();
        return out;
      },
    };
    await (await newWorker(taskQueue, dying)).runUntil(async () => {
      const h = await startContract(s.contractId, taskQueue);
      const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceId));
      await waitFor(async () => (await close.query(invoiceCloseStageQuery).catch(() => undefined)) === 'AWAITING_APPROVAL' || undefined);
      await approve(close, '20');
      await close.result();
      const finalizedAt = (await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId })).finalizedAt!.getTime();
      await skipTo(finalizedAt + DAY + HOUR);
      await waitFor(async () => (await h.query(lifecycleStateQuery)).state === 'ARREARS' || undefined);
      await waitFor(async () => lost >= 2 || undefined);
      await env.sleep(HOUR);
      await h.terminate('test over');
    });
    expect(await history(s.contractId)).toEqual(['ACTIVE', 'ARREARS']);
    expect(await mailTo(s.billingEmail)).toHaveLength(2); // the invoice and one overdue notice
  });

  /** Finance approves (retrying the test server's occasional spurious "update not found"). */
  async function approve(close: { executeUpdate: (u: typeof approveInvoiceUpdate, o: { args: [{ approvedBy: string; total: string }] }) => Promise<unknown> }, total: string) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await close.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total }] });
      } catch (err) {
        if (attempt > 1 && err instanceof WorkflowUpdateFailedError && /not awaiting approval/.test(String(err.cause?.message))) return undefined;
        if (attempt >= 5 || !(err instanceof WorkflowNotFoundError) || !/update .* not found/.test(err.message)) throw err;
      }
    }
  }

  async function waitFor<T>(probe: () => Promise<T | undefined>): Promise<T> {
    let last: unknown;
    for (let i = 0; i < 300; i++) {
      try {
        const v = await probe();
        if (v) return v;
      } catch (err) { last = err; }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`condition not reached: ${String(last)}`);
  }
});
