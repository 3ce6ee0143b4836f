import { addMonthsClamped, isLeapYear, parseDurationMs, periodAt, periodClosesAt, periodContaining, periodsStartedBefore, type Schedule } from './periods.js';

const monthly = (startingAt: string, extra: Partial<Schedule> = {}): Schedule => ({ startingAt, frequency: 'MONTHLY', day: 'FIRST_OF_MONTH', ...extra });
const list = (s: Schedule, n: number) => Array.from({ length: n }, (_, i) => periodAt(s, i)).map((p) => p && `${p.start.slice(0, 10)}..${p.end.slice(0, 10)}`);

describe('billing periods', () => {
  test('MONTHLY FIRST_OF_MONTH: a mid-month start gets a short first period, then calendar months', () => {
    expect(list(monthly('2026-01-15T00:00:00.000Z'), 3)).toEqual(['2026-01-15..2026-02-01', '2026-02-01..2026-03-01', '2026-03-01..2026-04-01']);
  });

  test('a start on the 1st has full calendar months from the first period', () => {
    expect(list(monthly('2026-10-01T00:00:00Z'), 3)).toEqual(['2026-10-01..2026-11-01', '2026-11-01..2026-12-01', '2026-12-01..2027-01-01']);
  });

  test('CONTRACT_START anchored on the 31st clamps to month ends and returns to the 31st', () => {
    const s = monthly('2026-01-31T00:00:00Z', { day: 'CONTRACT_START' });
    expect(list(s, 4)).toEqual(['2026-01-31..2026-02-28', '2026-02-28..2026-03-31', '2026-03-31..2026-04-30', '2026-04-30..2026-05-31']);
  });

  test('leap years: Jan 31 anchor gives Feb 29 in 2028, and Feb 29 + 12 months is Feb 28', () => {
    expect(list(monthly('2028-01-31T00:00:00Z', { day: 'CONTRACT_START' }), 2)).toEqual(['2028-01-31..2028-02-29', '2028-02-29..2028-03-31']);
    expect(new Date(addMonthsClamped(Date.UTC(2028, 1, 29), 12)).toISOString()).toBe('2029-02-28T00:00:00.000Z');
    expect([isLeapYear(2028), isLeapYear(2100), isLeapYear(2000), isLeapYear(2026)]).toEqual([true, false, true, false]);
  });

  test('CUSTOM_DATE anchor in the past aligns the cycle on the anchor day', () => {
    const s = monthly('2024-09-15T00:00:00Z', { day: 'CUSTOM_DATE', billingAnchorDate: '2024-09-10T00:00:00Z' });
    expect(list(s, 2)).toEqual(['2024-09-15..2024-10-10', '2024-10-10..2024-11-10']);
  });

  test('CUSTOM_DATE without an anchor is refused', () => {
    expect(() => periodAt(monthly('2024-09-15T00:00:00Z', { day: 'CUSTOM_DATE' }), 0)).toThrow(/billing_anchor_date/);
  });

  test('QUARTERLY, ANNUAL and WEEKLY steps', () => {
    expect(list({ startingAt: '2026-02-10T00:00:00Z', frequency: 'QUARTERLY', day: 'FIRST_OF_MONTH' }, 2)).toEqual(['2026-02-10..2026-05-01', '2026-05-01..2026-08-01']);
    expect(list({ startingAt: '2026-03-01T00:00:00Z', frequency: 'ANNUAL', day: 'CONTRACT_START' }, 2)).toEqual(['2026-03-01..2027-03-01', '2027-03-01..2028-03-01']);
    expect(list({ startingAt: '2026-11-02T00:00:00Z', frequency: 'WEEKLY', day: 'CONTRACT_START' }, 2)).toEqual(['2026-11-02..2026-11-09', '2026-11-09..2026-11-16']);
  });

  test('the contract end truncates the last period and ends the schedule', () => {
    const s = monthly('2026-01-01T00:00:00Z', { endingBefore: '2026-02-15T00:00:00Z' });
    expect(list(s, 3)).toEqual(['2026-01-01..2026-02-01', '2026-02-01..2026-02-15', undefined]);
  });

  test('time of day is kept and everything is UTC (no DST shifts in March)', () => {
    const s = monthly('2026-03-29T01:30:00Z', { day: 'CONTRACT_START' });
    expect(periodAt(s, 1)).toEqual({ index: 1, start: '2026-04-29T01:30:00.000Z', end: '2026-05-29T01:30:00.000Z' });
  });

  test('periods are half-open and contiguous', () => {
    const s = monthly('2026-01-15T00:00:00Z');
    for (let i = 0; i < 30; i++) expect(periodAt(s, i)!.end).toBe(periodAt(s, i + 1)!.start);
    expect(periodContaining(s, '2026-02-01T00:00:00Z')!.index).toBe(1);
    expect(periodContaining(s, '2026-01-31T23:59:59.999Z')!.index).toBe(0);
    expect(periodContaining(s, '2026-01-14T00:00:00Z')).toBeUndefined();
  });

  test('periodsStartedBefore lists the periods up to now', () => {
    expect(periodsStartedBefore(monthly('2026-09-01T00:00:00Z'), '2026-11-21T00:00:00Z').map((p) => p.index)).toEqual([0, 1, 2]);
    expect(periodsStartedBefore(monthly('2026-09-01T00:00:00Z'), '2026-09-01T00:00:00Z')).toEqual([]);
  });

  test('a period closes after the grace counted from its end or from the last write that backdated terms into it', () => {
    const oct = { start: '2026-10-01T00:00:00.000Z', end: '2026-11-01T00:00:00.000Z' };
    const end = Date.parse(oct.end);
    const hour = 3_600_000;
    const at = (iso: string) => Date.parse(iso) + hour;
    expect(periodClosesAt(oct, hour)).toBe(end + hour);
    // Created in December, starting in October: October's usage can only come after the creation.
    expect(periodClosesAt(oct, hour, [{ at: '2026-12-07T21:00:00.000Z', from: '2026-10-01T00:00:00.000Z' }])).toBe(at('2026-12-07T21:00:00.000Z'));
    // Created in October itself (before the period ended): the period's end counts.
    expect(periodClosesAt(oct, hour, [{ at: '2026-10-20T00:00:00.000Z', from: '2026-10-01T00:00:00.000Z' }])).toBe(end + hour);
    // An amendment written later reaching into October moves it; one starting after October does not.
    const writes = [
      { at: '2026-11-01T00:30:00.000Z', from: '2026-10-01T00:00:00.000Z' },
      { at: '2026-11-01T00:40:00.000Z', from: '2026-10-31T00:00:00.000Z' },
      { at: '2026-11-03T00:00:00.000Z', from: '2026-11-01T00:00:00.000Z' },
    ];
    expect(periodClosesAt(oct, hour, writes)).toBe(at('2026-11-01T00:40:00.000Z'));
  });

  test('durations', () => {
    expect(parseDurationMs('24h', 'x')).toBe(86_400_000);
    expect(parseDurationMs('1s', 'x')).toBe(1000);
    expect(parseDurationMs('250ms', 'x')).toBe(250);
    expect(parseDurationMs('2d', 'x')).toBe(172_800_000);
    expect(() => parseDurationMs('soon', 'ACCRUE_INVOICE_GRACE_PERIOD')).toThrow(/ACCRUE_INVOICE_GRACE_PERIOD/);
  });
});
