import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, eventually, http, mailTo, monthStart, startApp, uniqueName, type RunningApp } from './stack.js';

/**
 * Approval policies through HTTP against the real API and worker processes: a contract's
 * `approval_policy` on create and v2 edit (and refused, naming the field, when malformed), the
 * policy deciding which closed periods wait, finance's pending-approval queue with the change
 * from the previous period, and the invoice email with its PDF.
 */
describe('approval policy and the pending-approval queue (end to end)', () => {
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;

  beforeAll(async () => {
    const db = await createTestDatabase('approvalapi');
    orm = db.orm;
    // The operator default stays ALWAYS; contracts bring their own policy.
    app = await startApp({ databaseUrl: db.url, gracePeriod: '1s', env: { ACCRUE_APPROVAL_POLICY: 'ALWAYS' } });
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    await app?.stop();
    await orm?.close();
  });

  async function pricedCustomer(name: string) {
    const alias = uniqueName('appr');
    const billingEmail = `${alias}@customer.test`;
    const customer = await client.v1.customers.create({ name, ingest_aliases: [alias], billing_email: billingEmail } as Metronome.V1.CustomerCreateParams);
    const metric = await client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const product = await client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await client.v1.contracts.rateCards.create({ name: 'card' });
    await client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-4) });
    const calls = async (base: string, n: number, tag: string) => {
      await client.v1.usage.ingest({ usage: Array.from({ length: n }, (_, i) => ({ transaction_id: `${alias}-${tag}-${i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.parse(base) + 3_600_000 + i * 1000).toISOString() })) });
    };
    return { customer, card, billingEmail, calls };
  }

  test('ABOVE lets the small period through and queues the large one with its change; finance approves it from the queue', async () => {
    const { customer, card, billingEmail, calls } = await pricedCustomer('Queue Co');
    const [p0, p1, p2] = [monthStart(-2), monthStart(-1), monthStart(0)];
    await calls(p0, 4, 'p0'); // 400 cents: not above 500
    await calls(p1, 9, 'p1'); // 900 cents: above, and +125 % from 400
    const created = await client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p0, approval_policy: { mode: 'ABOVE', amount: 500 },
    } as Metronome.V1.ContractCreateParams);
    const ids = { customer_id: customer.data.id, contract_id: created.data.id };
    const shown = await client.v1.contracts.retrieve(ids);
    expect((shown.data.current as unknown as { approval_policy: unknown }).approval_policy).toEqual({ mode: 'ABOVE', amount: 500 });

    // Tokens: finance reads the queue, a read-only token may not.
    const token = async (scope: string) => (await http(app, 'POST', '/v1/accrue/tokens', { token: app.adminToken, body: { name: scope, scope } })).json.data.token as string;
    const [finance, reader] = [await token('finance'), await token('read')];
    expect((await http(app, 'GET', '/v1/accrue/invoices/pending-approval', { token: reader })).status).toBe(403);

    const listedPeriods = new Set<string>();
    const queued = await eventually('the large period in the queue', async () => {
      const res = await http(app, 'GET', '/v1/accrue/invoices/pending-approval', { token: finance });
      if (res.status !== 200) throw new Error(`${res.status} ${res.text}`);
      const mine = (res.json.data as { customer_id: string; start_timestamp: string }[]).filter((r) => r.customer_id === customer.data.id);
      for (const r of mine) listedPeriods.add(r.start_timestamp);
      if (mine.length !== 1 || mine[0]!.start_timestamp !== p1) throw new Error(res.text);
      return mine[0] as Record<string, unknown>;
    });
    // The small period, which the policy lets through, is never listed — not even between its freeze and its finalization.
    expect([...listedPeriods]).toEqual([p1]);
    expect(queued).toEqual({
      invoice_id: expect.any(String), customer_id: customer.data.id, customer_name: 'Queue Co', contract_id: created.data.id,
      start_timestamp: p1, end_timestamp: p2, total: 900, previous_total: 400, change_percent: 125, approval_status: 'PENDING_APPROVAL',
      waiting_since: expect.any(String), days_waiting: 0,
    });

    // The small period was finalized by the policy and emailed, PDF attached, with the same total.
    const invoices = (await client.v1.customers.invoices.list({ customer_id: customer.data.id })).data;
    const small = invoices.find((i) => i.start_timestamp === p0)!;
    await eventually('the small invoice emailed', async () => {
      const inv = await client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: small.id });
      if (inv.data.status !== 'FINALIZED' || !(inv.data as unknown as { emailed_at: string | null }).emailed_at) throw new Error(inv.data.status);
    });
    const [mail] = await eventually('the invoice mail', async () => {
      const m = await mailTo(billingEmail);
      if (!m.length) throw new Error('no mail yet');
      return m;
    });
    expect(mail!.subject).toContain('$4.00');
    expect([!!mail!.text, !!mail!.html]).toEqual([true, true]);
    expect(Buffer.from(mail!.attachments[0]!.contentBase64, 'base64').toString('latin1')).toContain('(Total: $4.00) Tj');
    const approvedBy = await orm.em.fork().execute<{ approved_by: string }[]>('select approved_by from invoice where id = ?', [small.id]);
    expect(approvedBy).toEqual([{ approved_by: 'policy:ABOVE' }]);

    // Finance approves from the queue; it leaves the queue.
    const ok = await http(app, 'POST', `/v1/invoices/${queued.invoice_id}/approve`, { token: finance, body: { total: queued.total, approved_by: 'cfo' } });
    expect([ok.status, ok.json.data.status]).toEqual([200, 'FINALIZED']);
    const after = await http(app, 'GET', '/v1/accrue/invoices/pending-approval', { token: finance });
    expect((after.json.data as { customer_id: string }[]).filter((r) => r.customer_id === customer.data.id)).toEqual([]);

    // v2 edit: NEVER from now on; null returns the contract to the operator default.
    expect((await http(app, 'POST', '/v2/contracts/edit', { token: app.adminToken, body: { ...ids, approval_policy: { mode: 'NEVER' } } })).status).toBe(200);
    const v2 = await http(app, 'POST', '/v2/contracts/get', { token: app.adminToken, body: ids });
    expect(v2.json.data.approval_policy).toEqual({ mode: 'NEVER' });
    expect((await http(app, 'POST', '/v2/contracts/edit', { token: app.adminToken, body: { ...ids, approval_policy: null } })).status).toBe(200);
    expect((await http(app, 'POST', '/v2/contracts/get', { token: app.adminToken, body: ids })).json.data.approval_policy).toBeUndefined();
  });

  test('a malformed approval_policy is refused with 400 naming the field, and nothing is written', async () => {
    const { customer, card } = await pricedCustomer('Strict Co');
    const good = await client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(0) });
    const ids = { customer_id: customer.data.id, contract_id: good.data.id };
    const state = async () => (await orm.em.fork().execute<{ n: string; terms: string }[]>(
      `select (select count(*) from contract)::text as n, (select terms::text from contract where id = ?) as terms`, [good.data.id]))[0];
    const cases: [unknown, string, RegExp][] = [
      [{ mode: 'SOMETIMES' }, 'approval_policy.mode', /must be one of ALWAYS, NEVER, ABOVE/],
      [{}, 'approval_policy.mode', /is required/],
      [{ mode: 'ABOVE' }, 'approval_policy.amount', /is required with mode ABOVE/],
      [{ mode: 'ABOVE', amount: -1 }, 'approval_policy.amount', /must be >= 0/],
      [{ mode: 'ABOVE', amount: 'lots' }, 'approval_policy.amount', /must be a number/],
      [{ mode: 'NEVER', amount: 100 }, 'approval_policy.amount', /only used with mode ABOVE/],
      [{ mode: 'ALWAYS', limit: 3 }, 'approval_policy.limit', /not a supported field/],
      ['ALWAYS', 'approval_policy', /must be a JSON object/],
    ];
    for (const [policy, field, message] of cases) {
      const before = await state();
      const create = await http(app, 'POST', '/v1/contracts/create', { token: app.adminToken, body: { customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(0), approval_policy: policy } });
      expect([create.status, create.json.field]).toEqual([400, field]);
      expect(create.json.message).toMatch(message);
      const edit = await http(app, 'POST', '/v2/contracts/edit', { token: app.adminToken, body: { ...ids, approval_policy: policy, update_contract_name: 'renamed' } });
      expect([edit.status, edit.json.field]).toEqual([400, field]);
      expect(await state()).toEqual(before);
    }
  });
});
