import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type Metronome from '@metronome/sdk';
import { chromium, type Browser, type Page } from 'playwright-core';
import { signDashboard } from '../api/dashboard-tokens.js';
import { dashboardSecret } from '../db/console.js';
import { ROOT } from '../stack/config.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, uniqueName } from './stack.js';

/**
 * The console in a real browser (Playwright driving Debian's chromium) against the real stack:
 * finance logs in, approves an invoice and sees it change, rejects another with a reason, reads
 * customers and revenue; a read-only login cannot approve and an expired session is sent back to
 * the login; the approval queue reads itself again when the live feed's connection was lost and
 * made again; a customer's embeddable dashboard shows usage rising live after events are ingested,
 * and an expired, tampered or other customer's URL is refused. Screenshots of every page go to
 * test-results/console/.
 */
const SHOTS = join(ROOT, 'test-results', 'console');

describe('console: finance pages and customer dashboards in a browser', () => {
  // The live feed's connection is probed every second (ACCRUE_CONSOLE_FEED_PROBE).
  const h = useSdkApp('console', { env: { ACCRUE_APPROVAL_POLICY: 'ALWAYS', ACCRUE_TEMPORAL_UI_URL: 'http://127.0.0.1:8233', ACCRUE_CONSOLE_FEED_PROBE: '1s' } });
  let browser: Browser;
  let finance: string;
  let reader: string;
  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    browser = await chromium.launch({ executablePath: process.env.ACCRUE_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    const token = async (scope: string) => (await http(h.app, 'POST', '/v1/accrue/tokens', { token: h.app.adminToken, body: { name: `console ${scope}`, scope } })).json.data.token as string;
    finance = await token('finance');
    reader = await token('read');
  });
  afterAll(async () => browser?.close());

  const shot = (page: Page, name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  const login = async (token: string, viewport = { width: 1280, height: 900 }) => {
    const page = await browser.newPage({ viewport });
    await page.goto(`${h.app.baseURL}/console`);
    await page.getByLabel('Accrue token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('link', { name: 'Approvals' }).waitFor();
    return page;
  };

  /** A customer billed 50 cents a call, with `calls` calls last month on a contract from then: its last-month invoice waits for approval. */
  const billedCustomer = async (name: string, calls: number) => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] }, group_keys: [['region']] } as Metronome.V1.BillableMetricCreateParams);
    const product = await h.client.v1.contracts.products.create({ name: `API calls ${name}`, type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 50, starting_at: monthStart(-2) });
    const alias = uniqueName('console');
    const customer = await h.client.v1.customers.create({ name, ingest_aliases: [alias] });
    let n = 0;
    const ingest = (count: number, at: number, region = 'eu') => h.client.v1.usage.ingest({ usage: Array.from({ length: count }, () => ({ transaction_id: `${alias}-${n++}`, customer_id: alias, event_type: 'call', timestamp: new Date(at).toISOString(), properties: { region } })) });
    await ingest(calls, Date.parse(monthStart(-1)) + 3_600_000);
    const contract = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(-1) });
    const invoice = await eventually(`${name}'s invoice waiting for approval`, async () => {
      const list = (await http(h.app, 'GET', '/v1/accrue/console/queue', { token: finance })).json.data as { invoice_id: string; customer_id: string; total: number }[];
      const mine = list.find((i) => i.customer_id === customer.data.id);
      expect(mine).toBeDefined();
      return mine!;
    }, 90_000);
    return { customerId: customer.data.id, contractId: contract.data.id, invoice, ingest };
  };
  const invoiceOf = async (customerId: string, id: string) => (await http(h.app, 'GET', `/v1/customers/${customerId}/invoices/${id}`, { token: h.app.adminToken })).json.data;

  test('finance approves one invoice and rejects another from the page; customers and revenue show them', async () => {
    const a = await billedCustomer('Approve Co', 4);
    const b = await billedCustomer('Reject Co', 6);
    expect(a.invoice.total).toBe(200);
    const page = await login(finance);
    await page.getByTestId('queue').waitFor();
    await expect(page.locator(`tr[data-invoice="${a.invoice.invoice_id}"]`).textContent()).resolves.toContain('$2.00');
    await shot(page, 'approval-queue');

    // A new invoice entering the queue shows on the open page, without a reload.
    await page.evaluate(() => { (globalThis as { accrueMarker?: number }).accrueMarker = 7; });
    const late = await billedCustomer('Late Co', 1);
    await page.locator(`tr[data-invoice="${late.invoice.invoice_id}"]`).waitFor({ timeout: 30_000 });
    expect(await page.evaluate(() => (globalThis as { accrueMarker?: number }).accrueMarker)).toBe(7);

    await page.locator(`tr[data-invoice="${a.invoice.invoice_id}"]`).getByRole('button', { name: 'Open' }).click();
    await page.getByTestId('lines').waitFor();
    await expect(page.getByTestId('approval-status').textContent()).resolves.toBe('PENDING_APPROVAL');
    await page.getByRole('img', { name: /Usage behind this invoice/ }).waitFor();
    await shot(page, 'invoice-pending');
    await page.getByRole('button', { name: 'Approve $2.00' }).click();
    await page.getByText('Approve: done').waitFor();
    await eventually('approved and finalized on the page', async () => {
      expect(await page.getByTestId('approval-status').textContent()).toBe('APPROVED');
      expect(await page.getByTestId('invoice-status').textContent()).toBe('FINALIZED');
    });
    expect(await invoiceOf(a.customerId, a.invoice.invoice_id)).toMatchObject({ status: 'FINALIZED', approval_status: 'APPROVED' });
    await shot(page, 'invoice-approved');

    // A manual payment from the page.
    await page.getByLabel('Amount in dollars').fill('2.00');
    await page.getByLabel('Reference').fill('wire-2026-001');
    await page.getByRole('button', { name: 'Record payment' }).click();
    await page.getByText('Payment: done').waitFor();
    await eventually('paid', async () => expect(await page.getByTestId('payment-status').textContent()).toBe('PAID'));

    await page.goto(`${h.app.baseURL}/console#/queue`);
    await page.locator(`tr[data-invoice="${b.invoice.invoice_id}"]`).getByRole('button', { name: 'Open' }).click();
    await page.getByLabel('Reason for rejecting').fill('Usage looks doubled: check the EU meter');
    await page.getByRole('button', { name: 'Reject' }).click();
    await page.getByText('Reject: done').waitFor();
    await eventually('rejection recorded', async () => {
      const inv = await http(h.app, 'GET', `/v1/accrue/console/queue`, { token: finance });
      expect((inv.json.data as { invoice_id: string }[]).some((i) => i.invoice_id === a.invoice.invoice_id)).toBe(false);
      const rows = await h.orm.em.fork().execute<{ rejection_reason: string }[]>('select rejection_reason from invoice where customer_id = ? and rejection_reason is not null', [b.customerId]);
      expect(rows.map((r) => r.rejection_reason)).toContain('Usage looks doubled: check the EU meter');
    });
    await shot(page, 'invoice-rejected');

    // Void and regenerate from the page (Late Co's invoice, approved first).
    expect((await http(h.app, 'POST', `/v1/invoices/${late.invoice.invoice_id}/approve`, { token: finance, body: { total: late.invoice.total } })).status).toBe(200);
    await page.goto(`${h.app.baseURL}/console#/invoice/${late.customerId}/${late.invoice.invoice_id}`);
    await eventually('finalized', async () => expect(await page.getByTestId('invoice-status').textContent()).toBe('FINALIZED'));
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Void invoice' }).click();
    await eventually('voided', async () => expect(await page.getByTestId('invoice-status').textContent()).toBe('VOID'));
    await page.getByRole('button', { name: 'Regenerate invoice' }).click();
    await page.getByText('Regenerate: done').waitFor();
    await eventually('regenerated', async () => {
      const rows = await h.orm.em.fork().execute<{ n: number }[]>('select count(*)::int as n from invoice where regenerated_from_invoice_id = ?', [late.invoice.invoice_id]);
      expect(rows).toEqual([{ n: 1 }]);
    });
    await shot(page, 'invoice-voided-regenerated');

    await page.getByRole('link', { name: 'Customers' }).click();
    await page.getByTestId('customers').waitFor();
    const row = page.locator(`tr[data-customer="${a.customerId}"]`);
    await expect(row.textContent()).resolves.toContain('ACTIVE');
    // Each contract links to its workflow in the Temporal UI.
    expect(await row.getByRole('link').first().getAttribute('href')).toBe(`http://127.0.0.1:8233/namespaces/default/workflows/contract%2F${a.contractId}`);
    await shot(page, 'customers');
    await page.getByRole('link', { name: 'Revenue' }).click();
    await eventually('billed revenue shown', async () => expect(await page.getByTestId('billed-total').textContent()).toBe('$2.00'));
    await page.getByRole('img', { name: 'Billed revenue by day and product' }).waitFor();
    await shot(page, 'revenue');
    await page.close();
  });

  test('the queue page reads itself again on ready: an approval made while the live feed was silently gone shows', async () => {
    const c = await billedCustomer('Feed Co', 2);
    const page = await login(finance);
    const row = page.locator(`tr[data-invoice="${c.invoice.invoice_id}"]`);
    await row.waitFor();
    const feed = async () => (await h.orm.em.fork().execute<{ pid: number }[]>(
      `select pid from pg_stat_activity where datname = current_database() and application_name = 'accrue console feed'`)).map((r) => r.pid);
    const [pid] = await eventually('the feed connected', async () => {
      const pids = await feed();
      expect(pids).toHaveLength(1);
      return pids;
    });
    // The feed's backend paused: its connection stays open and answers nothing, so the approval's
    // notice never comes through it. Only the feed noticing (ACCRUE_CONSOLE_FEED_PROBE), listening
    // again and telling the page `ready` can show the page the change.
    process.kill(pid!, 'SIGSTOP');
    try {
      expect((await http(h.app, 'POST', `/v1/invoices/${c.invoice.invoice_id}/approve`, { token: finance, body: { total: c.invoice.total } })).status).toBe(200);
      await row.waitFor({ state: 'detached', timeout: 30_000 });
    } finally {
      process.kill(pid!, 'SIGCONT');
    }
    await page.close();
  });

  test('a read-only login can look but not approve; an expired session goes back to the login, nothing changed', async () => {
    const c = await billedCustomer('Readonly Co', 2);
    const page = await login(reader);
    await expect(page.getByTestId('scope').textContent()).resolves.toBe('read');
    await page.getByTestId('notice').waitFor(); // the queue is finance's: 403 shown
    await expect(page.getByTestId('notice').textContent()).resolves.toContain('scope admin or finance');
    await page.goto(`${h.app.baseURL}/console#/invoice/${c.customerId}/${c.invoice.invoice_id}`);
    await page.getByRole('button', { name: /^Approve/ }).click();
    await eventually('refused', async () => expect(await page.getByTestId('action-message').textContent()).toContain('scope admin or finance'));
    expect(await invoiceOf(c.customerId, c.invoice.invoice_id)).toMatchObject({ approval_status: 'PENDING_APPROVAL' });
    await shot(page, 'read-only-refused');
    await page.close();

    // Revoking the token that logged in ends its sessions at once.
    const doomed = (await http(h.app, 'POST', '/v1/accrue/tokens', { token: h.app.adminToken, body: { name: 'to revoke', scope: 'read' } })).json.data.token as string;
    const r2 = await login(doomed);
    await r2.getByTestId('scope').waitFor();
    await h.orm.em.fork().execute(`update api_token set revoked_at = now() where token_hash = encode(sha256(convert_to(?, 'UTF8')), 'hex')`, [doomed]);
    // The next read (the page moving on, or its live stream reading again on `ready`) meets a 401.
    await r2.evaluate("location.hash = '#/customers'");
    await r2.getByLabel('Accrue token').waitFor();
    await r2.close();
    // The admin token opens the console with finance's scope.
    const adm = await login(h.app.adminToken);
    await expect(adm.getByTestId('scope').textContent()).resolves.toBe('finance');
    await adm.close();

    const f = await login(finance);
    await f.getByTestId('queue').waitFor();
    const sessionToken = await f.evaluate(() => (JSON.parse(sessionStorage.getItem('accrue.console.session')!) as { token: string }).token);
    // The session runs out (its expiry moved into the past): the next request is refused and the page asks for a login again.
    await h.orm.em.fork().execute(`update console_session set expires_at = now() - interval '1 second'`);
    await f.goto(`${h.app.baseURL}/console#/invoice/${c.customerId}/${c.invoice.invoice_id}`);
    await f.getByLabel('Accrue token').waitFor();
    await expect(f.getByTestId('notice').textContent()).resolves.toContain('session has expired');
    const stale = await http(h.app, 'POST', `/v1/invoices/${c.invoice.invoice_id}/approve`, { token: sessionToken, body: { total: c.invoice.total } });
    expect([stale.status, stale.json.message]).toEqual([401, expect.stringContaining('session has expired')]);
    expect(await invoiceOf(c.customerId, c.invoice.invoice_id)).toMatchObject({ approval_status: 'PENDING_APPROVAL' });
    await shot(f, 'session-expired');
    await f.close();
  });

  test('a customer dashboard URL: usage rises live after ingest; expired, tampered and other-customer URLs are refused', async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: 'Tokens', aggregation_type: 'COUNT', event_type_filter: { in_values: ['tokens'] }, group_keys: [['model']] } as Metronome.V1.BillableMetricCreateParams);
    const product = await h.client.v1.contracts.products.create({ name: 'Model tokens', type: 'USAGE', billable_metric_id: metric.data.id });
    const credits = await h.client.v1.contracts.products.create({ name: uniqueName('Credits'), type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 10, starting_at: monthStart(-1) });
    const alias = uniqueName('dash');
    const customer = await h.client.v1.customers.create({ name: 'Dashboard Co', ingest_aliases: [alias] });
    const other = await h.client.v1.customers.create({ name: 'Other Co' });
    await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(0),
      commits: [{ type: 'PREPAID', product_id: credits.data.id, name: 'Prepaid tokens', access_schedule: { schedule_items: [{ amount: 10000, starting_at: monthStart(0), ending_before: monthStart(12) }] } }],
    } as unknown as Metronome.V1.ContractCreateParams);
    let n = 0;
    const ingest = (count: number, model: string) => h.client.v1.usage.ingest({ usage: Array.from({ length: count }, () => ({ transaction_id: `${alias}-${n++}`, customer_id: alias, event_type: 'tokens', timestamp: new Date(Date.now() - 60_000).toISOString(), properties: { model } })) });
    await ingest(3, 'small');

    const { data } = await h.client.v1.dashboards.getEmbeddableURL({ customer_id: customer.data.id, dashboard: 'usage', color_overrides: [{ name: 'UsageLine_0', value: '#7c3aed' }], bm_group_key_overrides: [{ group_key_name: 'model', display_name: 'Model', value_display_names: { large: 'Large model', small: 'Small model' } }] });
    const url = data.url!;
    expect(url).toMatch(new RegExp(`^${h.app.baseURL}/console/embed/usage\\?t=`));
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
    await page.goto(url);
    await eventually('live', async () => expect(await page.getByTestId('live').textContent()).toBe('● live'));
    await eventually('the first usage rated and shown', async () => expect(await page.getByTestId('usage-total-Tokens').textContent()).toBe('3'), 30_000);
    await page.getByRole('img', { name: 'Tokens by Model, per hour' }).waitFor();
    await shot(page, 'dashboard-phone');
    // New usage shows without a reload (server-sent events).
    // A marker in the page's memory: gone if the page reloads.
    await page.evaluate(() => { (globalThis as { accrueMarker?: number }).accrueMarker = 42; });
    await ingest(5, 'large');
    await eventually('usage rose on the open page', async () => expect(await page.getByTestId('usage-total-Tokens').textContent()).toBe('8'), 30_000);
    await eventually('the draft followed', async () => expect(await page.getByTestId('draft-total').textContent()).toBe('$0.00'), 30_000);
    expect(await page.evaluate(() => (globalThis as { accrueMarker?: number }).accrueMarker)).toBe(42);
    // Group values under their display names (bm_group_key_overrides.value_display_names).
    await expect(page.locator('.u-legend').first().textContent()).resolves.toContain('Large model');
    await page.setViewportSize({ width: 1280, height: 900 });
    await shot(page, 'dashboard');
    // The usage dashboard shows usage, not balances; the commits and credits one shows the burn-down.
    expect(await page.getByTestId('balance-remaining').count()).toBe(0);
    const creditsUrl = (await h.client.v1.dashboards.getEmbeddableURL({ customer_id: customer.data.id, dashboard: 'commits_and_credits' })).data.url!;
    await page.goto(creditsUrl);
    await eventually('balance', async () => expect(await page.getByTestId('balance-remaining').textContent()).toBe('$99.20'), 30_000);
    await expect(page.getByTestId('run-out').textContent()).resolves.toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(await page.getByTestId('usage-total-Tokens').count()).toBe(0);
    await shot(page, 'dashboard-credits');

    // Another customer's data with this URL: refused.
    const t = new URL(url).searchParams.get('t')!;
    expect((await fetch(`${h.app.baseURL}/v1/accrue/embed/data?t=${t}&customer_id=${other.data.id}`)).status).toBe(403);
    // Tampered: the payload changed (another customer id), the signature kept.
    const [payload, sig] = t.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
    const forged = `${Buffer.from(JSON.stringify({ ...claims, customerId: other.data.id })).toString('base64url')}.${sig}`;
    await page.goto(`${h.app.baseURL}/console/embed/usage?t=${forged}`);
    await expect(page.getByTestId('error').textContent()).resolves.toContain('signature does not match');
    await shot(page, 'dashboard-tampered');
    // Expired: correctly signed, but past its time.
    const secret = await dashboardSecret(h.orm.em.fork());
    const expired = signDashboard(secret, { ...claims, expiresAt: Date.now() - 1000 });
    await page.goto(`${h.app.baseURL}/console/embed/usage?t=${expired}`);
    await expect(page.getByTestId('error').textContent()).resolves.toContain('expired');
    expect((await fetch(`${h.app.baseURL}/v1/accrue/embed/events?t=${expired}`)).status).toBe(401);
    // Only finance (or admin) makes dashboard URLs; a bad dashboard name is a 400 naming the field.
    expect((await http(h.app, 'POST', '/v1/dashboards/getEmbeddableUrl', { token: reader, body: { customer_id: customer.data.id, dashboard: 'usage' } })).status).toBe(403);
    const bad = await http(h.app, 'POST', '/v1/dashboards/getEmbeddableUrl', { token: finance, body: { customer_id: customer.data.id, dashboard: 'spend' } });
    expect([bad.status, bad.json.message]).toEqual([400, expect.stringContaining('dashboard')]);
    const badColor = await http(h.app, 'POST', '/v1/dashboards/getEmbeddableUrl', { token: finance, body: { customer_id: customer.data.id, dashboard: 'usage', color_overrides: [{ name: 'UsageLine_0', value: 'purple' }] } });
    expect([badColor.status, badColor.json.message]).toEqual([400, expect.stringContaining('color_overrides[0].value')]);
    const badOption = await http(h.app, 'POST', '/v1/dashboards/getEmbeddableUrl', { token: finance, body: { customer_id: customer.data.id, dashboard: 'invoices', dashboard_options: [{ key: 'invoice_status_filter', value: 'PAID' }] } });
    expect([badOption.status, badOption.json.message]).toEqual([400, expect.stringContaining('invoice_status_filter')]);
    await page.close();
  });
});
