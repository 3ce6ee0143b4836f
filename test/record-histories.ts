import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createCollectorActivities } from '../activities/collector-activities.js';
import { createActivities } from '../activities/index.js';
import { Contract, Customer, UsageCollector } from '../db/entities.js';
import { insertEvents } from '../db/events.js';
import { invoiceIdFor, newId } from '../db/ids.js';
import { lateUsageInvoiceId } from '../db/invoices.js';
import { insertMetric } from '../db/metrics.js';
import { recordPayment } from '../db/payments.js';
import { enqueueNotification } from '../db/notifications.js';
import { createWebhookEndpoint } from '../db/webhooks.js';
import { ratePass, ratingBacklog } from '../db/rating.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { ROOT, SEARCH_ATTRIBUTES } from '../stack/config.js';
import { contractChangedSignal, contractStateQuery, contractWorkflow, invoicePaymentChangedSignal, lifecycleStateQuery } from '../workflows/contract.js';
import { approveInvoiceUpdate, invoiceCloseStageQuery, invoiceCloseWorkflow, rejectInvoiceUpdate } from '../workflows/invoice-close.js';
import { metricBackfillWorkflow } from '../workflows/metric-backfill.js';
import { notificationWorkflow } from '../workflows/notification.js';
import { outboundWorkflow } from '../workflows/outbound.js';
import { ratingWorkflow } from '../workflows/rating.js';
import { contractWorkflowId, invoiceWorkflowId, metricBackfillWorkflowId, notificationWorkflowId, outboundWorkflowId, ratingWorkflowId } from '../workflows/search-attributes.js';
import { usageCollectorWorkflow } from '../workflows/usage-collector.js';
import { eventPartitionsWorkflow } from '../workflows/event-partitions.js';
import { seedContract } from './db-fixtures.js';
import { writeHistoryFile } from './history-files.js';
import { createTestDatabase, eventually, monthStart, testStack, uniqueName } from './stack.js';
import { startWebhookReceiver } from './webhook-receiver.js';
import { saveBillingConfig } from '../db/stripe.js';
import { Invoice } from '../db/entities.js';
import { dunningWorkflow, stripeVoidWorkflow } from '../workflows/dunning.js';
import { commitPaymentWorkflow, rechargeWorkflow } from '../workflows/recharge.js';
import { holdGatedCommit } from '../db/recharge.js';
import { USD_CENTS } from '../billing/money.js';
import { commitPaymentWorkflowId, dunningWorkflowId, rechargeWorkflowId, stripeVoidWorkflowId } from '../workflows/search-attributes.js';
import { STRIPE_KEY, stripeCustomer, testStripe } from './stripe/fixtures.js';
import { loadHubSpotSettings } from '../stack/config.js';
import { crmChangedSignal, crmDealWorkflow, crmSyncStatusQuery, crmSyncWorkflow, dealChangedSignal } from '../workflows/crm.js';
import { crmDealWorkflowId, crmSyncWorkflowId } from '../workflows/search-attributes.js';
import { startHubSpotFake, type HubSpotFake } from './hubspot/server.js';

/**
 * `npm run record:histories`: runs every workflow type through its representative paths on the
 * Temporal dev server (the lifecycle's day-long timers on the time-skipping test server), with the real activities on real PostgreSQL and SMTP (the servers of
 * test/global-setup.mjs), and writes each history to test/histories/ for test/replay.test.ts.
 * Not part of `npm test` (jest runs it through --testMatch). Each file is named
 * `<workflowType>-<scenario>-<label>.json`; the label is ACCRUE_HISTORY_LABEL or the commit the
 * workflow code is at, and an existing file is never overwritten (test/histories/README.md).
 */
const label = process.env.ACCRUE_HISTORY_LABEL ?? commitOfWorkflowCode();

function commitOfWorkflowCode(): string {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  if (git('status', '--porcelain', '--', 'workflows', 'billing')) {
    throw new Error('workflows/ or billing/ has uncommitted changes: commit them first, or name the build with ACCRUE_HISTORY_LABEL');
  }
  return git('rev-parse', '--short=8', 'HEAD');
}

