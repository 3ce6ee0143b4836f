import { initialSnapshot, transition, visibleState, type LifecycleEvent, type LifecycleSnapshot } from './lifecycle.js';

/** The lifecycle state machine, table-driven: every state × event that matters, and replays. */
const run = (start: LifecycleSnapshot, events: LifecycleEvent[]) => {
  let s = start;
  const log: string[] = [];
  for (const e of events) {
    const t = transition(s, e);
    s = t.snapshot;
    log.push(`${e.type}: ${t.change ? `${t.change.from}→${t.change.to}` : 'no change'}${t.hooks.length ? ` [${t.hooks.join(', ')}]` : ''}`);
  }
  return { state: visibleState(s), snapshot: s, log };
};
const overdue = (invoiceId: string): LifecycleEvent => ({ type: 'INVOICE_OVERDUE', invoiceId });
const settled = (invoiceId: string): LifecycleEvent => ({ type: 'INVOICE_SETTLED', invoiceId });

describe('contract lifecycle transitions', () => {
  test.each([
    ['a trial that converts, a renewal notice, the end', true, [{ type: 'TRIAL_ENDED', converts: true }, { type: 'RENEWAL_NOTICE' }, { type: 'CONTRACT_ENDED' }], 'ENDED',
      ['TRIAL_ENDED: TRIAL→ACTIVE [trial_converted]', 'RENEWAL_NOTICE: ACTIVE→RENEWING [renewal_notice]', 'CONTRACT_ENDED: RENEWING→ENDED [contract_ended]']],
    ['a trial that expires ends the contract; later timers change nothing', true, [{ type: 'TRIAL_ENDED', converts: false }, { type: 'RENEWAL_NOTICE' }, { type: 'CONTRACT_ENDED' }], 'ENDED',
      ['TRIAL_ENDED: TRIAL→ENDED [trial_expired]', 'RENEWAL_NOTICE: no change', 'CONTRACT_ENDED: no change']],
    ['arrears in and out', false, [overdue('i1'), settled('i1')], 'ACTIVE',
      ['INVOICE_OVERDUE: ACTIVE→ARREARS [arrears_entered]', 'INVOICE_SETTLED: ARREARS→ACTIVE [arrears_left]']],
    ['arrears are left only when every overdue invoice is settled', false, [overdue('i1'), overdue('i2'), settled('i1'), settled('i2')], 'ACTIVE',
      ['INVOICE_OVERDUE: ACTIVE→ARREARS [arrears_entered]', 'INVOICE_OVERDUE: no change', 'INVOICE_SETTLED: no change', 'INVOICE_SETTLED: ARREARS→ACTIVE [arrears_left]']],
    ['the renewal notice passes during arrears; paying returns to RENEWING', false, [overdue('i1'), { type: 'RENEWAL_NOTICE' }, settled('i1')], 'RENEWING',
      ['INVOICE_OVERDUE: ACTIVE→ARREARS [arrears_entered]', 'RENEWAL_NOTICE: no change [renewal_notice]', 'INVOICE_SETTLED: ARREARS→RENEWING [arrears_left]']],
    ['an amendment during RENEWING that moves the end date back to ACTIVE', false, [{ type: 'RENEWAL_NOTICE' }, { type: 'END_DATE_EXTENDED' }, { type: 'RENEWAL_NOTICE' }], 'RENEWING',
      ['RENEWAL_NOTICE: ACTIVE→RENEWING [renewal_notice]', 'END_DATE_EXTENDED: RENEWING→ACTIVE [renewal_withdrawn]', 'RENEWAL_NOTICE: ACTIVE→RENEWING [renewal_notice]']],
    ['an ended contract keeps its debt without going into arrears', false, [overdue('i1'), { type: 'CONTRACT_ENDED' }, overdue('i2'), settled('i1')], 'ENDED',
      ['INVOICE_OVERDUE: ACTIVE→ARREARS [arrears_entered]', 'CONTRACT_ENDED: ARREARS→ENDED [contract_ended]', 'INVOICE_OVERDUE: no change', 'INVOICE_SETTLED: no change']],
    ['a trial does not go into arrears (its lines are covered)', true, [overdue('i1')], 'TRIAL', ['INVOICE_OVERDUE: no change']],
    ['archive from any state, once', false, [overdue('i1'), { type: 'ARCHIVED' }, { type: 'ARCHIVED' }, { type: 'CONTRACT_ENDED' }], 'ARCHIVED',
      ['INVOICE_OVERDUE: ACTIVE→ARREARS [arrears_entered]', 'ARCHIVED: ARREARS→ARCHIVED [contract_archived]', 'ARCHIVED: no change', 'CONTRACT_ENDED: no change']],
    ['duplicated events are harmless', false, [overdue('i1'), overdue('i1'), settled('i1'), settled('i1'), { type: 'RENEWAL_NOTICE' }, { type: 'RENEWAL_NOTICE' }], 'RENEWING',
      ['INVOICE_OVERDUE: ACTIVE→ARREARS [arrears_entered]', 'INVOICE_OVERDUE: no change', 'INVOICE_SETTLED: ARREARS→ACTIVE [arrears_left]', 'INVOICE_SETTLED: no change',
        'RENEWAL_NOTICE: ACTIVE→RENEWING [renewal_notice]', 'RENEWAL_NOTICE: no change']],
  ] as [string, boolean, LifecycleEvent[], string, string[]][])('%s', (_name, hasTrial, events, state, log) => {
    const out = run(initialSnapshot(hasTrial), events);
    expect(out.log).toEqual(log);
    expect(out.state).toBe(state);
  });

  test('a change names the invoice that caused it and never mutates its input', () => {
    const before = initialSnapshot(false);
    const t = transition(before, overdue('inv-9'));
    expect(t.change).toEqual({ from: 'ACTIVE', to: 'ARREARS', reason: 'a finalized invoice is unpaid past its due date', invoiceId: 'inv-9' });
    expect(before).toEqual({ phase: 'ACTIVE', overdue: [] });
    expect(t.snapshot).toEqual({ phase: 'ACTIVE', overdue: ['inv-9'] });
  });
});
