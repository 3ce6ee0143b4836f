import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { createSmtpMailer, type Mailer } from '../integrations/email/mailer.js';
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
});
