import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import type { MikroORM } from '@mikro-orm/postgresql';
import { temporal } from '@temporalio/proto';
import { createActivities } from '../activities/index.js';
import { invoiceIdFor } from '../db/ids.js';
import { dunningStates, saveBillingConfig } from '../db/stripe.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { ROOT, SEARCH_ATTRIBUTES } from '../stack/config.js';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, mailTo, monthStart, testStack, uniqueName } from '../test/stack.js';
import { STRIPE_KEY, stripeCustomer, testStripe } from '../test/stripe/fixtures.js';
import { dunningSettledSignal, type dunningWorkflow } from './dunning.js';
import { invoiceCloseWorkflow } from './invoice-close.js';
import { dunningWorkflowId, invoiceWorkflowId } from './search-attributes.js';

const DAY = 86_400_000;

/**
 * Dunning on Temporal's time-skipping test server with the real activities (PostgreSQL, SMTP,
 * localstripe) and the default schedule `1d,3d,5d,7d`: a declined card is retried after 1, 3, 5
 * and 7 more days (the workflow's timers say so), the customer is emailed after each of the five
 * attempts and finance once at the end; a payment in the middle ends it with no further attempt.
 */
describe('dunning (time-skipping, default schedule)', () => {
  let env: TestWorkflowEnvironment;
  let orm: MikroORM;
  let mailer: Mailer;
  const stripe = testStripe();

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    orm = (await createTestDatabase('dunning')).orm;
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

  async function declinedClose(taskQueue: string, finance: string) {
    const billingEmail = `${uniqueName('dun')}@skipping.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: monthStart(-1), price: '4', billingEmail, terms: { approval_policy: { mode: 'NEVER' } } as never });
    await saveBillingConfig(orm.em.fork(), { customerId: s.customerId, providerCustomerId: await stripeCustomer(stripe, 'declines'), collectionMethod: 'charge_automatically' });
    await s.ingest([{ id: 'a', at: new Date(Date.parse(monthStart(-1)) + 3_600_000).toISOString(), seconds: 25 }]);
    const worker = await Worker.create({
      connection: env.nativeConnection, taskQueue, workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'), shutdownGraceTime: '1 second',
      activities: createActivities({ orm, mailer, invoiceGracePeriodMs: 1000, lifecycle: { financeEmail: finance }, stripe: { secretKey: STRIPE_KEY, apiBase: testStack().stripeApiBase, dunningScheduleMs: [1, 3, 5, 7].map((d) => d * DAY) } }),
    });
    const invoiceId = invoiceIdFor(s.contractId, monthStart(-1));
    const close = await env.client.workflow.start(invoiceCloseWorkflow, { workflowId: invoiceWorkflowId(invoiceId), taskQueue, args: [{ invoiceId, contractId: s.contractId, periodStart: monthStart(-1), periodEnd: monthStart(0) }] });
    return { ...s, billingEmail, worker, close, invoiceId, dunning: env.client.workflow.getHandle<typeof dunningWorkflow>(dunningWorkflowId(invoiceId)) };
  }
  const attemptMails = async (to: string) => (await mailTo(to)).map((m) => m.subject ?? '').filter((s) => s.startsWith('Payment failed')).sort();

  test('a declined card: retried after 1, 3, 5 and 7 days, an email after each attempt, finance told at the end', async () => {
    const finance = `${uniqueName('finance')}@skipping.test`;
    const s = await declinedClose(uniqueName('dunning'), finance);
    const result = await s.worker.runUntil(async () => {
      await s.close.result();
      return s.dunning.result();
    });
    expect(result).toEqual({ status: 'EXHAUSTED', attempts: 5, of: 5, nextAttemptAt: null });
    const timers = ((await s.dunning.fetchHistory()).events ?? [])
      .filter((e) => e.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_TIMER_STARTED)
      .map((e) => Number(e.timerStartedEventAttributes!.startToFireTimeout!.seconds) / 86_400);
    expect(timers).toEqual([1, 3, 5, 7]);
    expect(await attemptMails(s.billingEmail)).toEqual([1, 2, 3, 4, 5].map((n) => `Payment failed: $1.00 for invoice ${s.invoiceId} (attempt ${n} of 5)`));
    expect((await mailTo(finance)).map((m) => m.subject)).toEqual([`Seeded Co: invoice ${s.invoiceId} unpaid after 5 payment attempts`]);
    expect((await dunningStates(orm.em.fork(), [s.invoiceId])).get(s.invoiceId)).toMatchObject({ status: 'EXHAUSTED', step: 5, steps: 5, nextAttemptAt: null });
    expect((await stripe.charges.list({ customer: (await stripe.invoices.list({ limit: 100 })).data.find((i) => i.metadata?.accrue_invoice_id === s.invoiceId)!.customer as string })).data).toHaveLength(5);
  });

  test('paid between attempts: dunning ends at once, no further attempt or email', async () => {
    const finance = `${uniqueName('finance')}@skipping.test`;
    const s = await declinedClose(uniqueName('dunning'), finance);
    const result = await s.worker.runUntil(async () => {
      await s.close.result();
      await env.sleep(2 * DAY); // after the first retry (day 1), before the second (day 4)
      await s.dunning.signal(dunningSettledSignal, { reason: 'PAID' });
      return s.dunning.result();
    });
    expect(result).toMatchObject({ status: 'PAID', attempts: 2 });
    expect(await attemptMails(s.billingEmail)).toHaveLength(2);
    expect(await mailTo(finance)).toHaveLength(0);
    expect((await dunningStates(orm.em.fork(), [s.invoiceId])).get(s.invoiceId)).toMatchObject({ status: 'PAID', step: 2 });
  });
});
