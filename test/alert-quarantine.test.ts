import Metronome from '@metronome/sdk';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, uniqueName } from './stack.js';

/**
 * One customer's stored data that cannot be evaluated never stops anyone else's alerts (nor
 * recharges, evaluated in the same rounds): data as an older Accrue could have stored it — a
 * 101-digit alert threshold, a commit amount of 102 digits — is written straight into PostgreSQL,
 * then usage arrives for those customers and, after them, for a canary. The canary's alert fires;
 * the bad alert is quarantined for its customer alone (its other alert fires); the customer whose
 * drafts cannot be computed is quarantined whole; both are counted by /health; the console's
 * customers page still answers, naming the customer it cannot compute. Archiving the bad alert,
 * or repairing the data and resetting the alert, releases the quarantine.
 */
describe('alert evaluation quarantine', () => {
  const h = useSdkApp('alertquar');

  test('a bad threshold or bad stored amounts quarantine their customer; another customer\'s alert still fires', async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['qcall'] } });
    const product = await h.client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Prepaid', type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('qcard') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 5, starting_at: monthStart(-1) });
    const customer = async (name: string, commits: unknown[] = []) => {
      const alias = uniqueName('q');
      const c = await h.client.v1.customers.create({ name, ingest_aliases: [alias] });
      const contract = await h.client.v1.contracts.create({ customer_id: c.data.id, rate_card_id: card.data.id, starting_at: monthStart(0), commits } as unknown as Metronome.V1.ContractCreateParams);
      const alert = async (threshold: number) => (await h.client.v1.alerts.create({ customer_id: c.data.id, alert_type: 'spend_threshold_reached', name: `${name} ${threshold}`, threshold })).data.id;
      const calls = (n: number) => h.client.v1.usage.ingest({ usage: Array.from({ length: n }, (_, i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'qcall', timestamp: new Date(Date.now() - 60_000).toISOString() })) });
      const status = async (alertId: string) => (await h.client.v1.customers.alerts.retrieve({ alert_id: alertId, customer_id: c.data.id })).data.customer_status;
      return { id: c.data.id, contractId: contract.data.id, alert, calls, status };
    };
    const db = h.orm.em.fork();

    // B: one alert whose stored threshold has 101 digits (the decimal helper reads at most 100), one sound alert.
    const b = await customer('Bad threshold Co');
    const bBad = await b.alert(1);
    const bGood = await b.alert(10);
    await db.execute(`update alert set threshold = ('1' || repeat('0', 100))::numeric where id = ?`, [bBad]);
    // C: a prepaid commit whose stored amount has 102 digits: none of its drafts can be computed.
    const c = await customer('Bad commit Co', [{ type: 'PREPAID', product_id: fixed.data.id, access_schedule: { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(12) }] } }]);
    const cAlert = await c.alert(10);
    await db.execute(`update balance_grant set access_schedule = jsonb_set(access_schedule, '{schedule_items,0,amount}', to_jsonb('1' || repeat('0', 101))) where contract_id = ?`, [c.contractId]);
    await b.calls(3);
    await c.calls(3);
    // A, the canary, after them: its round includes B and C.
    const a = await customer('Canary Co');
    const aAlert = await a.alert(10);
    await a.calls(3);

    await eventually('the canary\'s alert in alarm', async () => {
      expect(await a.status(aAlert)).toBe('in_alarm');
    });
    await eventually('B\'s sound alert in alarm', async () => {
      expect(await b.status(bGood)).toBe('in_alarm');
    });
    const quarantined = await eventually('B\'s bad alert and C quarantined', async () => {
      const rows = await db.execute<{ customer_id: string; alert_id: string | null; reason: string }[]>(
        'select customer_id::text as customer_id, alert_id::text as alert_id, reason from alert_quarantine order by quarantined_at');
      expect(rows).toHaveLength(2);
      return rows;
    });
    expect(quarantined).toEqual(expect.arrayContaining([
      { customer_id: b.id, alert_id: bBad, reason: expect.stringMatching(/not a decimal number/) },
      { customer_id: c.id, alert_id: null, reason: expect.stringMatching(/not a decimal number/) },
    ]));
    expect(await c.status(cAlert)).toBe('evaluating');
    const health = await http(h.app, 'GET', '/health');
    expect(health.json).toMatchObject({ status: 'ok', quarantined_alert_customers: 2 });

    // The console's customers page answers for everyone, naming the customer it cannot compute.
    const page = await http(h.app, 'GET', '/v1/accrue/console/customers', { token: h.app.adminToken });
    expect(page.status).toBe(200);
    const shown = new Map((page.json.data as { id: string; error?: string }[]).map((x) => [x.id, x]));
    expect(shown.get(c.id)).toMatchObject({ error: expect.stringMatching(/cannot be computed/), commit_remaining: null });
    expect(shown.get(a.id)?.error).toBeUndefined();

    // Archiving the bad alert releases B's quarantine.
    expect((await http(h.app, 'POST', '/v1/alerts/archive', { token: h.app.adminToken, body: { id: bBad } })).status).toBe(200);
    expect(await db.execute('select alert_id::text as alert_id from alert_quarantine where customer_id = ?', [b.id])).toEqual([]);
    // The operator repairs C's commit and resets its alert: C is evaluated again, and fires.
    await db.execute(`update balance_grant set access_schedule = jsonb_set(access_schedule, '{schedule_items,0,amount}', to_jsonb('1000'::text)) where contract_id = ?`, [c.contractId]);
    expect((await http(h.app, 'POST', '/v1/customer-alerts/reset', { token: h.app.adminToken, body: { alert_id: cAlert, customer_id: c.id } })).status).toBe(200);
    expect(await db.execute('select customer_id from alert_quarantine')).toEqual([]);
    await eventually('C\'s alert in alarm once released', async () => {
      expect(await c.status(cAlert)).toBe('in_alarm');
    });
  });
});
