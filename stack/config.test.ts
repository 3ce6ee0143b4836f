import { loadHubSpotSettings } from './config.js';

describe('HubSpot settings from the environment', () => {
  test('off without a token; defaults', () => {
    expect(loadHubSpotSettings({})).toEqual({
      closedWonStage: 'closedwon', syncIntervalMs: 3_600_000, coalesceMs: 10_000,
      properties: {
        current_period_spend: 'accrue_current_period_spend', commit_remaining: 'accrue_commit_remaining', lifecycle_state: 'accrue_lifecycle_state',
        last_invoice_number: 'accrue_last_invoice_number', last_invoice_total: 'accrue_last_invoice_total', last_invoice_status: 'accrue_last_invoice_status', renewal_date: 'accrue_renewal_date',
      },
    });
  });

  test('everything set, properties renamed', () => {
    const s = loadHubSpotSettings({
      HUBSPOT_ACCESS_TOKEN: 'pat-x', HUBSPOT_API_BASE: 'http://127.0.0.1:9000/', HUBSPOT_CLIENT_SECRET: 'sec', ACCRUE_HUBSPOT_CLOSED_WON_STAGE: 'contractsigned',
      ACCRUE_PUBLIC_URL: 'https://billing.example.com/', ACCRUE_HUBSPOT_PROPERTIES: 'lifecycle_state=billing_state, renewal_date=renews_on',
      ACCRUE_HUBSPOT_SYNC_INTERVAL: '15m', ACCRUE_HUBSPOT_COALESCE: '2s', ACCRUE_HUBSPOT_COMMIT_PRODUCT: '0F8B2A4E-1C2D-4E5F-8A9B-0C1D2E3F4A5B',
    });
    expect(s).toMatchObject({
      accessToken: 'pat-x', apiBase: 'http://127.0.0.1:9000', clientSecret: 'sec', closedWonStage: 'contractsigned', publicUrl: 'https://billing.example.com',
      syncIntervalMs: 900_000, coalesceMs: 2000, commitProductId: '0f8b2a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b',
    });
    expect(s.properties).toMatchObject({ lifecycle_state: 'billing_state', renewal_date: 'renews_on', current_period_spend: 'accrue_current_period_spend' });
  });

  test.each([
    [{ HUBSPOT_API_BASE: 'http://127.0.0.1:9000/crm' }, /HUBSPOT_API_BASE must be a URL/],
    [{ ACCRUE_HUBSPOT_PROPERTIES: 'spend=x' }, /"spend" is not one of current_period_spend/],
    [{ ACCRUE_HUBSPOT_PROPERTIES: 'lifecycle_state=Billing State' }, /lifecycle_state needs a HubSpot property name/],
    [{ ACCRUE_HUBSPOT_PROPERTIES: 'lifecycle_state=accrue_renewal_date' }, /two fields have the same property name/],
    [{ ACCRUE_HUBSPOT_SYNC_INTERVAL: '2d' }, /at most 24h/],
    [{ ACCRUE_HUBSPOT_SYNC_INTERVAL: 'hourly' }, /ACCRUE_HUBSPOT_SYNC_INTERVAL must be a duration/],
    [{ ACCRUE_HUBSPOT_COMMIT_PRODUCT: 'prepaid' }, /ACCRUE_HUBSPOT_COMMIT_PRODUCT must be a product id/],
    [{ ACCRUE_PUBLIC_URL: 'billing.example.com' }, /ACCRUE_PUBLIC_URL must be a URL/],
  ])('%j is refused, naming the variable', (env, message) => {
    expect(() => loadHubSpotSettings(env)).toThrow(message);
  });
});
