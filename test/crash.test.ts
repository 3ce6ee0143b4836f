import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { Invoice } from '../db/entities.js';
import { stopChild } from '../stack/services.js';
import { createPricedCustomer } from './fixtures.js';
import { createTestDatabase, eventually, http, mailTo, monthStart, startApp, type RunningApp } from './stack.js';

/**
 * Kill the worker process with SIGKILL while invoice closes are in flight, start it again, and
 * show every invoice is finalized once and emailed (I4 with idempotent activities): once, or —
 * only when the kill fell between the SMTP server's acceptance and its record — once more, with
 * the same Message-ID, as a recorded second attempt.
 */
describe('crash: the worker is SIGKILLed while invoices close', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;

  beforeAll(async () => {
    const db = await createTestDatabase('crash');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, gracePeriod: '1s' });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
  });

  afterAll(async () => {
    await app?.stop();
    await orm?.close();
  });

  test('finalized and emailed exactly once, whatever moment the worker dies', async () => {
    const c = await createPricedCustomer(client, { pricePerUnit: 7, rateFrom: monthStart(-4) });
    const p = [monthStart(-3), monthStart(-2), monthStart(-1), monthStart(0)];
    const usage = [0, 1, 2].flatMap((i) => Array.from({ length: i + 3 }, (_, n) => ({
      transaction_id: `${c.alias}-${i}-${n}`, customer_id: c.alias, event_type: 'api_call',
      timestamp: new Date(Date.parse(p[i]!) + (n + 1) * 60_000).toISOString(),
    })));
    await client.v1.usage.ingest({ usage });
    const contract = await client.v1.contracts.create({ customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: p[0]! });

    const frozen = await eventually('three past periods frozen', async () => {
      const rows = await orm.em.fork().find(Invoice, { contractId: contract.data.id }, { orderBy: { periodStart: 'asc' } });
      if (rows.length !== 3) throw new Error(`${rows.length} frozen`);
      return rows;
    });
    expect(frozen.map((i) => i.total)).toEqual(['21', '28', '35']);

    // 1. Killed while the close workflows wait for approval; approval sent while no worker runs.
    app.worker.kill('SIGKILL');
    await stopChild(app.worker);
    const pendingApproval = http(app, 'POST', `/v1/invoices/${frozen[0]!.id}/approve`, { token: app.adminToken, body: { total: frozen[0]!.total } });
    await new Promise((r) => setTimeout(r, 1500));
    await app.startWorker();
    expect((await pendingApproval).status).toBe(200);

    // 2. Killed right after approval returns, while emailing is in flight.
    const approved = await http(app, 'POST', `/v1/invoices/${frozen[1]!.id}/approve`, { token: app.adminToken, body: { total: frozen[1]!.total } });
    expect(approved.status).toBe(200);
    app.worker.kill('SIGKILL');
    await stopChild(app.worker);
    await app.startWorker();

    // 3. Killed right as approval is sent: the update is delivered to the restarted worker.
    const third = http(app, 'POST', `/v1/invoices/${frozen[2]!.id}/approve`, { token: app.adminToken, body: { total: frozen[2]!.total } });
    await new Promise((r) => setTimeout(r, 50));
    app.worker.kill('SIGKILL');
    await stopChild(app.worker);
    await app.startWorker();
    expect((await third).status).toBe(200);

    await eventually('three invoices emailed', async () => {
      const m = await mailTo(c.billingEmail);
      if (new Set(m.map((x) => x.messageId)).size < 3) throw new Error(`${m.length} emails`);
    });
    // Let any duplicate that a retry might still produce arrive before counting.
    await new Promise((r) => setTimeout(r, 3000));
    const all = await mailTo(c.billingEmail);
    expect(new Set(all.map((m) => m.messageId))).toEqual(new Set(frozen.map((i) => `<invoice-${i.id}@accrue.local>`)));
    // The at-least-once boundary (I4): a worker killed between the SMTP server's 250 and the
    // record of it leaves the send SENDING; once that is older than the email activity's timeout
    // it is sent again, with the same Message-ID, and counted in invoice_email.attempts. No other
    // duplicate: a retry never overlaps a send in flight.
    const sends = await orm.em.fork().execute<{ invoice_id: string; status: string; attempts: number }[]>(
      `select invoice_id::text, status, attempts from invoice_email where invoice_id in (?, ?, ?)`, frozen.map((i) => i.id));
    expect(sends.map((r) => r.status)).toEqual(['SENT', 'SENT', 'SENT']);
    for (const inv of frozen) {
      const copies = all.filter((m) => m.messageId === `<invoice-${inv.id}@accrue.local>`).length;
      expect(copies).toBeGreaterThanOrEqual(1);
      expect(copies).toBeLessThanOrEqual(sends.find((r) => r.invoice_id === inv.id)!.attempts);
    }
    // Every invoice's mail, once each by subject (a counted at-least-once resend repeats one; checked above).
    expect([...new Set(all.map((m) => m.subject))].sort()).toEqual(['$0.21', '$0.28', '$0.35'].map((t, i) => `Your invoice for ${p[i]!.slice(0, 10)} to ${p[i + 1]!.slice(0, 10)}: ${t}`).sort());

    const final = await orm.em.fork().find(Invoice, { contractId: contract.data.id }, { orderBy: { periodStart: 'asc' } });
    expect(final.map((i) => [i.status, i.total, !!i.emailedAt])).toEqual([['FINALIZED', '21', true], ['FINALIZED', '28', true], ['FINALIZED', '35', true]]);
  });
});