describe(`record workflow histories (label ${label})`, () => {
  let orm: MikroORM;
  let mailer: Mailer;
  let connection: Connection;
  let client: Client;
  let worker: Worker;
  let running: Promise<void>;
  let hubspot: HubSpotFake;
  const taskQueue = uniqueName('record');
  const recorded: string[] = [];

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    orm = (await createTestDatabase('histories')).orm;
    mailer = createSmtpMailer(testStack().smtpUrl, 'Accrue Billing <billing@accrue.local>');
    connection = await Connection.connect({ address: testStack().temporalAddress });
    client = new Client({ connection });
    hubspot = await startHubSpotFake({ token: 'pat-record', clientSecret: 'record-secret' });
    worker = await Worker.create({
      connection: await NativeConnection.connect({ address: testStack().temporalAddress }),
      taskQueue,
      workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'), // the build `npm test` made: what replay.test.ts replays against
      // Ended contracts bill late usage at once here (no late-usage wait); collectors keep the
      // default ingest window (ACCRUE_INGEST_MAX_AGE, 34 days), which their rows are held to.
      activities: { ...createActivities({ orm, mailer, invoiceGracePeriodMs: 1000, lateUsageWindowMs: 0, webhooks: { allowPrivate: true }, stripe: { secretKey: STRIPE_KEY, apiBase: testStack().stripeApiBase, dunningScheduleMs: [500, 500] },
        hubspot: loadHubSpotSettings({ HUBSPOT_ACCESS_TOKEN: hubspot.token, HUBSPOT_API_BASE: hubspot.url, HUBSPOT_CLIENT_SECRET: hubspot.clientSecret, ACCRUE_HUBSPOT_COALESCE: '100ms', ACCRUE_HUBSPOT_SYNC_INTERVAL: '1s' }) }),
        ...createCollectorActivities({ orm, mailer, invoiceGracePeriodMs: 1000, lateUsageWindowMs: 34 * 86_400_000 }) },
    });
    running = worker.run();
  });
  afterAll(async () => {
    worker?.shutdown();
    await running;
    await connection?.close();
    mailer?.close();
    await hubspot?.close();
    await orm?.close();
    process.stderr.write(`[accrue] recorded ${recorded.length} histories into test/histories/:\n  ${recorded.join('\n  ')}\n`);
  });

  const save = async (handle: WorkflowHandle, workflowType: string, scenario: string) => {
    const history = await handle.fetchHistory();
    recorded.push(`${writeHistoryFile(workflowType, scenario, label, history)} (${history.events?.length} events)`);
  };

  test('contract: backdated, two periods closed (one approved, one rejected then approved), end date moved by contractChanged, late usage billed', async () => {
    const billingEmail = `${uniqueName('rec')}@histories.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: monthStart(-2), endingBefore: monthStart(1), price: '2', billingEmail });
    await s.ingest([{ id: 'a', at: monthStart(-2), seconds: 10 }, { id: 'b', at: monthStart(-1), seconds: 3 }]);
    const contract = await client.workflow.start(contractWorkflow, { workflowId: contractWorkflowId(s.contractId), taskQueue, args: [{ contractId: s.contractId }] });
    const [first, second] = [monthStart(-2), monthStart(-1)].map((start) => client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceIdFor(s.contractId, start)))) as [WorkflowHandle<typeof invoiceCloseWorkflow>, WorkflowHandle<typeof invoiceCloseWorkflow>];
    await awaitingApproval(first);
    await awaitingApproval(second);

    await first.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total: '20' }] });
    await second.executeUpdate(rejectInvoiceUpdate, { args: [{ reason: 'check the usage', rejectedBy: 'finance' }] });
    await awaitingApproval(second);
    await second.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total: '6' }] });
    await Promise.all([first.result(), second.result()]);
    await save(first, 'invoiceCloseWorkflow', 'approved');
    await save(second, 'invoiceCloseWorkflow', 'rejected-then-approved');

    // A late event of a finalized period; then the contract ends (end date moved back, as the API's
    // updateEndDate does) and bills it on its late-usage invoice.
    await s.ingest([{ id: 'late', at: new Date(Date.parse(monthStart(-1)) + 3_600_000).toISOString(), seconds: 1 }]);
    await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { endingBefore: new Date(monthStart(0)) });
    await contract.signal(contractChangedSignal);
    const late = client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(lateUsageInvoiceId(s.contractId)));
    await awaitingApproval(late);
    await late.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total: '2' }] });
    await contract.result();
    await save(contract, 'contractWorkflow', 'backdated-changed-late-usage');
  });

  test('contract: 25 backdated periods continue as new after 24 closes; the next run sweeps the open closes', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: monthStart(-25), endingBefore: monthStart(1), price: '1' });
    const contract = await client.workflow.start(contractWorkflow, { workflowId: contractWorkflowId(s.contractId), taskQueue, args: [{ contractId: s.contractId }] });
    const firstRunId = contract.firstExecutionRunId;
    // The second run closes the 25th period, sweeps the 24 it did not just start (running: left
    // alone) and sleeps.
    const last = client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceIdFor(s.contractId, monthStart(-1))));
    await awaitingApproval(last);
    await eventually('the second run to sweep and sleep until the next period', async () => {
      const state = await contract.query(contractStateQuery);
      expect([state.nextPeriodIndex, state.unclosedPeriods.length]).toEqual([25, 25]);
      // The sweep is over once the run waits on its timer (the nap until the next sweep or close).
      const events = (await contract.fetchHistory()).events ?? [];
      expect(events.filter((e) => e.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED)).toHaveLength(24);
      expect(events.some((e) => e.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_TIMER_STARTED)).toBe(true);
    });
    await save(client.workflow.getHandle(contract.workflowId, firstRunId), 'contractWorkflow', 'continued-as-new-after-24');
    await save(client.workflow.getHandle(contract.workflowId), 'contractWorkflow', 'second-run-sleeping');
    await contract.terminate('recorded');
    for (let m = -25; m < 0; m++) await client.workflow.getHandle(invoiceWorkflowId(invoiceIdFor(s.contractId, monthStart(m)))).terminate('recorded');
  });

  test('stripe: a close whose card payment is declined starts dunning, which runs out; the voided invoice is voided at Stripe', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: monthStart(-1), price: '3', billingEmail: `${uniqueName('rec')}@histories.test`, terms: { approval_policy: { mode: 'NEVER' } } as never });
    await saveBillingConfig(orm.em.fork(), { customerId: s.customerId, providerCustomerId: await stripeCustomer(testStripe(), 'declines'), collectionMethod: 'charge_automatically' });
    await s.ingest([{ id: 'a', at: new Date(Date.parse(monthStart(-1)) + 3_600_000).toISOString(), seconds: 10 }]);
    const invoiceId = invoiceIdFor(s.contractId, monthStart(-1));
    const close = await client.workflow.start(invoiceCloseWorkflow, { workflowId: invoiceWorkflowId(invoiceId), taskQueue, args: [{ invoiceId, contractId: s.contractId, periodStart: monthStart(-1), periodEnd: monthStart(0) }] });
    await close.result();
    await save(close, 'invoiceCloseWorkflow', 'stripe-payment-declined');
    const dunning = client.workflow.getHandle<typeof dunningWorkflow>(dunningWorkflowId(invoiceId));
    expect((await dunning.result()).status).toBe('EXHAUSTED');
    await save(dunning, 'dunningWorkflow', 'exhausted');
    await orm.em.fork().nativeUpdate(Invoice, { id: invoiceId }, { status: 'VOID', voidedAt: new Date() });
    const voided = await client.workflow.start(stripeVoidWorkflow, { workflowId: stripeVoidWorkflowId(invoiceId), taskQueue, args: [{ invoiceId }] });
    expect(await voided.result()).toBe('VOID');
    await save(voided, 'stripeVoidWorkflow', 'voided');
  });

  test('recharge: paid through Stripe, then granted', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: monthStart(0), price: '1' });
    await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { prepaid_balance_threshold_configuration: { commit: { product_id: s.productId }, is_enabled: true, payment_gate_config: { payment_gate_type: 'STRIPE' }, threshold_amount: '100', recharge_to_amount: '500' } } });
    await saveBillingConfig(orm.em.fork(), { customerId: s.customerId, providerCustomerId: await stripeCustomer(testStripe(), 'pays'), collectionMethod: 'charge_automatically' });
    await orm.em.fork().execute(`insert into recharge (contract_id, kind, n, customer_id, amount, balance_before, status) values (?, 'prepaid', 1, ?, 500, 0, 'PENDING')`, [s.contractId, s.customerId]);
    const handle = await client.workflow.start(rechargeWorkflow, { workflowId: rechargeWorkflowId(s.contractId, 1), taskQueue, args: [{ contractId: s.contractId, n: 1 }] });
    expect(await handle.result()).toBe('GRANTED');
    await save(handle, 'rechargeWorkflow', 'granted');

    const grantId = newId();
    await orm.em.fork().transactional((tx) => holdGatedCommit(tx, {
      id: grantId, customerId: s.customerId, contractId: s.contractId, kind: 'PREPAID', productId: s.productId, name: 'Gated', description: null, priority: 0,
      applicableProductIds: null, applicableProductTags: null, applicableContractIds: null, specifiers: null,
      accessSchedule: { credit_type_id: USD_CENTS.id, schedule_items: [{ id: newId(), amount: '700', starting_at: monthStart(0), ending_before: monthStart(12) }] },
      invoiceSchedule: null, invoiceContractId: null, rolloverFraction: null, rateType: null, customFields: {}, uniquenessKey: null, externalIds: null, amendmentId: null,
      rolledOver: null, rolledOverFrom: null, createdAt: new Date(), archivedAt: null,
    }));
    const gated = await client.workflow.start(commitPaymentWorkflow, { workflowId: commitPaymentWorkflowId(grantId), taskQueue, args: [{ grantId }] });
    expect(await gated.result()).toBe('GRANTED');
    await save(gated, 'commitPaymentWorkflow', 'granted');

    // Without a payment gate: granted at once, billed on its own invoice, whose close it starts.
    const free = await seedContract(orm.em.fork(), { startingAt: monthStart(0), price: '1' });
    await orm.em.fork().nativeUpdate(Contract, { id: free.contractId }, { terms: { approval_policy: { mode: 'NEVER' }, prepaid_balance_threshold_configuration: { commit: { product_id: free.productId }, is_enabled: true, payment_gate_config: { payment_gate_type: 'NONE' }, threshold_amount: '100', recharge_to_amount: '500' } } });
    await orm.em.fork().execute(`insert into recharge (contract_id, kind, n, customer_id, amount, balance_before, status) values (?, 'prepaid', 1, ?, 500, 0, 'PENDING')`, [free.contractId, free.customerId]);
    const billed = await client.workflow.start(rechargeWorkflow, { workflowId: rechargeWorkflowId(free.contractId, 1), taskQueue, args: [{ contractId: free.contractId, n: 1 }] });
    expect(await billed.result()).toBe('GRANTED');
    await save(billed, 'rechargeWorkflow', 'granted-and-billed');
  });

  test('rating: a run of 50 rateEvents continues as new', async () => {
    const handle = await client.workflow.start(ratingWorkflow, { workflowId: ratingWorkflowId(taskQueue), taskQueue, args: [{ runForMs: 20 }] });
    const firstRun = client.workflow.getHandle(handle.workflowId, handle.firstExecutionRunId);
    await eventually('the first run to continue as new', async () => expect((await firstRun.describe()).status.name).toBe('CONTINUED_AS_NEW'));
    await save(firstRun, 'ratingWorkflow', 'continued-as-new');
    await handle.terminate('recorded');
  });

  test('outbound: a run of 50 runOutbound continues as new', async () => {
    const handle = await client.workflow.start(outboundWorkflow, { workflowId: outboundWorkflowId(taskQueue), taskQueue, args: [{ runForMs: 20 }] });
    const firstRun = client.workflow.getHandle(handle.workflowId, handle.firstExecutionRunId);
    await eventually('the first run to continue as new', async () => expect((await firstRun.describe()).status.name).toBe('CONTINUED_AS_NEW'));
    await save(firstRun, 'outboundWorkflow', 'continued-as-new');
    await handle.terminate('recorded');
  });

  test('notification: delivered after a 500 (with the alert email); given up on a receiver that never answers 200', async () => {
    const receiver = await startWebhookReceiver();
    try {
      let first = true;
      receiver.answerWith((w) => (w.properties.note === 'flaky' && first ? ((first = false), 500) : w.properties.note === 'dead' ? 503 : 200));
      const em = orm.em.fork();
      const customerId = newId();
      em.create(Customer, { id: customerId, name: 'notified', billingEmail: `${uniqueName('rec')}@histories.test`, customFields: {}, createdAt: new Date(), updatedAt: new Date() });
      await em.flush();
      const endpoint = await createWebhookEndpoint(orm.em.fork(), { url: receiver.url, eventTypes: null });
      const retry = { initialMs: 100, maxIntervalMs: 200, forMs: 1500 };
      for (const note of ['flaky', 'dead']) {
        const { id } = await enqueueNotification(orm.em.fork(), {
          type: 'alerts.spend_threshold_reached', dedupKey: uniqueName('rec-notification'), customerId,
          properties: { customer_id: customerId, alert_id: newId(), alert_name: 'spend', alert_type: 'spend_threshold_reached', threshold: 100, value: '150', timestamp: new Date().toISOString(), note },
        });
        await orm.em.fork().execute(`insert into webhook_delivery (notification_id, endpoint_id) values (?, ?)`, [id, endpoint.id]);
        const handle = await client.workflow.start(notificationWorkflow, { workflowId: notificationWorkflowId(id), taskQueue, args: [{ notificationId: id, endpointIds: [endpoint.id], email: note === 'flaky', retry }] });
        expect(await handle.result()).toEqual(note === 'flaky' ? { delivered: 1, failed: 0 } : { delivered: 0, failed: 1 });
        await save(handle, 'notificationWorkflow', note === 'flaky' ? 'delivered-after-500-with-email' : 'gave-up');
      }
    } finally {
      await receiver.close();
    }
  });

  test('metric backfill: two runs continue as new, the third completes', async () => {
    const customerId = newId();
    const em = orm.em.fork();
    em.create(Customer, { id: customerId, name: 'backfilled', customFields: {}, createdAt: new Date(), updatedAt: new Date() });
    await em.flush();
    for (let t = 0; t < 5; t++) {
      await insertEvents(orm.em.fork(), Array.from({ length: 2 }, (_, i) => ({
        transactionId: `rec-bf-${customerId}-${t}-${i}`, customerId, eventType: 'job', timestamp: new Date(Date.UTC(2026, 10, 1, t)).toISOString(), properties: { n: t + i },
      })));
    }
    await eventually('the events to be rated', async () => {
      await ratePass(orm.em.fork(), 1000);
      if (await ratingBacklog(orm.em.fork())) throw new Error('backlog');
    }, 30_000);
    const metricId = newId();
    await insertMetric(orm.em.fork(), { id: metricId, name: 'n', aggregationType: 'SUM', aggregationKey: 'n', eventTypeFilter: { in_values: ['job'] }, propertyFilters: [], groupKeys: [], customFields: {} });
    const handle = await client.workflow.start(metricBackfillWorkflow, { workflowId: metricBackfillWorkflowId(metricId), taskQueue, args: [{ metricId, chunksPerRun: 2, chunkEvents: 2 }] });
    const out = await handle.result();
    expect(out.processed).toBeGreaterThanOrEqual(10);
    await save(client.workflow.getHandle(handle.workflowId, handle.firstExecutionRunId), 'metricBackfillWorkflow', 'continued-as-new');
    await save(client.workflow.getHandle(handle.workflowId), 'metricBackfillWorkflow', 'done');
  });

  test('usage collector: one run collects two hourly windows from a source database', async () => {
    const hourMs = 3_600_000;
    const thisHour = Math.floor(Date.now() / hourMs) * hourMs;
    const name = uniqueName('rec_source').toLowerCase();
    const reader = uniqueName('rec_reader').toLowerCase();
    const admin = new pg.Client({ connectionString: testStack().postgresUrl });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    const sourceUrl = testStack().postgresUrl.replace(/\/[^/]+$/, `/${name}`);
    const source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    try {
      await source.query('create table api_calls (tenant text not null, at timestamptz not null, calls int not null)');
      for (let h = 1; h <= 2; h++) await source.query('insert into api_calls values ($1, $2, $3)', ['tenant-a', new Date(thisHour - h * hourMs + 60_000), h]);
      await source.query(`create role ${reader} login password 'reader-pw'`);
      await source.query(`grant select on api_calls to ${reader}`);
      const u = new URL(sourceUrl);
      u.username = reader;
      u.password = 'reader-pw';
      const collectorId = newId();
      const em = orm.em.fork();
      em.create(UsageCollector, {
        id: collectorId, name: 'api calls', sourceUrl: u.toString(), eventType: 'api_usage', intervalSeconds: 3600, collectedUntil: new Date(thisHour - 2 * hourMs), createdAt: new Date(),
        query: 'select tenant as customer_id, $1::timestamptz as timestamp, sum(calls) as calls from api_calls where at >= $1 and at < $2 group by tenant',
      });
      await em.flush();
      const handle = await client.workflow.start(usageCollectorWorkflow, { workflowId: uniqueName('usage-collector-run'), taskQueue, args: [{ collectorId }] });
      expect(await handle.result()).toEqual({ windows: 2, events: 2 });
      await save(handle, 'usageCollectorWorkflow', 'two-windows');
    } finally {
      await source.end();
    }
  });

  test('event partitions: one run of the schedule\'s upkeep', async () => {
    const handle = await client.workflow.start(eventPartitionsWorkflow, { workflowId: uniqueName('event-partitions-run'), taskQueue, args: [] });
    expect((await handle.result()).retired).toEqual([]);
    await save(handle, 'eventPartitionsWorkflow', 'upkeep');
  });

  test('crm: a closed-won deal becomes a contract; a bad deal is noted and fails; the customer sync pushes on a change and on its interval', async () => {
    const { rateCardId } = await seedContract(orm.em.fork(), { startingAt: monthStart(-1), price: '1' });
    const company = hubspot.create('companies', { name: 'Recorded Co', accrue_billing_email: 'ap@recorded.test' });
    const good = hubspot.create('deals', { dealname: 'Recorded deal', dealstage: 'closedwon', hubspot_owner_id: '1', accrue_rate_card: rateCardId, accrue_start_date: monthStart(0), accrue_term_months: '12' });
    const bad = hubspot.create('deals', { dealname: 'Bad deal', dealstage: 'closedwon', accrue_start_date: monthStart(0) });
    for (const d of [good, bad]) hubspot.associate('deals', d.id, 'companies', company.id);
    const deal = await client.workflow.signalWithStart(crmDealWorkflow, { workflowId: crmDealWorkflowId(good.id), taskQueue, args: [{ dealId: good.id }], signal: dealChangedSignal });
    const outcome = await deal.result();
    expect(outcome).toMatchObject({ status: 'CREATED' });
    await save(deal, 'crmDealWorkflow', 'contract-created');
    const failing = await client.workflow.signalWithStart(crmDealWorkflow, { workflowId: crmDealWorkflowId(bad.id), taskQueue, args: [{ dealId: bad.id }], signal: dealChangedSignal });
    await expect(failing.result()).rejects.toThrow();
    await save(failing, 'crmDealWorkflow', 'invalid-noted');
    const customerId = (outcome as { customerId: string }).customerId;
    const sync = client.workflow.getHandle<typeof crmSyncWorkflow>(crmSyncWorkflowId(customerId));
    await eventually('pushed on start and on its interval', async () => expect((await sync.query(crmSyncStatusQuery)).pushes).toBeGreaterThanOrEqual(2), 30_000);
    await sync.signal(crmChangedSignal, { reason: 'recorded change' });
    const before = (await sync.query(crmSyncStatusQuery)).pushes;
    await eventually('pushed after the change', async () => expect((await sync.query(crmSyncStatusQuery)).pushes).toBeGreaterThan(before), 30_000);
    await save(sync, 'crmSyncWorkflow', 'pushes');
    await sync.terminate('recorded');
  });

  /**
   * The lifecycle's timers (a trial's end, days in arrears) on the time-skipping test server, one
   * server per scenario, with the same real activities.
   */
  describe('contract lifecycle (time-skipping)', () => {
    const DAY = 86_400_000;
    const HOUR = 3_600_000;
    let env: TestWorkflowEnvironment;
    beforeEach(async () => {
      const path = process.env.ACCRUE_TEMPORAL_TEST_SERVER_BIN;
      if (!path) throw new Error('ACCRUE_TEMPORAL_TEST_SERVER_BIN is not set: run npm run record:histories');
      env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path } } });
      await env.connection.operatorService.addSearchAttributes({
        namespace: env.namespace ?? 'default',
        searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((k) => [k, temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD])),
      });
    });
    afterEach(async () => {
      await env?.teardown();
    });
    const lifecycleWorker = (tq: string) => Worker.create({
      connection: env.nativeConnection, taskQueue: tq, workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'),
      activities: createActivities({ orm, mailer, invoiceGracePeriodMs: HOUR, lateUsageWindowMs: 0, lifecycle: { financeEmail: `${uniqueName('finance')}@histories.test`, trialReminderDays: 3 } }),
      shutdownGraceTime: '1 second',
    });
    const skipTo = async (atMs: number) => {
      const wait = atMs - (await env.currentTimeMs());
      if (wait > 0) await env.sleep(wait);
    };
    const lifecycle = async (h: WorkflowHandle<typeof contractWorkflow>) => h.query(lifecycleStateQuery);

    test('contract: a trial that expires without converting ends the contract (TRIAL_ENDED, contract ended at the trial end)', async () => {
      const start = Math.floor((await env.currentTimeMs()) / HOUR) * HOUR;
      const s = await seedContract(orm.em.fork(), {
        startingAt: new Date(start).toISOString(), endingBefore: new Date(start + 90 * DAY).toISOString(), price: '1',
        billingEmail: `${uniqueName('rec')}@histories.test`, terms: { trial_spec: { length_in_days: 7 } },
      });
      const tq = uniqueName('record-life');
      await (await lifecycleWorker(tq)).runUntil(async () => {
        const h = await env.client.workflow.start(contractWorkflow, { workflowId: contractWorkflowId(s.contractId), taskQueue: tq, args: [{ contractId: s.contractId }] });
        await eventually('the trial to start', async () => expect((await lifecycle(h)).state).toBe('TRIAL'));
        await skipTo(start + 7 * DAY + 2 * HOUR);
        await eventually('the trial to end unconverted', async () => expect((await lifecycle(h)).state).toBe('ENDED'));
        const c = await orm.em.fork().findOneOrFail(Contract, { id: s.contractId });
        expect(c.endingBefore?.toISOString()).toBe(new Date(start + 7 * DAY).toISOString());
        // The trial's one period closes (waiting for approval); the run waits for it.
        const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceIdFor(s.contractId, new Date(start).toISOString())));
        await eventually('the trial period to close', async () => expect(await close.query(invoiceCloseStageQuery)).toBe('AWAITING_APPROVAL'));
        await eventually('the run to wait for the trial invoice', async () => expect((await h.query(contractStateQuery)).unclosedPeriods).toHaveLength(1));
        await save(h, 'contractWorkflow', 'trial-expired');
        await h.terminate('recorded');
        await close.terminate('recorded');
      });
    });

    test('contract: an invoice unpaid at its due date keeps the contract in ARREARS for three days, then a payment ends it', async () => {
      const d = new Date(await env.currentTimeMs());
      const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1);
      const s = await seedContract(orm.em.fork(), {
        startingAt: new Date(start).toISOString(), price: '3', billingEmail: `${uniqueName('rec')}@histories.test`, terms: { net_payment_terms_days: 1 },
      });
      await s.ingest([{ id: '1', at: new Date(start).toISOString(), seconds: 100 }]);
      const invoiceId = invoiceIdFor(s.contractId, new Date(start).toISOString());
      const tq = uniqueName('record-life');
      await (await lifecycleWorker(tq)).runUntil(async () => {
        const h = await env.client.workflow.start(contractWorkflow, { workflowId: contractWorkflowId(s.contractId), taskQueue: tq, args: [{ contractId: s.contractId }] });
        const close = env.client.workflow.getHandle<typeof invoiceCloseWorkflow>(invoiceWorkflowId(invoiceId));
        await eventually('the past period to await approval', async () => expect(await close.query(invoiceCloseStageQuery)).toBe('AWAITING_APPROVAL'));
        await close.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total: '300' }] });
        await close.result();
        const finalizedAt = (await orm.em.fork().findOneOrFail(Invoice, { id: invoiceId })).finalizedAt!.getTime();
        await skipTo(finalizedAt + DAY + HOUR);
        await eventually('the contract to enter arrears', async () => expect((await lifecycle(h)).state).toBe('ARREARS'));
        // Three days in arrears (histories before the lifecycle-order patch wake each day here).
        await skipTo(finalizedAt + 4 * DAY + 2 * HOUR);
        expect((await lifecycle(h)).state).toBe('ARREARS');
        await recordPayment(orm.em.fork(), { invoiceId, amount: '300', reference: 'wire-1', recordedBy: 'finance' });
        await h.signal(invoicePaymentChangedSignal);
        await eventually('the payment to end the arrears', async () => expect((await lifecycle(h)).state).toBe('ACTIVE'));
        await save(h, 'contractWorkflow', 'arrears-three-days-then-paid');
        await h.terminate('recorded');
      });
    });
  });

  /** Waits until the close's stage query answers AWAITING_APPROVAL. */
  async function awaitingApproval(close: WorkflowHandle<typeof invoiceCloseWorkflow>): Promise<void> {
    await eventually(`${close.workflowId} to await approval`, async () => expect(await close.query(invoiceCloseStageQuery)).toBe('AWAITING_APPROVAL'));
  }
});

