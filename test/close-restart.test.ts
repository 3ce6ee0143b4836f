import { contractStateQuery } from '../workflows/contract.js';
import { invoiceCloseStageQuery } from '../workflows/invoice-close.js';
import { createPricedCustomer } from './fixtures.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, monthStart } from './stack.js';

/**
 * On the Temporal dev server (the one `npm start` runs): an invoice close terminated while it
 * waits for finance is started again by its contract's workflow — the period is never skipped —
 * and the contract's workflow ends (and would roll over) only once that invoice is final.
 */
describe('a terminated invoice close', () => {
  const h = useSdkApp('restart');

  test('is started again, and its period is still closed and emailed once', async () => {
    const c = await createPricedCustomer(h.client, { pricePerUnit: 5, rateFrom: monthStart(-2) });
    await h.client.v1.usage.ingest({ usage: [{ transaction_id: `${c.alias}-1`, customer_id: c.alias, event_type: 'api_call', timestamp: new Date(Date.parse(monthStart(-1)) + 60_000).toISOString() }] });
    const contract = await h.client.v1.contracts.create({ customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: monthStart(-1), ending_before: monthStart(0) });
    const [pending] = await eventually('the only period frozen', async () => {
      const page = await h.client.v1.customers.invoices.list({ customer_id: c.customerId, contract_id: contract.data.id });
      const f = page.data.filter((i) => (i as unknown as { approval_status: string }).approval_status === 'PENDING_APPROVAL');
      if (f.length !== 1) throw new Error(`${f.length} frozen`);
      return f;
    });
    const close = h.temporal.workflow.getHandle(`invoice/${pending!.id}`);
    await eventually('the close awaiting approval', async () => {
      if ((await close.query(invoiceCloseStageQuery)) !== 'AWAITING_APPROVAL') throw new Error('not yet');
    });
    const firstRun = (await close.describe()).runId;
    await close.terminate('operator mistake');

    // The contract's workflow sees the termination and starts the close again (10 s later).
    const again = await eventually('the close started again', async () => {
      const d = await h.temporal.workflow.getHandle(`invoice/${pending!.id}`).describe();
      if (d.runId === firstRun || d.status.name !== 'RUNNING') throw new Error(`${d.runId} ${d.status.name}`);
      if ((await close.query(invoiceCloseStageQuery)) !== 'AWAITING_APPROVAL') throw new Error('not awaiting approval yet');
      return d;
    });
    expect(again.runId).not.toBe(firstRun);
    const wf = h.temporal.workflow.getHandle(`contract/${contract.data.id}`);
    expect(await wf.query(contractStateQuery)).toMatchObject({ state: 'ACTIVE', restartedCloses: 1 });
    expect((await wf.describe()).status.name).toBe('RUNNING');

    const approved = await http(h.app, 'POST', `/v1/invoices/${pending!.id}/approve`, { token: h.app.adminToken, body: { total: pending!.total } });
    expect([approved.status, approved.json.data?.status]).toEqual([200, 'FINALIZED']);
    // The contract has ended; its workflow now only watches for late usage until the ingest window has passed.
    await eventually('the contract to end', async () => {
      if ((await wf.query(contractStateQuery)).state !== 'ENDED') throw new Error('not ended yet');
    });
    expect((await wf.query(contractStateQuery)).unclosedPeriods).toEqual([]);
    const mail = await eventually('the invoice email', async () => {
      const m = await mailTo(c.billingEmail);
      if (!m.length) throw new Error('no mail');
      return m;
    });
    expect(mail.map((m) => m.messageId)).toEqual([`<invoice-${pending!.id}@accrue.local>`]);
  });
});
