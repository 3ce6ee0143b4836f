import Metronome from '@metronome/sdk';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, mailTo, monthStart, uniqueName } from './stack.js';
import { startWebhookReceiver, type ReceivedWebhook } from './webhook-receiver.js';

/**
 * Alerts through @metronome/sdk, evaluated by the rating pass's customers and delivered as signed
 * webhooks to a local receiver (verified with the SDK's own `webhooks.unwrap`) and as emails to
 * the billing contact.
 */
describe('alerts: thresholds crossed by live usage fire once, signed like Metronome', () => {
  const h = useSdkApp('alerts', {
    env: { ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1', ACCRUE_WEBHOOK_RETRY_INITIAL: '200ms', ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL: '1s' },
  });
  let receiver: Awaited<ReturnType<typeof startWebhookReceiver>>;
  let secret = '';
  let endpointId = '';
  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    const created = await http(h.app, 'POST', '/v1/accrue/webhook-endpoints', { token: h.app.adminToken, body: { url: receiver.url } });
    expect(created.status).toBe(201);
    secret = created.json.data.secret;
    endpointId = created.json.data.id;
    expect(secret).toMatch(/^whsec_/);
  });
  afterAll(async () => receiver?.close());

  /** Every webhook about this customer, each verified with the official SDK (throws on a bad signature). */
  const hooksFor = (customerId: string, type?: string): ReceivedWebhook[] => receiver.received.filter((w) => {
    if (w.properties.customer_id !== customerId || (type && w.type !== type)) return false;
    h.client.webhooks.unwrap(w.body, w.headers as Record<string, string>, secret);
    return true;
  });
  const delivered = (customerId: string, type: string) => [...new Set(hooksFor(customerId, type).filter((w) => w.answered === 200).map((w) => w.id))];

  /** A metric, product and card: tokens by model at 2 cents each, from this month on. */
  const catalog = async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('tokens'), aggregation_type: 'SUM', aggregation_key: 'tokens', event_type_filter: { in_values: ['llm'] }, group_keys: [['model']] });
    const product = await h.client.v1.contracts.products.create({ name: 'Tokens', type: 'USAGE', billable_metric_id: metric.data.id, pricing_group_key: ['model'] });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Prepaid', type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 2, starting_at: monthStart(-1) });
    return { metricId: metric.data.id, productId: product.data.id, fixedId: fixed.data.id, cardId: card.data.id };
  };
  const customerWithContract = async (c: Awaited<ReturnType<typeof catalog>>, extra: Record<string, unknown> = {}) => {
    const alias = uniqueName('alerts');
    const email = `${alias}@alerts.test`;
    const customer = await h.client.v1.customers.create({ name: `Alert Co ${alias}`, ingest_aliases: [alias], billing_email: email } as Metronome.V1.CustomerCreateParams);
    const contract = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: c.cardId, starting_at: monthStart(0), ...extra } as Metronome.V1.ContractCreateParams);
    let n = 0;
    const ingest = (model: string, tokens: number) => h.client.v1.usage.ingest({
      usage: [{ transaction_id: `${alias}-${n++}`, customer_id: alias, event_type: 'llm', timestamp: new Date(Date.now() - 1000).toISOString(), properties: { tokens, model } }],
    });
    return { customerId: customer.data.id, contractId: contract.data.id, email, ingest };
  };
  const statuses = async (customerId: string, alertStatuses?: ('ENABLED' | 'ARCHIVED')[]) => Object.fromEntries(
    (await h.client.v1.customers.alerts.list({ customer_id: customerId, ...(alertStatuses ? { alert_statuses: alertStatuses } : {}) })).data.map((a) => [a.alert.name, a.customer_status]));

  test('spend, usage with group values, invoice total: each fires once when crossed, again after reset; archive; evaluate_on_create; uniqueness_key', async () => {
    const c = await catalog();
    const { customerId, email, ingest } = await customerWithContract(c);
    const create = (p: Record<string, unknown>) => h.client.v1.alerts.create({ customer_id: customerId, ...p } as unknown as Metronome.V1.AlertCreateParams);
    const spend = await create({ alert_type: 'spend_threshold_reached', name: 'spend $10', threshold: 1000, uniqueness_key: `${customerId}-spend` });
    await create({ alert_type: 'usage_threshold_reached', name: 'large tokens 300', threshold: 300, billable_metric_id: c.metricId, group_values: [{ key: 'model', value: 'large' }] });
    await create({ alert_type: 'invoice_total_reached', name: 'invoice $50', threshold: 5000 });
    await eventually('first evaluation', async () => expect(await statuses(customerId)).toEqual({ 'spend $10': 'ok', 'large tokens 300': 'ok', 'invoice $50': 'ok' }));

    await ingest('small', 400); // spend 800
    await ingest('large', 200); // spend 1,200 → spend fires; large usage 200
    const firstSpend = await eventually('the spend alert webhook', async () => {
      const ids = delivered(customerId, 'alerts.spend_threshold_reached');
      expect(ids).toHaveLength(1);
      return ids[0];
    });
    expect(await statuses(customerId)).toEqual({ 'spend $10': 'in_alarm', 'large tokens 300': 'ok', 'invoice $50': 'ok' });
    await ingest('large', 150); // large usage 350 → usage fires; spend 1,500 stays in alarm
    await eventually('the usage alert webhook', async () => expect(delivered(customerId, 'alerts.usage_threshold_reached')).toHaveLength(1));
    const usageHook = hooksFor(customerId, 'alerts.usage_threshold_reached')[0]!;
    expect(usageHook.properties).toMatchObject({ alert_name: 'large tokens 300', threshold: 300, value: '350', billable_metric_id: c.metricId });
    const spendHook = hooksFor(customerId, 'alerts.spend_threshold_reached')[0]!;
    expect(spendHook.properties).toMatchObject({ alert_id: spend.data.id, threshold: 1000, value: '1200' });
    expect(await statuses(customerId)).toEqual({ 'spend $10': 'in_alarm', 'large tokens 300': 'in_alarm', 'invoice $50': 'ok' });
    // An invoice total alert the draft (1,500) is already at fires as soon as it is created.
    await create({ alert_type: 'invoice_total_reached', name: 'invoice $15', threshold: 1500 });
    await eventually('the invoice total alert', async () => expect(delivered(customerId, 'alerts.invoice_total_reached')).toHaveLength(1));
    expect(hooksFor(customerId, 'alerts.invoice_total_reached')[0]!.properties).toMatchObject({ alert_name: 'invoice $15', value: '1500' });
    const got = await h.client.v1.customers.alerts.retrieve({ alert_id: spend.data.id, customer_id: customerId });
    expect(got.data.triggered_by).toMatch(/1200 >= 1000/);

    // A tampered body or a wrong secret does not verify.
    expect(() => h.client.webhooks.unwrap(spendHook.body.replace('1200', '1300'), spendHook.headers as Record<string, string>, secret)).toThrow();
    expect(() => h.client.webhooks.unwrap(spendHook.body, spendHook.headers as Record<string, string>, 'whsec_wrong')).toThrow();

    // The billing contact's email, once per crossing.
    await eventually('the alert emails', async () => expect((await mailTo(email)).map((m) => m.subject).sort()).toEqual(['Alert: invoice $15', 'Alert: large tokens 300', 'Alert: spend $10']));

    // Reset: evaluated afresh, and still over the threshold → fires again with a new id.
    await h.client.v1.customers.alerts.reset({ alert_id: spend.data.id, customer_id: customerId });
    await eventually('the spend alert fired again after reset', async () => expect(delivered(customerId, 'alerts.spend_threshold_reached')).toHaveLength(2));
    expect(delivered(customerId, 'alerts.spend_threshold_reached')).toContain(firstSpend);

    // evaluate_on_create false: already over the threshold, recorded in alarm without firing; true fires at once.
    await create({ alert_type: 'spend_threshold_reached', name: 'spend $5 quiet', threshold: 500, evaluate_on_create: false });
    await create({ alert_type: 'spend_threshold_reached', name: 'spend $5 loud', threshold: 500 });
    await eventually('evaluate_on_create', async () => {
      const named = hooksFor(customerId, 'alerts.spend_threshold_reached').map((w) => w.properties.alert_name);
      expect(named.filter((n) => n === 'spend $5 loud')).toHaveLength(1);
      expect((await statuses(customerId))['spend $5 quiet']).toBe('in_alarm');
    });
    expect(hooksFor(customerId).filter((w) => w.properties.alert_name === 'spend $5 quiet')).toHaveLength(0);

    // uniqueness_key: 409 while in use, free again once released by archive.
    await expect(create({ alert_type: 'spend_threshold_reached', name: 'dup', threshold: 1, uniqueness_key: `${customerId}-spend` })).rejects.toMatchObject({ status: 409 });
    await h.client.v1.alerts.archive({ id: spend.data.id, release_uniqueness_key: true });
    await create({ alert_type: 'spend_threshold_reached', name: 'spend $10 again', threshold: 1000, uniqueness_key: `${customerId}-spend` });
    const enabled = await statuses(customerId);
    expect(Object.keys(enabled)).not.toContain('spend $10');
    expect((await statuses(customerId, ['ARCHIVED']))['spend $10']).toBeNull();

    // Not crossed: the invoice total never reached $50, and nothing was sent for it.
    expect(hooksFor(customerId, 'alerts.invoice_total_reached').filter((w) => w.properties.alert_name === 'invoice $50')).toHaveLength(0);
    // Exactly once: every delivered notification id is unique per crossing.
    const alertHooks = hooksFor(customerId).filter((w) => w.type.startsWith('alerts.'));
    expect(new Set(alertHooks.map((w) => w.id)).size).toBe(alertHooks.length);
  });

  test('commit and credit balances: low balance and low percentage alerts as usage draws them down', async () => {
    const c = await catalog();
    const schedule = (amount: number) => ({ schedule_items: [{ amount, starting_at: monthStart(0), ending_before: monthStart(2) }] });
    const committed = await customerWithContract(c, { commits: [{ type: 'PREPAID', name: 'Commit', product_id: c.fixedId, priority: 1, access_schedule: schedule(1000) }] });
    const credited = await customerWithContract(c, { credits: [{ name: 'Credit', product_id: c.fixedId, priority: 1, access_schedule: schedule(1000) }] });
    const plain = await customerWithContract(c);
    const everyone = uniqueName('all');
    for (const [type, threshold] of [['low_remaining_commit_balance_reached', 300], ['low_remaining_commit_percentage_reached', 50], ['low_credit_balance_reached', 300], ['low_remaining_credit_percentage_reached', 50]] as const) {
      await h.client.v1.alerts.create({ alert_type: type, name: `${everyone} ${type}`, threshold } as Metronome.V1.AlertCreateParams); // every customer
    }
    const names = (s: Record<string, string | null>) => Object.fromEntries(Object.entries(s).filter(([k]) => k.startsWith(everyone)).map(([k, v]) => [k.slice(everyone.length + 1), v]));
    await eventually('first evaluation', async () => expect(names(await statuses(committed.customerId))).toEqual({
      low_remaining_commit_balance_reached: 'ok', low_remaining_commit_percentage_reached: 'ok', low_credit_balance_reached: 'ok', low_remaining_credit_percentage_reached: 'ok',
    }));

    await committed.ingest('small', 300); // 600 of 1,000 used: 40 % left
    await credited.ingest('small', 400); // 800 used: 200 left, 20 %
    await plain.ingest('small', 1000); // no commit, no credit: nothing to alarm on
    await eventually('the balance alerts', async () => {
      expect(names(await statuses(committed.customerId))).toEqual({
        low_remaining_commit_balance_reached: 'ok', low_remaining_commit_percentage_reached: 'in_alarm', low_credit_balance_reached: 'ok', low_remaining_credit_percentage_reached: 'ok',
      });
      expect(names(await statuses(credited.customerId))).toEqual({
        low_remaining_commit_balance_reached: 'ok', low_remaining_commit_percentage_reached: 'ok', low_credit_balance_reached: 'in_alarm', low_remaining_credit_percentage_reached: 'in_alarm',
      });
      expect(delivered(committed.customerId, 'alerts.low_remaining_commit_percentage_reached')).toHaveLength(1);
      expect(delivered(credited.customerId, 'alerts.low_remaining_credit_balance_reached')).toHaveLength(1);
      expect(delivered(credited.customerId, 'alerts.low_remaining_credit_percentage_reached')).toHaveLength(1);
    });
    await committed.ingest('small', 100); // 800 used: 200 left
    await eventually('the commit balance alert', async () => expect(delivered(committed.customerId, 'alerts.low_remaining_commit_balance_reached')).toHaveLength(1));
    expect(hooksFor(committed.customerId, 'alerts.low_remaining_commit_percentage_reached')[0]!.properties.value).toBe('40');
    expect(Object.values(names(await statuses(plain.customerId)))).toEqual(['ok', 'ok', 'ok', 'ok']);
    expect(hooksFor(plain.customerId).filter((w) => w.type.startsWith('alerts.'))).toHaveLength(0);

    // A top-up takes the credit alerts out of alarm without any usage (the grant's write marks the
    // customer); falling low again fires them again, with new ids.
    await h.client.v2.contracts.edit({ customer_id: credited.customerId, contract_id: credited.contractId, add_credits: [{ product_id: c.fixedId, priority: 1, access_schedule: schedule(1000) }] } as Metronome.V2.ContractEditParams);
    await eventually('the top-up leaves alarm', async () => expect(names(await statuses(credited.customerId))).toMatchObject({ low_credit_balance_reached: 'ok', low_remaining_credit_percentage_reached: 'ok' }));
    await credited.ingest('small', 500); // 1,000 more: 200 of 2,000 left, 10 %
    await eventually('fired again', async () => {
      expect(delivered(credited.customerId, 'alerts.low_remaining_credit_balance_reached')).toHaveLength(2);
      expect(delivered(credited.customerId, 'alerts.low_remaining_credit_percentage_reached')).toHaveLength(2);
    });
  });

  test('a receiver answering 500 gets the same notification again until it answers 200; the deliveries show every attempt', async () => {
    const c = await catalog();
    const { customerId, ingest } = await customerWithContract(c);
    let failures = 0;
    receiver.answerWith((w) => (w.properties.customer_id === customerId && w.type === 'alerts.spend_threshold_reached' && failures++ < 3 ? 500 : 200));
    await h.client.v1.alerts.create({ customer_id: customerId, alert_type: 'spend_threshold_reached', name: 'flaky', threshold: 10 } as Metronome.V1.AlertCreateParams);
    await ingest('small', 10);
    await eventually('delivered once the receiver recovers', async () => expect(delivered(customerId, 'alerts.spend_threshold_reached')).toHaveLength(1));
    receiver.answerWith(() => 200);
    const attempts = hooksFor(customerId, 'alerts.spend_threshold_reached');
    expect(attempts.map((w) => w.answered)).toEqual([500, 500, 500, 200]);
    expect(new Set(attempts.map((w) => w.id)).size).toBe(1);
    expect(new Set(attempts.map((w) => w.body)).size).toBe(1);
    const deliveries = await http(h.app, 'GET', `/v1/accrue/webhook-endpoints/${endpointId}/deliveries?status=DELIVERED`, { token: h.app.adminToken });
    const mine = (deliveries.json.data as { notification_id: string; attempts: number; last_status_code: number; status: string; next_attempt_at: string | null }[]).find((d) => d.notification_id === attempts[0]!.id)!;
    expect(mine).toMatchObject({ attempts: 4, last_status_code: 200, status: 'DELIVERED', next_attempt_at: null });
  });

  test('lifecycle and invoice notifications reach the endpoint; an archived endpoint gets nothing new', async () => {
    const c = await catalog();
    const { customerId } = await customerWithContract(c);
    await eventually('contract.create', async () => expect(delivered(customerId, 'contract.create')).toHaveLength(1));
    const other = await startWebhookReceiver();
    try {
      const created = await http(h.app, 'POST', '/v1/accrue/webhook-endpoints', { token: h.app.adminToken, body: { url: other.url, event_types: ['contract.create'] } });
      const list = await http(h.app, 'GET', '/v1/accrue/webhook-endpoints', { token: h.app.adminToken });
      expect(list.json.data.find((e: { id: string }) => e.id === created.json.data.id)).toMatchObject({ url: other.url, event_types: ['contract.create'], status: 'active' });
      expect(JSON.stringify(list.json.data)).not.toContain('whsec_');
      const second = await customerWithContract(c);
      await eventually('the filtered endpoint gets contract.create', async () => expect(other.received.filter((w) => w.properties.customer_id === second.customerId).map((w) => w.type)).toEqual(['contract.create']));
      await http(h.app, 'POST', `/v1/accrue/webhook-endpoints/${created.json.data.id}/archive`, { token: h.app.adminToken });
      const third = await customerWithContract(c);
      await eventually('the main endpoint gets it', async () => expect(delivered(third.customerId, 'contract.create')).toHaveLength(1));
      expect(other.received.filter((w) => w.properties.customer_id === third.customerId)).toHaveLength(0);
    } finally {
      await other.close();
    }
  });

  test('bad input names the field and writes nothing', async () => {
    const c = await catalog();
    const { customerId } = await customerWithContract(c);
    const post = (path: string, body: unknown) => http(h.app, 'POST', path, { token: h.app.adminToken, body });
    const cases: [string, unknown, RegExp][] = [
      ['/v1/alerts/create', { alert_type: 'low_remaining_days_in_plan_reached', name: 'x', threshold: 1 }, /^alert_type: "low_remaining_days_in_plan_reached" is not supported/],
      ['/v1/alerts/create', { alert_type: 'spend_threshold_reached', name: 'x', threshold: -5 }, /^threshold: must not be negative/],
      ['/v1/alerts/create', { alert_type: 'usage_threshold_reached', name: 'x', threshold: 5 }, /^billable_metric_id: is required/],
      ['/v1/alerts/create', { alert_type: 'spend_threshold_reached', name: 'x', threshold: 5, plan_id: customerId }, /^plan_id: is not supported/],
      ['/v1/alerts/create', { alert_type: 'low_remaining_commit_percentage_reached', name: 'x', threshold: 150 }, /^threshold: is a percentage/],
      ['/v1/alerts/create', { alert_type: 'invoice_total_reached', name: 'x', threshold: 5, group_values: [{ key: 'model' }] }, /^group_values: is only supported/],
      ['/v1/accrue/webhook-endpoints', { url: 'ftp://example.com/hook' }, /^url: must be an http\(s\) URL/],
      ['/v1/accrue/webhook-endpoints', { url: 'not a url' }, /^url: must be an absolute http\(s\) URL/],
      ['/v1/accrue/webhook-endpoints', { url: 'https://example.com/hook', event_types: ['invoice.paid'] }, /^event_types\[0\]: "invoice.paid" is not an event type/],
    ];
    const before = (await h.orm.em.fork().execute<{ n: string }[]>(`select (select count(*) from alert) + (select count(*) from webhook_endpoint) as n`))[0]!.n;
    for (const [path, body, message] of cases) {
      const res = await post(path, body);
      expect([path, res.status]).toEqual([path, 400]);
      expect(res.json.error?.message ?? res.json.message).toMatch(message);
    }
    const after = (await h.orm.em.fork().execute<{ n: string }[]>(`select (select count(*) from alert) + (select count(*) from webhook_endpoint) as n`))[0]!.n;
    expect(after).toBe(before);
  });
});
