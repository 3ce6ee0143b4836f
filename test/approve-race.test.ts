import type { ChildProcess } from 'node:child_process';
import { Client, Connection } from '@temporalio/client';
import type { MikroORM } from '@mikro-orm/postgresql';
import { freePort } from '../stack/net.js';
import { spawnService, stopChild } from '../stack/services.js';
import { invoiceCloseStageQuery } from '../workflows/invoice-close.js';
import { createPricedCustomer } from './fixtures.js';
import Metronome from '@metronome/sdk';
import { startHoldableProxy, type HoldableProxy } from './tcp-proxy.js';
import { createTestDatabase, eventually, http, mailTo, monthStart, startApp, testStack, type RunningApp } from './stack.js';

/**
 * Approvals racing for one invoice, against the real API, worker and Temporal: one approval
 * finalizes it; every other answers what the invoice now is (409 naming its status), never a 5xx
 * (the SDK retries those), and the invoice is emailed once. A second API process reaches Temporal
 * through a proxy the test holds, which puts its approvals exactly in the losing interleaving: each
 * read the invoice as DRAFT, and its update reaches Temporal only after the close has completed.
 */
describe('concurrent approvals of one invoice', () => {
  let orm: MikroORM;
  let app: RunningApp;
  let client: Metronome;
  let proxy: HoldableProxy;
  let apiB: ChildProcess | undefined;
  let baseB: string;
  let connection: Connection | undefined;
  let temporal: Client;

  beforeAll(async () => {
    const db = await createTestDatabase('approverace');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, gracePeriod: '1s' });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
    proxy = await startHoldableProxy(testStack().temporalAddress);
    const portB = await freePort();
    baseB = `http://127.0.0.1:${portB}`;
    apiB = spawnService('api', { ...app.env, PORT: String(portB), TEMPORAL_ADDRESS: proxy.address }, { quiet: process.env.ACCRUE_TEST_VERBOSE !== '1' });
    await eventually('the second API to answer /health', async () => {
      const res = await fetch(`${baseB}/health`);
      if (res.status !== 200) throw new Error(`health ${res.status}`);
    });
    connection = await Connection.connect({ address: testStack().temporalAddress });
    temporal = new Client({ connection });
  }, 120_000);

  afterAll(async () => {
    proxy?.release();
    if (apiB) await stopChild(apiB);
    await app?.stop();
    await proxy?.close();
    await connection?.close();
    await orm?.close();
  });

  /** A closed period's invoice awaiting approval (policy ALWAYS, the default), its close ready for a decision. */
  async function pendingInvoice() {
    const c = await createPricedCustomer(client, { pricePerUnit: 5, rateFrom: monthStart(-2) });
    await client.v1.usage.ingest({ usage: [{ transaction_id: `${c.alias}-1`, customer_id: c.alias, event_type: 'api_call', timestamp: new Date(Date.parse(monthStart(-1)) + 60_000).toISOString() }] });
    const contract = await client.v1.contracts.create({ customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: monthStart(-1), ending_before: monthStart(0) });
    const invoice = await eventually('the period frozen for approval', async () => {
      const page = await client.v1.customers.invoices.list({ customer_id: c.customerId, contract_id: contract.data.id });
      const pending = page.data.find((i) => (i as unknown as { approval_status: string }).approval_status === 'PENDING_APPROVAL');
      if (!pending) throw new Error('not frozen yet');
      return pending;
    });
    const close = temporal.workflow.getHandle(`invoice/${invoice.id}`);
    await eventually('the close awaiting approval', async () => {
      if ((await close.query(invoiceCloseStageQuery)) !== 'AWAITING_APPROVAL') throw new Error('not yet');
    });
    return { id: invoice.id, total: invoice.total, billingEmail: c.billingEmail, close };
  }

  const approve = (base: string, id: string, total: number) =>
    http({ baseURL: base }, 'POST', `/v1/invoices/${id}/approve`, { token: app.adminToken, body: { total } });

  async function emailedOnce(billingEmail: string, id: string) {
    const mail = await eventually('the invoice email', async () => {
      const m = await mailTo(billingEmail);
      if (!m.length) throw new Error('no mail');
      return m;
    });
    expect(mail.map((m) => m.messageId)).toEqual([`<invoice-${id}@accrue.local>`]);
  }

  test('20 approvals at once: one finalizes the invoice, the others are 409s naming what it is, none a 5xx', async () => {
    const inv = await pendingInvoice();
    const answers = await Promise.all(Array.from({ length: 20 }, () => approve(app.baseURL, inv.id, inv.total)));
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(19);
    for (const a of answers.filter((x) => x.status === 409)) {
      expect(a.json.message).toMatch(new RegExp(`^invoice ${inv.id} is (already FINALIZED \\(approval APPROVED\\)|being decided: the invoice is not awaiting approval)`));
    }
    expect(answers.find((a) => a.status === 200)!.json.data).toMatchObject({ id: inv.id, status: 'FINALIZED', approval_status: 'APPROVED' });
    await inv.close.result();
    await emailedOnce(inv.billingEmail, inv.id);
  });

  test('approvals that read DRAFT and reach Temporal after the close completed answer 409 FINALIZED, not 500', async () => {
    const inv = await pendingInvoice();
    proxy.hold();
    const losers: Promise<Awaited<ReturnType<typeof approve>>>[] = [];
    for (let i = 0; i < 20; i++) {
      const before = proxy.held;
      losers.push(approve(baseB, inv.id, inv.total));
      // Its update is on the wire to Temporal (held): it has read the invoice as DRAFT.
      await eventually(`approval ${i} to reach Temporal`, async () => {
        if (proxy.held <= before) throw new Error('not yet');
      }, 10_000);
    }
    const winner = await approve(app.baseURL, inv.id, inv.total);
    expect([winner.status, winner.json.data?.status]).toEqual([200, 'FINALIZED']);
    await inv.close.result(); // the close has completed: emailed, done
    proxy.release();
    const answers = await Promise.all(losers);
    expect(answers.map((a) => [a.status, a.json?.message])).toEqual(Array.from({ length: 20 }, () => [409, `invoice ${inv.id} is already FINALIZED (approval APPROVED)`]));
    await emailedOnce(inv.billingEmail, inv.id);
  });
});
