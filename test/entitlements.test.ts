import type Metronome from '@metronome/sdk';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, uniqueName } from './stack.js';

type Ent = { product_id: string; product_name: string; entitled: boolean; reason: string };

/**
 * Access gating through `GET /v1/accrue/customers/{id}/entitlements`, answered from the API's
 * memory and invalidated by the transactions that change it: a gating alert entering alarm, a
 * trial that expires, arrears under a gating policy (and leaving them), a trial spending cap used
 * up. Read and ingest tokens may ask; a customer that does not exist is a 404.
 */
describe('entitlements: flip with alerts, trials and arrears, from memory', () => {
  const h = useSdkApp('entitlements', { env: { ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1' } });
  const DAY = 86_400_000;

  const ask = async (customerId: string, token = h.app.adminToken) => {
    const res = await http(h.app, 'GET', `/v1/accrue/customers/${customerId}/entitlements`, { token });
    if (res.status !== 200) throw new Error(`entitlements ${res.status}: ${res.text}`);
    return { data: res.json.data as Ent[], cache: res.headers.get('x-accrue-cache') };
  };
  /** `opts.usageBefore`: events ingested before the contract exists, so a backdated period's close (which starts at once) cannot freeze before they arrive. */
  const setUp = async (price: number, contract: Record<string, unknown> = {}, opts: { startsAt?: string; usageBefore?: { count: number; at: string } } = {}) => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await h.client.v1.contracts.products.create({ name: uniqueName('Calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const other = await h.client.v1.contracts.products.create({ name: uniqueName('Storage'), type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    for (const p of [calls, other]) await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: p.data.id, entitled: true, rate_type: 'FLAT', price, starting_at: monthStart(-3) });
    const alias = uniqueName('ent');
    const customer = await h.client.v1.customers.create({ name: 'Ent Co', ingest_aliases: [alias] });
    let n = 0;
    const ingest = (count: number, at = new Date(Date.now() - 1000).toISOString()) => h.client.v1.usage.ingest({
      usage: Array.from({ length: count }, () => ({ transaction_id: `${alias}-${n++}`, customer_id: alias, event_type: 'call', timestamp: at })),
    });
    if (opts.usageBefore) await ingest(opts.usageBefore.count, opts.usageBefore.at);
    const created = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: opts.startsAt ?? monthStart(0), ...contract } as Metronome.V1.ContractCreateParams);
    return { customerId: customer.data.id, contractId: created.data.id, callsId: calls.data.id, otherId: other.data.id, ingest };
  };
  const entitledOf = (data: Ent[]) => Object.fromEntries(data.map((e) => [e.product_id, [e.entitled, e.reason]]));

  test('a gating alert in alarm gates its product; read and ingest tokens may ask; answered from memory', async () => {
    const s = await setUp(10);
    const first = await eventually('the contract started', async () => {
      const r = await ask(s.customerId);
      expect(entitledOf(r.data)).toEqual({ [s.callsId]: [true, 'ACTIVE'], [s.otherId]: [true, 'ACTIVE'] });
      return r;
    });
    expect(first.data.map((e) => e.product_name).sort()).toHaveLength(2);
    // Served from memory once nothing changes (a notice that raced the first read may drop it once).
    await eventually('a cache hit', async () => expect((await ask(s.customerId)).cache).toBe('hit'));
    const token = async (scope: string) => (await http(h.app, 'POST', '/v1/accrue/tokens', { token: h.app.adminToken, body: { name: scope, scope } })).json.data.token as string;
    expect((await ask(s.customerId, await token('ingest'))).data).toHaveLength(2);
    expect((await ask(s.customerId, await token('read'))).data).toHaveLength(2);

    await h.client.v1.alerts.create({ customer_id: s.customerId, alert_type: 'spend_threshold_reached', name: 'spend 150%', threshold: 150, gate_access: true, gate_product_ids: [s.callsId] } as unknown as Metronome.V1.AlertCreateParams);
    await s.ingest(10); // 100 cents on each product: 200 in all
    await eventually('the gate closes on the alert', async () => expect(entitledOf((await ask(s.customerId)).data)).toEqual({
      [s.callsId]: [false, 'alert_in_alarm: spend 150%'], [s.otherId]: [true, 'ACTIVE'],
    }));
    await eventually('a cache hit', async () => expect((await ask(s.customerId)).cache).toBe('hit'));

    const missing = await http(h.app, 'GET', '/v1/accrue/customers/00000000-0000-4000-8000-000000000000/entitlements', { token: h.app.adminToken });
    expect(missing.status).toBe(404);
    const bad = await http(h.app, 'GET', '/v1/accrue/customers/nope/entitlements', { token: h.app.adminToken });
    expect([bad.status, bad.json.message]).toEqual([400, expect.stringMatching(/^customer_id:/)]);
  });

  test('a trial that expires without converting gates everything: trial_expired', async () => {
    const s = await setUp(1, { trial_spec: { length_in_days: 1 } }, { startsAt: new Date(Math.floor((Date.now() - 2 * DAY) / 3_600_000) * 3_600_000).toISOString() });
    await eventually('the trial ended', async () => expect(entitledOf((await ask(s.customerId)).data)).toEqual({
      [s.callsId]: [false, 'trial_expired'], [s.otherId]: [false, 'trial_expired'],
    }), 60_000);
  });

  test('a trial with a spending cap: entitled until the in-trial charges reach the cap', async () => {
    const s = await setUp(10, { trial_spec: { length_in_days: 20, spending_cap: { amount: 100 } } }, { startsAt: new Date(Math.floor((Date.now() - DAY) / 3_600_000) * 3_600_000).toISOString() });
    await eventually('in trial', async () => expect(entitledOf((await ask(s.customerId)).data)).toEqual({ [s.callsId]: [true, 'TRIAL'], [s.otherId]: [true, 'TRIAL'] }));
    await s.ingest(4); // 80 of the 100-cent cap
    await new Promise((r) => setTimeout(r, 1500));
    expect(entitledOf((await ask(s.customerId)).data)).toEqual({ [s.callsId]: [true, 'TRIAL'], [s.otherId]: [true, 'TRIAL'] });
    await s.ingest(1); // 100: the cap is used up
    await eventually('the cap is used up', async () => expect(entitledOf((await ask(s.customerId)).data)).toEqual({
      [s.callsId]: [false, 'trial_spending_cap_reached'], [s.otherId]: [false, 'trial_spending_cap_reached'],
    }));
  });

  test('arrears gate access only under a gating arrears_policy; paying opens it again', async () => {
    const p0 = monthStart(-1);
    // The usage is there before the contracts: last month's close starts as soon as each exists.
    const usageBefore = { count: 3, at: new Date(Date.parse(p0) + 3_600_000).toISOString() };
    const s = await setUp(100, { net_payment_terms_days: 0, approval_policy: { mode: 'NEVER' }, arrears_policy: { gate_access: true } }, { startsAt: p0, usageBefore });
    const lenient = await setUp(100, { net_payment_terms_days: 0, approval_policy: { mode: 'NEVER' } }, { startsAt: p0, usageBefore });
    await eventually('both contracts in arrears', async () => {
      expect(entitledOf((await ask(s.customerId)).data)).toEqual({ [s.callsId]: [false, 'arrears'], [s.otherId]: [false, 'arrears'] });
      expect(entitledOf((await ask(lenient.customerId)).data)).toEqual({ [lenient.callsId]: [true, 'ARREARS'], [lenient.otherId]: [true, 'ARREARS'] });
    }, 150_000);
    const refused = await http(h.app, 'POST', '/v1/contracts/create', { token: h.app.adminToken, body: { customer_id: s.customerId, rate_card_id: (await http(h.app, 'POST', '/v1/contracts/get', { token: h.app.adminToken, body: { customer_id: s.customerId, contract_id: s.contractId } })).json.data.current.rate_card_id, starting_at: monthStart(1), arrears_policy: { gate_access: 'yes' } } });
    expect([refused.status, refused.json.message]).toEqual([400, expect.stringMatching(/^arrears_policy\.gate_access: must be a boolean/)]);
    const retrieved = await http(h.app, 'POST', '/v1/contracts/get', { token: h.app.adminToken, body: { customer_id: s.customerId, contract_id: s.contractId } });
    expect(retrieved.json.data.current.arrears_policy).toEqual({ gate_access: true });
    const invoice = (await h.client.v1.customers.invoices.list({ customer_id: s.customerId })).data.find((i) => i.start_timestamp === p0)!;
    const paid = await http(h.app, 'POST', `/v1/accrue/invoices/${invoice.id}/payments`, { token: h.app.adminToken, body: { amount: invoice.total, reference: 'wire' } });
    expect(paid.status).toBe(201);
    await eventually('access back after payment', async () => expect(entitledOf((await ask(s.customerId)).data)).toEqual({ [s.callsId]: [true, 'ACTIVE'], [s.otherId]: [true, 'ACTIVE'] }));
  });
});
