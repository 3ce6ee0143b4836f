import { WorkflowNotFoundError } from '@temporalio/client';
import { startHubSpotFake, type HubSpotFake } from './hubspot/server.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, uniqueName } from './stack.js';

/**
 * HubSpot both ways, against a local HubSpot-protocol server driven through the real
 * `@hubspot/api-client`: a signed closed-won webhook creates the customer and the contract once
 * (however often it is delivered), a bad deal gets a note and no contract, and the customer's
 * billing facts (lifecycle state, commit remaining, spend, last invoice, renewal date) reach the
 * company and the deal, with one task for the deal's owner at the renewal notice — while HubSpot
 * answers 429 (Retry-After) and 5xx for a while.
 */
describe('HubSpot: closed-won deals start contracts, and the CRM shows billing state', () => {
  let fake: HubSpotFake;
  const env: Record<string, string> = {};
  beforeAll(async () => {
    fake = await startHubSpotFake({ token: 'pat-test-accrue-local', clientSecret: 'hubspot-secret-accrue-local' });
    Object.assign(env, {
      HUBSPOT_ACCESS_TOKEN: fake.token, HUBSPOT_API_BASE: fake.url, HUBSPOT_CLIENT_SECRET: fake.clientSecret,
      ACCRUE_HUBSPOT_COALESCE: '300ms', ACCRUE_HUBSPOT_SYNC_INTERVAL: '2s', ACCRUE_APPROVAL_POLICY: 'NEVER',
    });
  });
  afterAll(async () => fake?.close());
  const h = useSdkApp('hubspot', { env });
  const hook = () => `${h.app.baseURL}/v1/accrue/webhooks/hubspot`;
  const stageChange = (dealId: string, stage = 'closedwon') => [{
    eventId: Math.floor(Math.random() * 1e9), subscriptionId: 1, portalId: 62515, appId: 1, occurredAt: Date.now(),
    subscriptionType: 'deal.propertyChange', attemptNumber: 0, objectId: Number(dealId), propertyName: 'dealstage', propertyValue: stage, changeSource: 'CRM_UI',
  }];

  /** A rate card (with an alias) pricing calls at 50 cents, and a company with a contact. */
  const setUp = async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const product = await h.client.v1.contracts.products.create({ name: uniqueName('API calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const alias = uniqueName('card');
    const card = await h.client.v1.contracts.rateCards.create({ name: alias, aliases: [{ name: alias }] });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 50, starting_at: monthStart(-6) });
    const company = fake.create('companies', { name: `Acme ${uniqueName('co')}`, domain: 'acme.example', accrue_billing_email: null });
    const contact = fake.create('contacts', { email: `${uniqueName('ap')}@acme.example`, firstname: 'Ada' });
    fake.associate('companies', company.id, 'contacts', contact.id);
    return { alias, rateCardId: card.data.id, company, contact };
  };
  const newDeal = (companyId: string, props: Record<string, string | null>) => {
    const deal = fake.create('deals', { dealname: 'Acme platform deal', dealstage: 'closedwon', hubspot_owner_id: '4242', ...props });
    fake.associate('deals', deal.id, 'companies', companyId);
    return deal;
  };
  const contractsOfDeal = (dealId: string) => h.orm.em.fork().execute<{ id: string; customer_id: string; starting_at: Date; ending_before: Date | null; terms: Record<string, unknown> }[]>(
    'select id::text as id, customer_id::text as customer_id, starting_at, ending_before, terms from contract where uniqueness_key = ?', [`hubspot-deal-${dealId}`]);
  const notesOn = (dealId: string) => fake.associated('deals', dealId, 'notes').map((id) => fake.objects.notes.get(id)!.properties.hs_note_body ?? '');
  const tasksOn = (dealId: string) => fake.associated('deals', dealId, 'tasks').map((id) => fake.objects.tasks.get(id)!.properties);
  const runStatus = async (dealId: string) => (await h.temporal.workflow.getHandle(`crm-deal/${dealId}`).describe()).status.name;

  test('a closed-won deal, delivered four times: one customer (external_id = company id) and one contract; the company and deal show it', async () => {
    const s = await setUp();
    const start = monthStart(0).slice(0, 10);
    const deal = newDeal(s.company.id, { dealstage: 'appointmentscheduled', accrue_rate_card: s.alias, accrue_start_date: start, accrue_term_months: '12' });
    // Created before it is won: the run reads the deal and does nothing.
    expect((await fake.sendWebhook(hook(), [{ ...stageChange(deal.id)[0], subscriptionType: 'deal.creation', propertyName: undefined, propertyValue: undefined }])).status).toBe(200);
    await eventually('not closed-won: nothing', async () => expect(await runStatus(deal.id)).toBe('COMPLETED'));
    expect(await contractsOfDeal(deal.id)).toEqual([]);

    fake.objects.deals.get(deal.id)!.properties.dealstage = 'closedwon';
    const sent = await Promise.all([1, 2, 3].map(() => fake.sendWebhook(hook(), stageChange(deal.id))));
    expect(sent.map((r) => r.status)).toEqual([200, 200, 200]);
    const [contract] = await eventually('contract created', async () => {
      const c = await contractsOfDeal(deal.id);
      expect(c).toHaveLength(1);
      return c;
    });
    await eventually('run completed', async () => expect(await runStatus(deal.id)).toBe('COMPLETED'));
    // Redelivered after the run finished: a new run finds the contract it made.
    expect((await fake.sendWebhook(hook(), stageChange(deal.id))).status).toBe(200);
    await eventually('second run completed', async () => {
      expect(await runStatus(deal.id)).toBe('COMPLETED');
      expect(await h.temporal.workflow.getHandle(`crm-deal/${deal.id}`).result()).toMatchObject({ status: 'EXISTS', contractId: contract!.id });
    });
    expect(await contractsOfDeal(deal.id)).toHaveLength(1);

    const customer = await h.client.v1.customers.retrieve({ customer_id: contract!.customer_id });
    expect(customer.data).toMatchObject({ name: s.company.properties.name, external_id: s.company.id, ingest_aliases: [s.company.id] });
    expect((customer.data as unknown as { billing_email: string }).billing_email).toBe(s.contact.properties.email);
    const got = await http(h.app, 'POST', '/v1/contracts/get', { token: h.app.adminToken, body: { customer_id: contract!.customer_id, contract_id: contract!.id } });
    expect(got.json.data).toMatchObject({ uniqueness_key: `hubspot-deal-${deal.id}` });
    expect(got.json.data.current).toMatchObject({ starting_at: `${start}T00:00:00.000Z`, ending_before: new Date(Date.UTC(Number(start.slice(0, 4)), Number(start.slice(5, 7)) - 1 + 12, 1)).toISOString() });

    // The CRM side: Accrue's properties were created, then written on the company and the deal.
    await eventually('company and deal updated', async () => {
      expect([...fake.properties.companies.keys()]).toEqual(expect.arrayContaining(['accrue_lifecycle_state', 'accrue_commit_remaining', 'accrue_current_period_spend', 'accrue_renewal_date']));
      expect([...fake.properties.deals.keys()]).toEqual(expect.arrayContaining(['accrue_lifecycle_state', 'accrue_last_invoice_status']));
      expect(fake.objects.companies.get(s.company.id)!.properties).toMatchObject({ accrue_lifecycle_state: 'ACTIVE', accrue_current_period_spend: '0.00', accrue_commit_remaining: '', accrue_renewal_date: got.json.data.current.ending_before });
      expect(fake.objects.deals.get(deal.id)!.properties).toMatchObject({ accrue_lifecycle_state: 'ACTIVE', accrue_current_period_spend: '0.00' });
    });
    // Usage sent with the company id as customer_id; the next interval's push shows the spend.
    await h.client.v1.usage.ingest({ usage: [0, 1, 2, 3].map((i) => ({ transaction_id: `${deal.id}-${i}`, customer_id: s.company.id, event_type: 'call', timestamp: new Date(Date.now() - 60_000).toISOString() })) });
    await eventually('spend pushed', async () => {
      expect(fake.objects.companies.get(s.company.id)!.properties.accrue_current_period_spend).toBe('2.00');
      expect(fake.objects.deals.get(deal.id)!.properties.accrue_current_period_spend).toBe('2.00');
    }, 30_000);
    // Ten ingest requests over ~3 s (ten rating passes): the company gets one write per interval, not one per pass.
    const writes = () => fake.requests.filter((r) => r.method === 'PATCH' && r.path.endsWith(`/companies/${s.company.id}`) && r.status === 200).length;
    const t0 = Date.now();
    const w0 = writes();
    for (let b = 0; b < 10; b++) {
      await h.client.v1.usage.ingest({ usage: [{ transaction_id: `${deal.id}-burst-${b}`, customer_id: s.company.id, event_type: 'call', timestamp: new Date(Date.now() - 60_000).toISOString() }] });
      await new Promise((r) => setTimeout(r, 300));
    }
    await eventually('the burst pushed', async () => expect(fake.objects.companies.get(s.company.id)!.properties.accrue_current_period_spend).toBe('7.00'), 30_000);
    const intervals = Math.ceil((Date.now() - t0) / 2000);
    expect(writes() - w0).toBeGreaterThan(0);
    expect(writes() - w0).toBeLessThanOrEqual(intervals + 1);
    expect(writes() - w0).toBeLessThan(10);
    // Nothing changed since: no further writes to the company.
    const before = writes();
    await new Promise((r) => setTimeout(r, 5000));
    expect(writes()).toBe(before);
  });

  test('a deal with missing or invalid properties: a note naming each one, no contract, the run failed; fixed, it becomes a contract', async () => {
    const s = await setUp();
    const deal = newDeal(s.company.id, { accrue_start_date: monthStart(0).slice(0, 10), accrue_term_months: 'twelve' });
    for (let i = 0; i < 2; i++) {
      expect((await fake.sendWebhook(hook(), stageChange(deal.id))).status).toBe(200);
      await eventually('run failed', async () => expect(await runStatus(deal.id)).toBe('FAILED'));
    }
    const notes = notesOn(deal.id);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toContain('accrue_rate_card: is missing');
    expect(notes[0]).toContain('accrue_term_months: must be a whole number from 1 to 120, got "twelve"');
    expect(await contractsOfDeal(deal.id)).toEqual([]);
    const history = await h.temporal.workflow.getHandle(`crm-deal/${deal.id}`).fetchHistory();
    expect(JSON.stringify(history.events?.at(-1)?.workflowExecutionFailedEventAttributes?.failure?.message)).toContain('accrue_rate_card');

    // An unknown rate card alias is caught by the contract's own validation, named as the deal property.
    Object.assign(fake.objects.deals.get(deal.id)!.properties, { accrue_rate_card: 'no-such-card', accrue_term_months: '12' });
    expect((await fake.sendWebhook(hook(), [{ ...stageChange(deal.id)[0], propertyName: 'accrue_rate_card', propertyValue: 'no-such-card' }])).status).toBe(200);
    await eventually('second note', async () => expect(notesOn(deal.id)).toHaveLength(2));
    expect(notesOn(deal.id)[1]).toContain('accrue_rate_card: rate card with alias no-such-card not found');

    fake.objects.deals.get(deal.id)!.properties.accrue_rate_card = s.rateCardId;
    expect((await fake.sendWebhook(hook(), [{ ...stageChange(deal.id)[0], propertyName: 'accrue_rate_card', propertyValue: s.rateCardId }])).status).toBe(200);
    await eventually('contract created', async () => expect(await contractsOfDeal(deal.id)).toHaveLength(1));
    expect(notesOn(deal.id)).toHaveLength(2);
  });

  test('a deal without a company: noted; once the company is associated (deal.associationChange) it becomes a contract', async () => {
    const s = await setUp();
    const deal = fake.create('deals', { dealname: 'Lonely deal', dealstage: 'closedwon', accrue_rate_card: s.alias, accrue_start_date: monthStart(0) });
    expect((await fake.sendWebhook(hook(), stageChange(deal.id))).status).toBe(200);
    await eventually('run failed', async () => expect(await runStatus(deal.id)).toBe('FAILED'));
    expect(notesOn(deal.id)).toEqual([expect.stringContaining('company: the deal has no associated company')]);
    fake.associate('deals', deal.id, 'companies', s.company.id);
    const change = { eventId: 9, subscriptionId: 2, portalId: 62515, appId: 1, occurredAt: Date.now(), subscriptionType: 'deal.associationChange', attemptNumber: 0, changeSource: 'CRM_UI', associationType: 'DEAL_TO_COMPANY', fromObjectId: Number(deal.id), toObjectId: Number(s.company.id), associationRemoved: false, isPrimaryAssociation: true };
    expect((await fake.sendWebhook(hook(), [change])).status).toBe(200);
    await eventually('contract created', async () => expect(await contractsOfDeal(deal.id)).toHaveLength(1));
  });

  test('webhooks that are not HubSpot\'s: wrong secret, stale or missing timestamp, tampered body → 401, nothing started', async () => {
    const s = await setUp();
    const deal = newDeal(s.company.id, { accrue_rate_card: s.alias, accrue_start_date: monthStart(0).slice(0, 10) });
    const events = stageChange(deal.id);
    const refused = [
      await fake.sendWebhook(hook(), events, { secret: 'not-the-secret' }),
      await fake.sendWebhook(hook(), events, { timestamp: Date.now() - 6 * 60_000 }),
      await fake.sendWebhook(hook(), events, { timestamp: Date.now() + 6 * 60_000 }),
      await fake.sendWebhook(hook(), events, { signature: '' }),
    ];
    // Signed over one body, sent with another.
    const body = JSON.stringify(events);
    const ts = String(Date.now());
    const { hubspotV3Signature } = await import('../integrations/hubspot/client.js');
    const sig = hubspotV3Signature(fake.clientSecret, { method: 'POST', uri: hook(), body, timestamp: ts });
    const tampered = await fetch(hook(), { method: 'POST', headers: { 'content-type': 'application/json', 'x-hubspot-signature-v3': sig, 'x-hubspot-request-timestamp': ts }, body: body.replace('closedwon', 'closedwon ') });
    refused.push({ status: tampered.status, body: await tampered.text() });
    expect(refused.map((r) => r.status)).toEqual([401, 401, 401, 401, 401]);
    expect(refused[0]!.body).toContain('X-HubSpot-Signature-v3 does not match');
    expect(refused[1]!.body).toContain('more than 5 minutes');
    await new Promise((r) => setTimeout(r, 1000));
    await expect(h.temporal.workflow.getHandle(`crm-deal/${deal.id}`).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
    expect(await contractsOfDeal(deal.id)).toEqual([]);
  });

  test('HubSpot answering 429 (Retry-After) and 500 for a while: the contract, its invoice, spend, renewal and one owner task all land once', async () => {
    const s = await setUp();
    // Started last month for two months with a $30 prepaid commit (invoiced at the start); the
    // renewal notice 45 days ahead, so it is due already.
    const deal = newDeal(s.company.id, { accrue_rate_card: s.alias, accrue_start_date: monthStart(-1), accrue_term_months: '2', accrue_commit_amount: '30', accrue_renewal_notice_days: '45' });
    fake.fault({ method: 'GET', path: new RegExp(`^/crm/v3/objects/deals/${deal.id}$`), status: 429, count: 2, retryAfterSeconds: 2 });
    fake.fault({ method: 'GET', path: new RegExp(`^/crm/v3/objects/companies/${s.company.id}$`), status: 502, count: 2 });
    fake.fault({ method: 'PATCH', path: new RegExp(`^/crm/v3/objects/companies/${s.company.id}$`), status: 500, count: 3, when: 'after' });
    // The task: first a 429, then created with the answer lost — the retry finds it (no second POST).
    fake.fault({ method: 'POST', path: /^\/crm\/v3\/objects\/tasks$/, status: 429, count: 1, retryAfterSeconds: 1 });
    fake.fault({ method: 'POST', path: /^\/crm\/v3\/objects\/tasks$/, status: 500, count: 1, when: 'after' });
    expect((await fake.sendWebhook(hook(), stageChange(deal.id))).status).toBe(200);
    const [contract] = await eventually('contract created', async () => {
      const c = await contractsOfDeal(deal.id);
      expect(c).toHaveLength(1);
      return c;
    }, 60_000);
    // HubSpot asked for 2 s after each 429 on the deal read: the retries waited that long.
    const dealReads = fake.requests.filter((r) => r.method === 'GET' && r.path === `/crm/v3/objects/deals/${deal.id}`);
    expect(dealReads.slice(0, 3).map((r) => r.status)).toEqual([429, 429, 200]);
    expect(dealReads[1]!.at - dealReads[0]!.at).toBeGreaterThanOrEqual(1900);
    expect(dealReads[2]!.at - dealReads[1]!.at).toBeGreaterThanOrEqual(1900);

    await h.client.v1.usage.ingest({ usage: [0, 1, 2, 3].map((i) => ({ transaction_id: `${deal.id}-now-${i}`, customer_id: s.company.id, event_type: 'call', timestamp: new Date(Date.now() - 60_000).toISOString() })) });
    const invoice = await eventually('last month invoiced', async () => {
      const invoices = (await h.client.v1.customers.invoices.list({ customer_id: contract!.customer_id })).data.filter((i) => i.status === 'FINALIZED');
      expect(invoices).toHaveLength(1);
      return invoices[0]!;
    }, 90_000);
    expect(invoice.total).toBe(3000);
    await eventually('renewing, invoiced, commit drawn, shown on the company and the deal', async () => {
      expect(fake.objects.companies.get(s.company.id)!.properties).toMatchObject({
        accrue_lifecycle_state: 'RENEWING', accrue_current_period_spend: '0.00', accrue_commit_remaining: '28.00', accrue_renewal_date: new Date(contract!.ending_before!).toISOString(),
        accrue_last_invoice_number: invoice.id, accrue_last_invoice_status: 'UNPAID', accrue_last_invoice_total: '30.00',
      });
      expect(fake.objects.deals.get(deal.id)!.properties).toMatchObject({ accrue_lifecycle_state: 'RENEWING', accrue_commit_remaining: '28.00', accrue_last_invoice_number: invoice.id });
    }, 60_000);
    // A payment recorded in Accrue reaches the company as the last invoice's status.
    expect((await http(h.app, 'POST', `/v1/accrue/invoices/${invoice.id}/payments`, { token: h.app.adminToken, body: { amount: 3000, reference: 'wire-1' } })).status).toBe(201);
    await eventually('paid shown', async () => expect(fake.objects.companies.get(s.company.id)!.properties.accrue_last_invoice_status).toBe('PAID'), 30_000);
    // One task for the deal's owner at the renewal notice, despite a 429 and a lost answer.
    await eventually('task', async () => expect(tasksOn(deal.id)).toHaveLength(1), 30_000);
    expect(fake.requests.filter((r) => r.method === 'POST' && r.path === '/crm/v3/objects/tasks').map((r) => r.status)).toEqual([429, 500]);
    expect(tasksOn(deal.id)[0]).toMatchObject({ hubspot_owner_id: '4242', hs_task_status: 'NOT_STARTED', hs_task_subject: 'Renewal coming up: talk to the customer' });
    expect(fake.faultsLeft()).toBe(0);
    await new Promise((r) => setTimeout(r, 3000));
    expect(tasksOn(deal.id)).toHaveLength(1);
    expect(await contractsOfDeal(deal.id)).toHaveLength(1);
  });
});
