import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createActivities } from '../activities/index.js';
import type { ApprovalPolicy } from '../billing/approval-policy.js';
import { Contract, Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { ROOT, SEARCH_ATTRIBUTES, type LifecycleSettings } from '../stack/config.js';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, eventually, mailTo, skipTime, testStack, uniqueName } from '../test/stack.js';
import { APPROVAL_POLICY_PATCH, approveInvoiceUpdate, invoiceCloseStageQuery, invoiceCloseWorkflow, rejectInvoiceUpdate } from './invoice-close.js';
import { invoiceWorkflowId } from './search-attributes.js';

const History = temporal.api.history.v1.History;
const EventType = temporal.api.enums.v1.EventType;
const DAY = 86_400_000;
const WORKFLOWS = join(ROOT, 'dist', 'workflows', 'index.js'); // the build `npm test` made

/**
 * The invoice close's approval policy on Temporal's time-skipping server, with the real activities
 * on real PostgreSQL and SMTP: whether a frozen invoice waits for finance (contract policy, else
 * the default; change from the previous period), reminders while it waits, and the replay of a
 * close history recorded before approval policies existed.
 */
describe('invoice close: approval policy (time-skipping)', () => {
  let env: TestWorkflowEnvironment;
  let orm: MikroORM;
  let mailer: Mailer;

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    const path = process.env.ACCRUE_TEMPORAL_TEST_SERVER_BIN;
    if (!path) throw new Error('ACCRUE_TEMPORAL_TEST_SERVER_BIN is not set: run the tests with `npm test`');
    env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path } } });
    await env.connection.operatorService.addSearchAttributes({
      namespace: env.namespace ?? 'default',
      searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((k) => [k, temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD])),
    });
    orm = (await createTestDatabase('approval')).orm;
    mailer = createSmtpMailer(testStack().smtpUrl, 'Accrue Billing <billing@accrue.local>');
  });
  afterAll(async () => {
    mailer?.close();
    await orm?.close();
    await env?.teardown();
  });

  /** A seeded contract (FLAT 1 cent a second) with `seconds` of usage in each of the given months of 2026. */
  async function contract(opts: { policy?: ApprovalPolicy; months: { month: number; seconds: number }[] }) {
    const billingEmail = `${uniqueName('ap')}@policy.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00.000Z', endingBefore: '2026-07-01T00:00:00.000Z', price: '1', billingEmail });
    if (opts.policy) await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { approval_policy: opts.policy } });
    await s.ingest(opts.months.map(({ month, seconds }) => ({ id: `m${month}`, at: period(month).start, seconds })));
    return { ...s, billingEmail };
  }
  const period = (month: number) => ({
    start: new Date(Date.UTC(2026, month - 1, 1)).toISOString(),
    end: new Date(Date.UTC(2026, month, 1)).toISOString(),
  });

  async function worker(lifecycle: Partial<LifecycleSettings>) {
    const taskQueue = uniqueName('close');
    const w = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowsPath: WORKFLOWS, activities: createActivities({ orm, mailer, invoiceGracePeriodMs: 0, lifecycle }) });
    return { w, taskQueue };
  }

  function startClose(taskQueue: string, contractId: string, month: number) {
    const { start, end } = period(month);
    const invoiceId = invoiceIdFor(contractId, start);
    return env.client.workflow.start(invoiceCloseWorkflow, { workflowId: invoiceWorkflowId(invoiceId), taskQueue, args: [{ invoiceId, contractId, periodStart: start, periodEnd: end }] });
  }

  const invoice = (id: string) => orm.em.fork().findOneOrFail(Invoice, { id });

  test('NEVER: finalized and emailed right after the freeze, nobody asked; the mail has text, HTML and the PDF with the same total', async () => {
    const c = await contract({ months: [{ month: 1, seconds: 1234567 }] });
    const { w, taskQueue } = await worker({ approvalPolicy: { mode: 'NEVER' } });
    const result = await w.runUntil(async () => (await startClose(taskQueue, c.contractId, 1)).result());
    expect(result).toMatchObject({ status: 'FINALIZED', approvalStatus: 'APPROVED', total: '1234567' });
    const inv = await invoice(result.invoiceId);
    expect([inv.status, inv.approvalStatus, inv.approvedBy, !!inv.emailedAt]).toEqual(['FINALIZED', 'APPROVED', 'policy:NEVER', true]);

    const [mail] = await eventually('the invoice email', async () => {
      const m = await mailTo(c.billingEmail);
      if (!m.length) throw new Error('no mail yet');
      return m;
    });
    expect(mail!.subject).toBe('Your invoice for 2026-01-01 to 2026-02-01: $12,345.67');
    expect(mail!.text).toContain('Total:   $12,345.67');
    expect(mail!.text).toMatch(/GPU time\s+1234567\s+\$12,345\.67/);
    expect(mail!.html).toContain('<th align="right" style="padding:4px 8px;border-bottom:1px solid #ddd">$12,345.67</th>');
    expect(mail!.attachments.map((a) => [a.filename, a.contentType])).toEqual([[`invoice-${inv.id}.pdf`, 'application/pdf']]);
    const pdf = Buffer.from(mail!.attachments[0]!.contentBase64, 'base64').toString('latin1');
    expect(pdf.startsWith('%PDF-1.4')).toBe(true);
    expect(pdf).toContain('(Total: $12,345.67) Tj');
    expect(pdf).toContain(`(Invoice ${inv.id}) Tj`);
  });

  test('ALWAYS (the contract\'s, over a NEVER default): waits for finance however long it takes', async () => {
    const c = await contract({ policy: { mode: 'ALWAYS' }, months: [{ month: 1, seconds: 10 }] });
    const { w, taskQueue } = await worker({ approvalPolicy: { mode: 'NEVER' } });
    await w.runUntil(async () => {
      const close = await startClose(taskQueue, c.contractId, 1);
      await awaitingApproval(close);
      await skipTime(env, '10 days');
      expect(await close.query(invoiceCloseStageQuery)).toBe('AWAITING_APPROVAL');
      expect((await invoice(close.workflowId.slice('invoice/'.length))).status).toBe('DRAFT');
      expect(await mailTo(c.billingEmail)).toHaveLength(0);
      await approve(close, '10');
      expect(await close.result()).toMatchObject({ status: 'FINALIZED', total: '10' });
    });
  });

  test('ABOVE: waits only when the total is above the amount', async () => {
    const policy: ApprovalPolicy = { mode: 'ABOVE', amount: '50000' };
    const low = await contract({ policy, months: [{ month: 1, seconds: 50000 }] }); // exactly 500.00: not above
    const high = await contract({ policy, months: [{ month: 1, seconds: 50001 }] });
    const { w, taskQueue } = await worker({}); // default ALWAYS: the contract's policy decides
    await w.runUntil(async () => {
      expect(await (await startClose(taskQueue, low.contractId, 1)).result()).toMatchObject({ status: 'FINALIZED', total: '50000' });
      const close = await startClose(taskQueue, high.contractId, 1);
      await awaitingApproval(close);
      await skipTime(env, '2 days');
      expect(await close.query(invoiceCloseStageQuery)).toBe('AWAITING_APPROVAL');
      await approve(close, '50001');
      await close.result();
    });
    expect((await invoice(invoiceIdFor(low.contractId, period(1).start))).approvedBy).toBe('policy:ABOVE');
    expect((await invoice(invoiceIdFor(high.contractId, period(1).start))).approvedBy).toBe('finance');
  });

  test('a total that moved more than ACCRUE_APPROVAL_CHANGE_PCT from the previous period waits, even under NEVER', async () => {
    // 100 → 120 (+20 %: passes at 25 %) → 200 (+66.67 %: waits) → 160 after approval (−20 %: passes).
    const c = await contract({ months: [{ month: 1, seconds: 100 }, { month: 2, seconds: 120 }, { month: 3, seconds: 200 }, { month: 4, seconds: 160 }] });
    const { w, taskQueue } = await worker({ approvalPolicy: { mode: 'NEVER' }, approvalChangePct: '25' });
    await w.runUntil(async () => {
      expect(await (await startClose(taskQueue, c.contractId, 1)).result()).toMatchObject({ status: 'FINALIZED', total: '100' }); // no previous period
      expect(await (await startClose(taskQueue, c.contractId, 2)).result()).toMatchObject({ status: 'FINALIZED', total: '120' });
      const close = await startClose(taskQueue, c.contractId, 3);
      await awaitingApproval(close);
      await skipTime(env, '1 day');
      expect(await close.query(invoiceCloseStageQuery)).toBe('AWAITING_APPROVAL');
      await approve(close, '200');
      await close.result();
      expect(await (await startClose(taskQueue, c.contractId, 4)).result()).toMatchObject({ status: 'FINALIZED', total: '160' });
    });
    const approvers = await Promise.all([1, 2, 3, 4].map(async (m) => (await invoice(invoiceIdFor(c.contractId, period(m).start))).approvedBy));
    expect(approvers).toEqual(['policy:NEVER', 'policy:NEVER', 'finance', 'policy:NEVER']);
  });

  test('a rejection re-freezes, and a later approval of the new total finalizes it', async () => {
    const c = await contract({ months: [{ month: 1, seconds: 30 }] });
    const { w, taskQueue } = await worker({});
    await w.runUntil(async () => {
      const close = await startClose(taskQueue, c.contractId, 1);
      await awaitingApproval(close);
      await c.ingest([{ id: 'late', at: '2026-01-20T00:00:00.000Z', seconds: 5 }]);
      expect(await close.executeUpdate(rejectInvoiceUpdate, { args: [{ reason: 'usage missing', rejectedBy: 'finance' }] })).toMatchObject({ status: 'DRAFT', approvalStatus: 'REJECTED', total: '35' });
      await expect(close.executeUpdate(approveInvoiceUpdate, { args: [{ approvedBy: 'finance', total: '30' }] })).rejects.toThrow(WorkflowUpdateFailedError);
      await approve(close, '35');
      expect(await close.result()).toMatchObject({ status: 'FINALIZED', total: '35' });
    });
    const inv = await invoice(invoiceIdFor(c.contractId, period(1).start));
    expect([inv.status, inv.total, inv.approvedBy, inv.rejectionReason]).toEqual(['FINALIZED', '35', 'finance', null]);
  });

  test('reminders: one to finance per interval while the invoice waits (3 in 3½ days), none after the decision', async () => {
    const finance = `${uniqueName('finance')}@vendor.test`;
    const c = await contract({ months: [{ month: 1, seconds: 42 }] });
    const { w, taskQueue } = await worker({ approvalReminderMs: DAY, financeEmail: finance });
    const invoiceId = invoiceIdFor(c.contractId, period(1).start);
    await w.runUntil(async () => {
      const close = await startClose(taskQueue, c.contractId, 1);
      await awaitingApproval(close);
      await skipTime(env, 3.5 * DAY);
      const reminders = await eventually('three reminders', async () => {
        const m = await mailTo(finance);
        if (m.length < 3) throw new Error(`${m.length} so far`);
        return m;
      });
      expect(reminders.map((m) => m.messageId)).toEqual([1, 2, 3].map((n) => `<approval-reminder-${invoiceId}-${n}@accrue.local>`));
      expect(reminders[0]!.subject).toBe('Reminder 1: invoice for Seeded Co (2026-01-01 to 2026-02-01, $0.42) awaits approval');
      expect(reminders[0]!.text).toContain(`/v1/invoices/${invoiceId}/approve {"total": 42}`);
      expect(reminders[0]!.html).toContain('Invoice awaiting approval');
      await approve(close, '42');
      await close.result();
      await skipTime(env, 3 * DAY);
    });
    await new Promise((r) => setTimeout(r, 500)); // the catcher parses after it acknowledges
    expect(await mailTo(finance)).toHaveLength(3);
    const rows = await orm.em.fork().execute<{ reminder_number: number; status: string; attempts: number }[]>(
      'select reminder_number, status, attempts from approval_reminder where invoice_id = ? order by reminder_number', [invoiceId]);
    expect(rows).toEqual([1, 2, 3].map((n) => ({ reminder_number: n, status: 'SENT', attempts: 1 })));
  });

  test('replay: a close history recorded before approval policies (no patch marker) replays on this code, still waiting for finance', async () => {
    // Recorded from the build before this change (time-skipping server): freeze, wait two days,
    // reject, re-freeze, wait a day, approve, finalize, email. Nothing in it decides by policy or
    // reminds; replaying it must produce exactly its commands again.
    const old = History.decode(readFileSync(join(ROOT, 'workflows', 'testdata', 'invoice-close-before-approval-policy.pb')));
    const types = old.events.map((e) => e.eventType);
    expect(types).not.toContain(EventType.EVENT_TYPE_MARKER_RECORDED);
    expect(types.filter((t) => t === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)).toHaveLength(2);
    expect(types.filter((t) => t === EventType.EVENT_TYPE_TIMER_STARTED)).toHaveLength(0);
    await Worker.runReplayHistory({ workflowsPath: WORKFLOWS }, old);

    // A history of this code (NEVER: the marker, then the decision activity) replays too.
    const c = await contract({ months: [{ month: 1, seconds: 7 }] });
    const { w, taskQueue } = await worker({ approvalPolicy: { mode: 'NEVER' } });
    const close = await startClose(taskQueue, c.contractId, 1);
    await w.runUntil(close.result());
    const fresh = await close.fetchHistory();
    expect(fresh.events!.some((e) => e.eventType === EventType.EVENT_TYPE_MARKER_RECORDED)).toBe(true);
    await Worker.runReplayHistory({ workflowsPath: WORKFLOWS }, fresh);
    // Without its marker (renamed to a patch this code never asks about, so the history stays
    // well formed) it must not: the unpatched path waits where the history decided — the check
    // above is a real one.
    const renamed = History.decode(History.encode(fresh).finish());
    // (Another marker: the lean-stages patch.)
    type Marked = { markerRecordedEventAttributes?: { details?: { [k: string]: { payloads?: { data?: Uint8Array | null }[] | null } } | null } | null };
    const patchOf = (e: Marked) => e.markerRecordedEventAttributes?.details?.['patch-data']?.payloads?.[0];
    const marker = renamed.events.find((e) => patchOf(e) && JSON.parse(Buffer.from(patchOf(e)!.data!).toString()).id === APPROVAL_POLICY_PATCH)!;
    const patchData = patchOf(marker)!;
    expect(JSON.parse(Buffer.from(patchData.data!).toString())).toEqual({ id: APPROVAL_POLICY_PATCH, deprecated: false });
    patchData.data = Buffer.from(JSON.stringify({ id: 'some-other-patch', deprecated: false }));
    await expect(Worker.runReplayHistory({ workflowsPath: WORKFLOWS }, renamed)).rejects.toHaveProperty('name', 'DeterminismViolationError');
  });

  async function awaitingApproval(close: { query: (q: typeof invoiceCloseStageQuery) => Promise<string> }): Promise<void> {
    await eventually('the close to await approval', async () => {
      const stage = await close.query(invoiceCloseStageQuery).catch(() => undefined);
      if (stage !== 'AWAITING_APPROVAL') throw new Error(`stage ${stage}`);
    }, 20_000);
  }

  /** Finance approves (retrying the time-skipping server's occasional "update … not found"). */
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
});
