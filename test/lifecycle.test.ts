import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, monthStart, uniqueName } from './stack.js';

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

  test('payments through HTTP: a finalized invoice due at once puts the contract in ARREARS; a partial payment keeps it there, the rest takes it out; bad payments are refused and change nothing', async () => {
    const alias = uniqueName('pay');
    const billingEmail = `${alias}@e2e.test`;
    const customer = await h.client.v1.customers.create({ name: 'Pay Co', ingest_aliases: [alias], billing_email: billingEmail } as Parameters<typeof h.client.v1.customers.create>[0]);
    const metric = await h.client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const product = await h.client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-3) });
    const p0 = monthStart(-1);
    await h.client.v1.usage.ingest({ usage: Array.from({ length: 3 }, (_, i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.parse(p0) + 3_600_000 + i * 1000).toISOString() })) });
    const created = await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p0, net_payment_terms_days: 0, approval_policy: { mode: 'NEVER' },
    } as Parameters<typeof h.client.v1.contracts.create>[0]);
    const contractId = created.data.id;
    const view = await eventually('the contract in arrears', async () => {
      const v = await lifecycle(contractId);
      if (v.state !== 'ARREARS') throw new Error(`state ${v.state}`);
      return v;
    }, 90_000);
    expect(view.history.map((t) => t.state)).toEqual(['ACTIVE', 'ARREARS']);
    const invoice = (await h.client.v1.customers.invoices.list({ customer_id: customer.data.id })).data.find((i) => i.start_timestamp === p0)!;
    const shown = async () => (await http(h.app, 'GET', `/v1/customers/${customer.data.id}/invoices/${invoice.id}`, { token: h.app.adminToken })).json.data as Record<string, unknown>;
    expect(await shown()).toMatchObject({ status: 'FINALIZED', total: 300, payment_status: 'UNPAID', amount_paid: 0, amount_due: 300 });

    const pay = (body: unknown, id = invoice.id) => http(h.app, 'POST', `/v1/accrue/invoices/${id}/payments`, { token: h.app.adminToken, body });
    // Bad payments: 400/404/409 naming the field, nothing recorded.
    for (const [body, status, field] of [
      [{ amount: 301, reference: 'too-much' }, 400, 'amount'],
      [{ amount: -5, reference: 'negative' }, 400, 'amount'],
      [{ amount: 10.5, reference: 'half-cent' }, 400, 'amount'],
      [{ amount: 10 }, 400, 'reference'],
      [{ amount: 10, reference: 'x', paid_at: '2999-01-01T00:00:00Z' }, 400, 'paid_at'],
      [{ amount: 10, reference: 'x', extra: 1 }, 400, 'extra'],
    ] as const) {
      const res = await pay(body);
      expect([res.status, res.text]).toEqual([status, expect.stringContaining(field)]);
    }
    expect((await pay({ amount: 10, reference: 'x' }, '00000000-0000-4000-8000-000000000000')).status).toBe(404);
    expect(await shown()).toMatchObject({ payment_status: 'UNPAID', amount_due: 300 });

    const first = await pay({ amount: 100, reference: 'wire-1' });
    expect([first.status, first.json.data]).toEqual([201, expect.objectContaining({ payment_status: 'PARTIALLY_PAID', amount_due: 200 })]);
    expect((await pay({ amount: 100, reference: 'wire-1' })).status).toBe(200); // the same payment again: nothing new
    expect((await pay({ amount: 150, reference: 'wire-1' })).status).toBe(409); // the same reference, another amount
    expect(await shown()).toMatchObject({ payment_status: 'PARTIALLY_PAID', amount_paid: 100, amount_due: 200 });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await lifecycle(contractId)).state).toBe('ARREARS');

    expect((await pay({ amount: 200, reference: 'wire-2' })).status).toBe(201);
    const back = await eventually('the contract out of arrears', async () => {
      const v = await lifecycle(contractId);
      if (v.state !== 'ACTIVE') throw new Error(`state ${v.state}`);
      return v;
    });
    expect(back.history.map((t) => t.state)).toEqual(['ACTIVE', 'ARREARS', 'ACTIVE']);
    expect(await shown()).toMatchObject({ payment_status: 'PAID', amount_paid: 300, amount_due: 0 });
    const subjects = await eventually('the invoice and the overdue notice', async () => {
      const m = (await mailTo(billingEmail)).map((x) => x.subject ?? '');
      if (m.length < 2) throw new Error(`${m.length} mails`);
      return m;
    });
    expect(subjects.filter((x) => x.startsWith('Invoice overdue'))).toHaveLength(1);
  });

  test('the lifecycle endpoint names a bad id and an unknown contract', async () => {
    const bad = await http(h.app, 'GET', '/v1/accrue/contracts/not-a-uuid/lifecycle', { token: h.app.adminToken });
    expect([bad.status, bad.text]).toEqual([400, expect.stringContaining('id')]);
    const missing = await http(h.app, 'GET', '/v1/accrue/contracts/00000000-0000-4000-8000-000000000000/lifecycle', { token: h.app.adminToken });
    expect(missing.status).toBe(404);
  });
});
