import { alertNotificationType, alertStep, groupMatches, isAlertType, isInAlarm, type AlertStatus } from './alerts.js';
import { dec } from './money.js';

describe('alerts: when an alert fires', () => {
  const cases: [AlertStatus | undefined, boolean, boolean, { status: string; fire: boolean }][] = [
    // prev, inAlarm, silentBaseline → step
    [undefined, false, false, { status: 'ok', fire: false }],
    [undefined, true, false, { status: 'in_alarm', fire: true }],
    [undefined, true, true, { status: 'in_alarm', fire: false }],
    ['ok', true, false, { status: 'in_alarm', fire: true }],
    ['ok', true, true, { status: 'in_alarm', fire: true }],
    ['in_alarm', true, false, { status: 'in_alarm', fire: false }],
    ['in_alarm', false, false, { status: 'ok', fire: false }],
    ['evaluating', true, false, { status: 'in_alarm', fire: true }],
    ['evaluating', true, true, { status: 'in_alarm', fire: true }],
    ['evaluating', false, false, { status: 'ok', fire: false }],
  ];
  test.each(cases)('prev %s, in alarm %s, silent baseline %s', (prev, alarm, silentBaseline, want) => {
    expect(alertStep(prev, alarm, { silentBaseline })).toEqual(want);
  });

  test('fires once while in alarm, again only after leaving it', () => {
    let status: AlertStatus | undefined;
    const fired: number[] = [];
    [5, 10, 12, 3, 11, 11].forEach((v, i) => {
      const step = alertStep(status, isInAlarm('spend_threshold_reached', dec(v), 10));
      status = step.status;
      if (step.fire) fired.push(i);
    });
    expect(fired).toEqual([1, 4]);
  });

  test('rising types alarm at or above, falling (low_*) at or below; nothing to measure is not in alarm', () => {
    expect(isInAlarm('spend_threshold_reached', dec(10), 10)).toBe(true);
    expect(isInAlarm('spend_threshold_reached', dec('9.99'), 10)).toBe(false);
    expect(isInAlarm('usage_threshold_reached', dec(100), '100')).toBe(true);
    expect(isInAlarm('invoice_total_reached', dec(0), 1)).toBe(false);
    expect(isInAlarm('low_remaining_commit_balance_reached', dec(500), 500)).toBe(true);
    expect(isInAlarm('low_remaining_commit_balance_reached', dec(501), 500)).toBe(false);
    expect(isInAlarm('low_remaining_credit_percentage_reached', dec(19.5), 20)).toBe(true);
    expect(isInAlarm('low_credit_balance_reached', null, 500)).toBe(false);
  });

  test('types and notification names', () => {
    expect(isAlertType('spend_threshold_reached')).toBe(true);
    expect(isAlertType('low_remaining_days_in_plan_reached')).toBe(false);
    expect(alertNotificationType('low_credit_balance_reached')).toBe('alerts.low_remaining_credit_balance_reached');
    expect(alertNotificationType('low_remaining_commit_balance_reached')).toBe('alerts.low_remaining_commit_balance_reached');
    expect(alertNotificationType('spend_threshold_reached')).toBe('alerts.spend_threshold_reached');
  });

  test('group filters: every key must be present, and equal when a value is given', () => {
    expect(groupMatches([], { region: 'eu' })).toBe(true);
    expect(groupMatches([{ key: 'region', value: 'eu' }], { region: 'eu', model: 'x' })).toBe(true);
    expect(groupMatches([{ key: 'region', value: 'eu' }], { region: 'us' })).toBe(false);
    expect(groupMatches([{ key: 'region' }], { region: 'us' })).toBe(true);
    expect(groupMatches([{ key: 'region' }], { model: 'x' })).toBe(false);
  });
});
