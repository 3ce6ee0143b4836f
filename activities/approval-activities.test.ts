import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import type { MikroORM } from '@mikro-orm/postgresql';
import { pendingApprovals } from '../db/approvals.js';
import { Contract } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, eventually, mailTo, testStack, uniqueName } from '../test/stack.js';
import { createActivities } from './index.js';

/** Approval activities on real PostgreSQL and SMTP: the decision is read-only, each reminder is sent once. */
describe('approval activities', () => {
  let orm: MikroORM;
  let mailer: Mailer;
  const env = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') }); // the activity Context only; the code is real
  const run = <A extends unknown[], R>(fn: (...a: A) => Promise<R>, ...args: A) => env.run(fn, ...args);

  beforeAll(async () => {
    orm = (await createTestDatabase('approvalacts')).orm;
    mailer = createSmtpMailer(testStack().smtpUrl, 'Accrue Billing <billing@accrue.local>');
  });
  afterAll(async () => {
    mailer?.close();
    await orm?.close();
  });

  async function frozen(months: number[], seconds: (m: number) => number) {
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00.000Z', price: '1' });
    await s.ingest(months.map((m) => ({ id: `m${m}`, at: new Date(Date.UTC(2026, m - 1, 2)).toISOString(), seconds: seconds(m) })));
    const acts = createActivities({ orm, mailer, invoiceGracePeriodMs: 0 });
    const ids: string[] = [];
    for (const m of months) {
      const start = new Date(Date.UTC(2026, m - 1, 1)).toISOString();
      const invoiceId = invoiceIdFor(s.contractId, start);
      await run(acts.freezeInvoice, { invoiceId, contractId: s.contractId, periodStart: start, periodEnd: new Date(Date.UTC(2026, m, 1)).toISOString(), recompute: false });
      ids.push(invoiceId);
    }
    return { ...s, ids };
  }

  test('the decision reads the contract policy, the default and the previous period, and is the same when repeated', async () => {
    const s = await frozen([1, 2], (m) => (m === 1 ? 200 : 300));
    const acts = createActivities({ orm, mailer, invoiceGracePeriodMs: 0, lifecycle: { approvalPolicy: { mode: 'NEVER' }, approvalChangePct: '40', approvalReminderMs: 3_600_000 } });
    const first = await run(acts.approvalDecision, { invoiceId: s.ids[1]! });
    expect(first).toEqual({ approvalRequired: true, reason: 'change:above-threshold', mode: 'NEVER', previousTotal: '200', changePercent: '50.00', approvedBy: 'policy:NEVER', reminderMs: 3_600_000 });
    expect(await run(acts.approvalDecision, { invoiceId: s.ids[1]! })).toEqual(first);
    expect(await run(acts.approvalDecision, { invoiceId: s.ids[0]! })).toMatchObject({ approvalRequired: false, reason: 'policy:NEVER' });
    await orm.em.fork().nativeUpdate(Contract, { id: s.contractId }, { terms: { approval_policy: { mode: 'ABOVE', amount: '250' } } });
    expect(await run(acts.approvalDecision, { invoiceId: s.ids[0]! })).toMatchObject({ approvalRequired: false, reason: 'policy:ABOVE:not-above', approvedBy: 'policy:ABOVE' });
    expect(await run(acts.approvalDecision, { invoiceId: s.ids[1]! })).toMatchObject({ approvalRequired: true, reason: 'policy:ABOVE:above' });
  });

  test('the queue lists a frozen invoice only when its close will wait for finance: the same decision, before the close has made it', async () => {
    const s = await frozen([1, 2], (m) => (m === 1 ? 200 : 300)); // frozen, undecided: both PENDING_APPROVAL in PostgreSQL
    const listed = async (settings: Parameters<typeof pendingApprovals>[1]) =>
      (await pendingApprovals(orm.em.fork(), settings)).filter((r) => r.contract_id === s.contractId).map((r) => r.invoice_id);
    const setPolicy = (policy: unknown) => orm.em.fork().execute(`update contract set terms = jsonb_set(terms, '{approval_policy}', ?::jsonb) where id = ?`, [JSON.stringify(policy), s.contractId]);
    expect(await listed({ approvalPolicy: { mode: 'ALWAYS' } })).toEqual(s.ids);
    expect(await listed({ approvalPolicy: { mode: 'NEVER' } })).toEqual([]);
    expect(await listed({ approvalPolicy: { mode: 'NEVER' }, approvalChangePct: '40' })).toEqual([s.ids[1]]); // +50 %
    const never40 = createActivities({ orm, mailer, invoiceGracePeriodMs: 0, lifecycle: { approvalPolicy: { mode: 'NEVER' }, approvalChangePct: '40', approvalReminderMs: 1 } });
    for (const id of s.ids) {
      const decided = await run(never40.approvalDecision, { invoiceId: id });
      expect((decided as { approvalRequired: boolean }).approvalRequired).toBe(id === s.ids[1]); // the queue and the close agree
    }
    await setPolicy({ mode: 'ABOVE', amount: '250' }); // the contract's policy wins over the default
    expect(await listed({ approvalPolicy: { mode: 'ALWAYS' } })).toEqual([s.ids[1]]);
    await setPolicy({ mode: 'NEVER' });
    expect(await listed({ approvalPolicy: { mode: 'ALWAYS' } })).toEqual([]);
    // A rejected invoice waits for a fixed version whatever the policy says.
    await orm.em.fork().execute(`update invoice set approval_status = 'REJECTED' where id = ?`, [s.ids[0]]);
    expect(await listed({ approvalPolicy: { mode: 'ALWAYS' } })).toEqual([s.ids[0]]);
  });

  test('a reminder is sent once per number, never while a send may be in flight, and not at all without a finance address', async () => {
    const finance = `${uniqueName('finance')}@vendor.test`;
    const s = await frozen([1], () => 5);
    const invoiceId = s.ids[0]!;
    const quiet = createActivities({ orm, mailer, invoiceGracePeriodMs: 0 });
    expect(await run(quiet.remindApproval, { invoiceId, reminder: 1 })).toEqual({ sent: false, reason: 'ACCRUE_FINANCE_EMAIL is not set' });

    const acts = createActivities({ orm, mailer, invoiceGracePeriodMs: 0, lifecycle: { financeEmail: finance } });
    expect(await run(acts.remindApproval, { invoiceId, reminder: 1 })).toEqual({ sent: true });
    expect(await run(acts.remindApproval, { invoiceId, reminder: 1 })).toEqual({ sent: false, reason: 'already sent' }); // a retry
    // Reminder 2's first attempt claimed it and is (as far as anyone knows) still sending: a retry waits.
    await orm.em.fork().execute(`insert into approval_reminder (invoice_id, reminder_number, recipient, message_id, status, started_at) values (?, 2, ?, 'x', 'SENDING', now())`, [invoiceId, finance]);
    await expect(run(acts.remindApproval, { invoiceId, reminder: 2 })).rejects.toThrow(/may still be in flight/);
    // Once that attempt is older than the activity's timeout, it is sent again (the at-least-once boundary).
    await orm.em.fork().execute(`update approval_reminder set started_at = now() - make_interval(secs => ?) where invoice_id = ? and reminder_number = 2`, [EMAIL_ACTIVITY_TIMEOUT_MS / 1000 + 1, invoiceId]);
    expect(await run(acts.remindApproval, { invoiceId, reminder: 2 })).toEqual({ sent: true });

    const mail = await eventually('two reminders', async () => {
      const m = await mailTo(finance);
      if (m.length < 2) throw new Error(`${m.length} so far`);
      return m;
    });
    expect(mail.map((m) => m.messageId)).toEqual([1, 2].map((n) => `<approval-reminder-${invoiceId}-${n}@accrue.local>`));
    const rows = await orm.em.fork().execute<{ reminder_number: number; status: string; attempts: number }[]>('select reminder_number, status, attempts from approval_reminder where invoice_id = ? order by 1', [invoiceId]);
    expect(rows).toEqual([{ reminder_number: 1, status: 'SENT', attempts: 1 }, { reminder_number: 2, status: 'SENT', attempts: 2 }]);

    // Decided meanwhile: nothing more is sent.
    await run(acts.finalizeInvoice, { invoiceId, approvedBy: 'finance' });
    expect(await run(acts.remindApproval, { invoiceId, reminder: 3 })).toEqual({ sent: false, reason: 'invoice is FINALIZED' });
    await new Promise((r) => setTimeout(r, 300));
    expect(await mailTo(finance)).toHaveLength(2);
  });
});
