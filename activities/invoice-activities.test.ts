import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Customer, Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS, SMTP_SEND_LIMIT_MS } from '../integrations/email/limits.js';
import { seedContract } from '../test/db-fixtures.js';
import { createTestDatabase, eventually, mailTo, testStack, uniqueName } from '../test/stack.js';
import { createActivities } from './index.js';

/** Invoice activities on real PostgreSQL and a real SMTP server: each is idempotent. */
describe('invoice activities', () => {
  let orm: MikroORM;
  let mailer: Mailer;
  let acts: ReturnType<typeof createActivities>;
  const env = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') }); // supplies the activity Context only; the activity code is real
  const run = <A extends unknown[], R>(fn: (...a: A) => Promise<R>, ...args: A) => env.run(fn, ...args);

  beforeAll(async () => {
    orm = (await createTestDatabase('activities')).orm;
    mailer = createSmtpMailer(testStack().smtpUrl, 'Accrue Billing <billing@accrue.local>');
    acts = createActivities({ orm, mailer, invoiceGracePeriodMs: 0 });
  });
  afterAll(async () => {
    mailer?.close();
    await orm?.close();
  });

  test('freeze, finalize and email are each safe to repeat', async () => {
    const billingEmail = `${uniqueName('ap')}@seeded.test`;
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-01-01T00:00:00Z', price: '0.125', billingEmail });
    await s.ingest([{ id: '1', at: '2026-01-03T00:00:00Z', seconds: '10.5' }, { id: '2', at: '2026-01-31T23:59:59.999Z', seconds: 3 }, { id: '3', at: '2026-02-01T00:00:00Z', seconds: 1000 }]);
    const input = { invoiceId: invoiceIdFor(s.contractId, '2026-01-01T00:00:00.000Z'), contractId: s.contractId, periodStart: '2026-01-01T00:00:00.000Z', periodEnd: '2026-02-01T00:00:00.000Z', recompute: false };

    // 13.5 seconds × 0.125 = 1.6875 cents → 2 cents; the event at 02-01 00:00 belongs to February.
    expect(await run(acts.freezeInvoice, input)).toEqual({ status: 'DRAFT', total: '2' });
    await s.ingest([{ id: '4', at: '2026-01-15T00:00:00Z', seconds: 8 }]);
    expect(await run(acts.freezeInvoice, input)).toEqual({ status: 'DRAFT', total: '2' }); // frozen: unchanged
    expect(await run(acts.freezeInvoice, { ...input, recompute: true })).toEqual({ status: 'DRAFT', total: '3' }); // 21.5 × 0.125 = 2.6875

    await run(acts.finalizeInvoice, { invoiceId: input.invoiceId, approvedBy: 'cfo' });
    await run(acts.finalizeInvoice, { invoiceId: input.invoiceId, approvedBy: 'someone else' });
    expect(await run(acts.freezeInvoice, { ...input, recompute: true })).toEqual({ status: 'FINALIZED', total: '3' });
    await expect(run(acts.rejectInvoice, { invoiceId: input.invoiceId, reason: 'late', rejectedBy: null })).rejects.toThrow(/FINALIZED and cannot be rejected/);

    expect(await run(acts.emailInvoice, { invoiceId: input.invoiceId })).toEqual({ sent: true });
    expect(await run(acts.emailInvoice, { invoiceId: input.invoiceId })).toEqual({ sent: false, reason: 'already emailed' });
    // The catcher acknowledges before it has parsed the message (as an MTA queues first).
    const mail = await eventually('the invoice email to arrive', async () => {
      const got = await mailTo(billingEmail);
      if (!got.length) throw new Error('no mail yet');
      return got;
    });
    expect(mail).toHaveLength(1);
    expect(mail[0]!.subject).toBe('Your invoice for 2026-01-01 to 2026-02-01: $0.03');

    const inv = await orm.em.fork().findOneOrFail(Invoice, { id: input.invoiceId });
    expect([inv.status, inv.approvedBy, inv.total, inv.lineItems[0]!.quantity]).toEqual(['FINALIZED', 'cfo', '3', '21.5']);
  });

  test('an invoice that is not finalized is never emailed', async () => {
    const s = await seedContract(orm.em.fork(), { startingAt: '2026-03-01T00:00:00Z', price: '1', billingEmail: 'x@seeded.test' });
    const input = { invoiceId: invoiceIdFor(s.contractId, '2026-03-01T00:00:00.000Z'), contractId: s.contractId, periodStart: '2026-03-01T00:00:00.000Z', periodEnd: '2026-04-01T00:00:00.000Z', recompute: false };
    await run(acts.freezeInvoice, input);
    await expect(run(acts.emailInvoice, { invoiceId: input.invoiceId })).rejects.toThrow(/only finalized invoices are emailed/);
  });

  test('a close that found no billing email counts as done, even after an email is added; a later attempt then sends it', async () => {
    const start = '2026-05-01T00:00:00.000Z';
    const s = await seedContract(orm.em.fork(), { startingAt: start, endingBefore: '2026-06-01T00:00:00.000Z', price: '1' });
    const invoiceId = invoiceIdFor(s.contractId, start);
    await run(acts.freezeInvoice, { invoiceId, contractId: s.contractId, periodStart: start, periodEnd: '2026-06-01T00:00:00.000Z', recompute: false });
    await run(acts.finalizeInvoice, { invoiceId, approvedBy: 'cfo' });
    expect(await run(acts.emailInvoice, { invoiceId })).toEqual({ sent: false, reason: 'customer has no billing_email' });
    const address = `${uniqueName('later')}@seeded.test`;
    await orm.em.fork().nativeUpdate(Customer, { id: s.customerId }, { billingEmail: address });
    // The contract workflow's sweep does not wait forever for an email its close had nobody to send to.
    expect(await run(acts.unclosedPeriods, { contractId: s.contractId, beforeIndex: 1 })).toEqual([]);
    expect(await run(acts.emailInvoice, { invoiceId })).toEqual({ sent: true });
    expect(await arrived(address)).toHaveLength(1);
    const [row] = await orm.em.fork().execute('select status, attempts from invoice_email where invoice_id = ?', [invoiceId]);
    expect(row).toEqual({ status: 'SENT', attempts: 1 });
  });

  /** Mail to `address` once the catcher has parsed it (it acknowledges first, as an MTA queues). */
  const arrived = (address: string) => eventually(`mail to ${address}`, async () => {
    const m = await mailTo(address);
    if (!m.length) throw new Error('none yet');
    return m;
  });

  /** A period frozen and finalized, ready to email. */
  async function finalized(month: string, billingEmail: string): Promise<string> {
    const start = `2026-${month}-01T00:00:00.000Z`;
    const s = await seedContract(orm.em.fork(), { startingAt: start, price: '1', billingEmail });
    const input = { invoiceId: invoiceIdFor(s.contractId, start), contractId: s.contractId, periodStart: start, periodEnd: new Date(Date.UTC(2026, Number(month), 1)).toISOString(), recompute: false };
    await run(acts.freezeInvoice, input);
    await run(acts.finalizeInvoice, { invoiceId: input.invoiceId, approvedBy: 'cfo' });
    return input.invoiceId;
  }

  test('a retry that overlaps a send still in flight sends nothing (I4)', async () => {
    expect(EMAIL_ACTIVITY_TIMEOUT_MS).toBeGreaterThan(SMTP_SEND_LIMIT_MS); // no retry before nodemailer gives up
    const billingEmail = `${uniqueName('overlap')}@seeded.test`;
    const invoiceId = await finalized('05', billingEmail);
    // The first attempt's send is held at the SMTP call (a slow server); the real SMTP send follows.
    let entered!: () => void;
    const inFlight = new Promise<void>((r) => { entered = r; });
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const slow: Mailer = { send: async (m) => { entered(); await gate; return mailer.send(m); }, close: () => undefined };
    const slowActs = createActivities({ orm, mailer: slow, invoiceGracePeriodMs: 0 });
    const first = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') }).run(slowActs.emailInvoice, { invoiceId });
    await inFlight;
    // Temporal's retry of the same activity (its timeout passed) while the first send is in flight.
    await expect(run(acts.emailInvoice, { invoiceId })).rejects.toThrow(/in flight/);
    release();
    expect(await first).toEqual({ sent: true });
    expect(await run(acts.emailInvoice, { invoiceId })).toEqual({ sent: false, reason: 'already emailed' });
    expect(await arrived(billingEmail)).toHaveLength(1);
    const [row] = await orm.em.fork().execute('select status, attempts from invoice_email where invoice_id = ?', [invoiceId]);
    expect(row).toEqual({ status: 'SENT', attempts: 1 });
  });

  test('a send recorded as SENDING for longer than the activity timeout is sent again: the at-least-once boundary', async () => {
    const billingEmail = `${uniqueName('stale')}@seeded.test`;
    const invoiceId = await finalized('06', billingEmail);
    // A worker was SIGKILLed mid-send long enough ago that its attempt has timed out.
    await orm.em.fork().execute(`insert into invoice_email (invoice_id, message_id, status, started_at) values (?, ?, 'SENDING', now() - make_interval(secs => ?))`, [invoiceId, `<invoice-${invoiceId}@accrue.local>`, EMAIL_ACTIVITY_TIMEOUT_MS / 1000 + 1]);
    expect(await run(acts.emailInvoice, { invoiceId })).toEqual({ sent: true });
    const mail = await arrived(billingEmail);
    expect(mail.map((m) => m.messageId)).toEqual([`<invoice-${invoiceId}@accrue.local>`]); // the same Message-ID a duplicate would carry
    const [row] = await orm.em.fork().execute('select status, attempts from invoice_email where invoice_id = ?', [invoiceId]);
    expect(row).toEqual({ status: 'SENT', attempts: 2 });
  });
});
