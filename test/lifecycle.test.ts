import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, uniqueName } from './stack.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;

/**
 * The lifecycle end to end: contracts created through the SDK with a trial, their state in the
 * lifecycle endpoint and on contracts.retrieve, the transition log written by the contract's
 * workflow on the real Temporal dev server, and the emails at the SMTP server.
 */
describe('contract lifecycle through HTTP', () => {
  const h = useSdkApp('lifecycle_e2e');

  async function customer() {
    const billingEmail = `${uniqueName('life')}@e2e.test`;
    const c = await h.client.v1.customers.create({ name: 'Trial Co', ingest_aliases: [uniqueName('t')], billing_email: billingEmail } as Parameters<typeof h.client.v1.customers.create>[0]);
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    return { customerId: c.data.id, billingEmail, rateCardId: card.data.id };
  }
  const lifecycle = async (id: string) => {
    const res = await http(h.app, 'GET', `/v1/accrue/contracts/${id}/lifecycle`, { token: h.app.adminToken });
    expect(res.status).toBe(200);
    return (res.json as { data: { state: string; since: string; history: { state: string; reason: string }[] } }).data;
  };

  test('a contract with a running trial is TRIAL in the log, on retrieve and in Temporal, and its billing contact is told', async () => {
    const c = await customer();
    const start = new Date(Math.floor(Date.now() / HOUR) * HOUR).toISOString();
    const created = await h.client.v1.contracts.create({
      customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: start,
      trial_spec: { length_in_days: 14, spending_cap: { amount: 5000 } },
    } as Parameters<typeof h.client.v1.contracts.create>[0]);
    const id = created.data.id;
    // Right away, before the workflow has recorded anything, the contract reads as in its trial.
    const retrieved = await h.client.v1.contracts.retrieve({ customer_id: c.customerId, contract_id: id });
    expect((retrieved.data as unknown as { accrue_lifecycle_state: string }).accrue_lifecycle_state).toBe('TRIAL');
    const view = await eventually('the trial recorded', async () => {
      const v = await lifecycle(id);
      if (v.history.length !== 1) throw new Error(`history ${JSON.stringify(v.history)}`);
      return v;
    });
    expect(view).toMatchObject({ state: 'TRIAL', history: [{ state: 'TRIAL', reason: 'the contract started with a trial' }] });
    const mails = await eventually('the trial-started email', async () => {
      const m = await mailTo(c.billingEmail);
      if (m.length !== 1) throw new Error(`${m.length} mails`);
      return m;
    });
    expect((mails[0]!.subject ?? '').toLowerCase()).toContain('trial');
    const described = await h.temporal.workflow.getHandle(`contract/${id}`).describe();
    expect(described.searchAttributes.LifecycleState).toEqual(['TRIAL']);
  });

  test('a backdated trial that already ended without a commit ends the contract at once: ENDED, ending_before = trial end', async () => {
    const c = await customer();
    const start = Math.floor((Date.now() - 10 * DAY) / HOUR) * HOUR;
    const created = await h.client.v1.contracts.create({
      customer_id: c.customerId, rate_card_id: c.rateCardId, starting_at: new Date(start).toISOString(),
      trial_spec: { length_in_days: 3 },
    } as Parameters<typeof h.client.v1.contracts.create>[0]);
    const id = created.data.id;
    const view = await eventually('the trial to end', async () => {
      const v = await lifecycle(id);
      if (v.state !== 'ENDED') throw new Error(`state ${v.state}`);
      return v;
    });
    expect(view.history.map((t) => t.state)).toEqual(['TRIAL', 'ENDED']);
    const retrieved = await h.client.v1.contracts.retrieve({ customer_id: c.customerId, contract_id: id });
    expect(retrieved.data.current.ending_before).toBe(new Date(start + 3 * DAY).toISOString());
    expect((retrieved.data as unknown as { accrue_lifecycle_state: string }).accrue_lifecycle_state).toBe('ENDED');
    await eventually('the trial-ended email', async () => {
      const m = await mailTo(c.billingEmail);
      if (m.length !== 2) throw new Error(`${m.length} mails`); // started, ended (the reminder's time had passed)
    });
  });

  test('the lifecycle endpoint names a bad id and an unknown contract', async () => {
    const bad = await http(h.app, 'GET', '/v1/accrue/contracts/not-a-uuid/lifecycle', { token: h.app.adminToken });
    expect([bad.status, bad.text]).toEqual([400, expect.stringContaining('id')]);
    const missing = await http(h.app, 'GET', '/v1/accrue/contracts/00000000-0000-4000-8000-000000000000/lifecycle', { token: h.app.adminToken });
    expect(missing.status).toBe(404);
  });
});
