import { changedProperties, crmPropertyValues, dealDate, dealProblemNote, planContractFromDeal } from './crm.js';

const names = {
  current_period_spend: 'accrue_current_period_spend', commit_remaining: 'accrue_commit_remaining', lifecycle_state: 'accrue_lifecycle_state',
  last_invoice_number: 'accrue_last_invoice_number', last_invoice_total: 'accrue_last_invoice_total', last_invoice_status: 'accrue_last_invoice_status', renewal_date: 'accrue_renewal_date',
};

describe('planContractFromDeal: what a closed-won deal asks for', () => {
  test.each([
    ['alias, date, term, commit, trial, notice',
      { dealname: 'Acme', accrue_rate_card: 'enterprise-2026', accrue_start_date: '2026-03-01', accrue_term_months: '12', accrue_commit_amount: '1,250.50', accrue_trial_days: '14', accrue_renewal_notice_days: '60', accrue_net_payment_terms_days: '0' },
      { rateCard: { alias: 'enterprise-2026' }, startingAt: '2026-03-01T00:00:00.000Z', endingBefore: '2027-03-01T00:00:00.000Z', commitCents: '125050', trialDays: 14, renewalNoticeDays: 60, netPaymentTermsDays: 0, name: 'Acme' }],
    ['a rate card id, HubSpot epoch-ms date, open-ended',
      { accrue_rate_card: '0F8B2A4E-1C2D-4E5F-8A9B-0C1D2E3F4A5B', accrue_start_date: String(Date.UTC(2026, 0, 31)), accrue_term_months: '', accrue_commit_amount: null },
      { rateCard: { id: '0f8b2a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b' }, startingAt: '2026-01-31T00:00:00.000Z', name: 'HubSpot deal 77' }],
    ['a month-end start clamps the end date',
      { accrue_rate_card: 'x', accrue_start_date: '2026-01-31T00:00:00Z', accrue_term_months: '1' },
      { rateCard: { alias: 'x' }, startingAt: '2026-01-31T00:00:00.000Z', endingBefore: '2026-02-28T00:00:00.000Z', name: 'HubSpot deal 77' }],
  ])('%s', (_name, props, plan) => {
    expect(planContractFromDeal('77', props)).toEqual({ plan });
  });

  test.each([
    ['nothing set', {}, ['accrue_rate_card', 'accrue_start_date']],
    ['bad values', { accrue_rate_card: 'x', accrue_start_date: '03/01/2026', accrue_term_months: 'twelve', accrue_trial_days: '0', accrue_renewal_notice_days: '-1' },
      ['accrue_start_date', 'accrue_term_months', 'accrue_trial_days', 'accrue_renewal_notice_days']],
    ['a commit without a term, with three decimals', { accrue_rate_card: 'x', accrue_start_date: '2026-03-01', accrue_commit_amount: '10.005' }, ['accrue_commit_amount']],
    ['a commit without a term', { accrue_rate_card: 'x', accrue_start_date: '2026-03-01', accrue_commit_amount: '10' }, ['accrue_commit_amount']],
    ['negative or exponent commits', { accrue_rate_card: 'x', accrue_start_date: '2026-03-01', accrue_term_months: '12', accrue_commit_amount: '1e3' }, ['accrue_commit_amount']],
    ['a start off the hour', { accrue_rate_card: 'x', accrue_start_date: '2026-03-01T10:30:00Z' }, ['accrue_start_date']],
    ['a trial longer than the term', { accrue_rate_card: 'x', accrue_start_date: '2026-03-01', accrue_term_months: '1', accrue_trial_days: '45' }, ['accrue_trial_days']],
  ])('%s → problems named by property', (_name, props, properties) => {
    const r = planContractFromDeal('77', props as Record<string, string>);
    expect('problems' in r && r.problems.map((p) => p.property)).toEqual(properties);
  });

  test('dates HubSpot may send', () => {
    expect(dealDate('2026-03-01')).toBe(Date.UTC(2026, 2, 1));
    expect(dealDate('1772323200000')).toBe(1772323200000);
    expect(dealDate('2026-03-01T01:00:00+01:00')).toBe(Date.UTC(2026, 2, 1));
    expect(typeof dealDate('1999-12-31')).toBe('string');
    expect(typeof dealDate('tomorrow')).toBe('string');
  });

  test('the note lists every problem', () => {
    expect(dealProblemNote([{ property: 'accrue_rate_card', message: 'is missing' }, { property: 'accrue_term_months', message: 'must be a whole number' }]))
      .toBe('Accrue could not create the contract for this deal. Fix these properties and save the deal again:\n- accrue_rate_card: is missing\n- accrue_term_months: must be a whole number');
  });
});

describe('what Accrue writes to the CRM', () => {
  test('money in the currency\'s units (cents are decimal, never floats); unknown facts clear the property', () => {
    expect(crmPropertyValues({ currentPeriodSpendCents: '12345.6789', commitRemainingCents: null, lifecycleState: 'ARREARS', lastInvoice: { id: 'inv', totalCents: '100000000000000000001', status: 'PARTIALLY_PAID' }, renewalDate: '2027-01-01T00:00:00.000Z' }, names)).toEqual({
      accrue_current_period_spend: '123.46', accrue_commit_remaining: '', accrue_lifecycle_state: 'ARREARS', accrue_last_invoice_number: 'inv',
      accrue_last_invoice_total: '1000000000000000000.01', accrue_last_invoice_status: 'PARTIALLY_PAID', accrue_renewal_date: '2027-01-01T00:00:00.000Z',
    });
  });

  test('only changed properties are written', () => {
    expect(changedProperties({ a: '1', b: '2' }, null)).toEqual({ a: '1', b: '2' });
    expect(changedProperties({ a: '1', b: '2' }, { a: '1', b: '3' })).toEqual({ b: '2' });
    expect(changedProperties({ a: '1' }, { a: '1' })).toEqual({});
  });
});
