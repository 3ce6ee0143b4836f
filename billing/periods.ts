/**
 * The one module that owns billing periods. Everything is UTC: boundaries are computed with
 * Date.UTC arithmetic, so there is no DST and no local time zone anywhere in billing.
 *
 * A schedule has an anchor; boundaries are the anchor plus whole steps (1, 3 or 12 months, or
 * 7 days). A month step keeps the anchor's day of month and clamps it to the month's length
 * (anchor Jan 31 → Feb 28/29 → Mar 31), and keeps the anchor's time of day. The first period runs
 * from the contract start to the first boundary after it; the last ends at the contract end.
 * Periods are half-open: [start, end).
 *
 * Pure and deterministic, so workflows import it directly.
 */

export type Frequency = 'MONTHLY' | 'QUARTERLY' | 'ANNUAL' | 'WEEKLY';
export type AnchorDay = 'FIRST_OF_MONTH' | 'CONTRACT_START' | 'CUSTOM_DATE';

export const FREQUENCIES: readonly Frequency[] = ['MONTHLY', 'QUARTERLY', 'ANNUAL', 'WEEKLY'];
export const ANCHOR_DAYS: readonly AnchorDay[] = ['FIRST_OF_MONTH', 'CONTRACT_START', 'CUSTOM_DATE'];

export interface Schedule {
  /** ISO-8601 UTC instants. */
  startingAt: string;
  endingBefore?: string | null;
  frequency: Frequency;
  day: AnchorDay;
  /** Required for CUSTOM_DATE. */
  billingAnchorDate?: string | null;
}

export interface Period {
  index: number;
  /** Inclusive, ISO-8601 UTC. */
  start: string;
  /** Exclusive, ISO-8601 UTC. */
  end: string;
}

export const DAY_MS = 86_400_000;

const MONTHS_PER_STEP: Record<Frequency, number> = { MONTHLY: 1, QUARTERLY: 3, ANNUAL: 12, WEEKLY: 0 };

export function daysInMonth(year: number, month0: number): number {
  return new Date(Date.UTC(year, month0 + 1, 0)).getUTCDate();
}

export function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

/** anchor + n months, keeping the anchor's day of month (clamped) and time of day. */
export function addMonthsClamped(anchorMs: number, months: number): number {
  const a = new Date(anchorMs);
  const totalMonths = a.getUTCFullYear() * 12 + a.getUTCMonth() + months;
  const year = Math.floor(totalMonths / 12);
  const month0 = totalMonths - year * 12;
  const day = Math.min(a.getUTCDate(), daysInMonth(year, month0));
  return Date.UTC(year, month0, day, a.getUTCHours(), a.getUTCMinutes(), a.getUTCSeconds(), a.getUTCMilliseconds());
}

function parseInstant(value: string, field: string): number {
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new RangeError(`${field} is not a valid timestamp: ${value}`);
  return ms;
}

function anchorOf(schedule: Schedule, startMs: number): number {
  switch (schedule.day) {
    case 'FIRST_OF_MONTH': {
      if (schedule.frequency === 'WEEKLY') return startMs;
      const s = new Date(startMs);
      return Date.UTC(s.getUTCFullYear(), s.getUTCMonth(), 1);
    }
    case 'CONTRACT_START':
      return startMs;
    case 'CUSTOM_DATE':
      if (!schedule.billingAnchorDate) throw new RangeError('billing_anchor_date is required for CUSTOM_DATE');
      return parseInstant(schedule.billingAnchorDate, 'billing_anchor_date');
  }
}

/** `ms` plus whole days of exactly 24 h (UTC has no DST, so a day is always 24 h). */
export function addDays(ms: number, days: number): number {
  return ms + days * DAY_MS;
}

/** The k-th boundary of the schedule's grid (k may be negative). */
function boundary(anchorMs: number, frequency: Frequency, k: number): number {
  return frequency === 'WEEKLY' ? anchorMs + k * 7 * DAY_MS : addMonthsClamped(anchorMs, k * MONTHS_PER_STEP[frequency]);
}

/** The smallest k whose boundary is strictly after `t`. */
function firstBoundaryAfter(anchorMs: number, frequency: Frequency, t: number): number {
  let k: number;
  if (frequency === 'WEEKLY') {
    k = Math.floor((t - anchorMs) / (7 * DAY_MS));
  } else {
    const a = new Date(anchorMs);
    const b = new Date(t);
    const months = (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + (b.getUTCMonth() - a.getUTCMonth());
    k = Math.floor(months / MONTHS_PER_STEP[frequency]) - 1;
  }
  while (boundary(anchorMs, frequency, k) <= t) k++;
  while (boundary(anchorMs, frequency, k - 1) > t) k--;
  return k;
}

/** The i-th period (0-based) of the schedule, or undefined when the contract has ended before it. */
export function periodAt(schedule: Schedule, index: number): Period | undefined {
  if (!Number.isInteger(index) || index < 0) throw new RangeError(`period index must be a non-negative integer: ${index}`);
  const startMs = parseInstant(schedule.startingAt, 'starting_at');
  const endMs = schedule.endingBefore ? parseInstant(schedule.endingBefore, 'ending_before') : Infinity;
  const anchorMs = anchorOf(schedule, startMs);
  const k0 = firstBoundaryAfter(anchorMs, schedule.frequency, startMs);
  const pStart = index === 0 ? startMs : boundary(anchorMs, schedule.frequency, k0 + index - 1);
  if (pStart >= endMs) return undefined;
  const pEnd = Math.min(boundary(anchorMs, schedule.frequency, k0 + index), endMs);
  return { index, start: new Date(pStart).toISOString(), end: new Date(pEnd).toISOString() };
}

/** The period that contains instant `at`, or undefined outside the contract. */
export function periodContaining(schedule: Schedule, at: string): Period | undefined {
  const t = parseInstant(at, 'at');
  const startMs = parseInstant(schedule.startingAt, 'starting_at');
  if (t < startMs) return undefined;
  const anchorMs = anchorOf(schedule, startMs);
  const k0 = firstBoundaryAfter(anchorMs, schedule.frequency, startMs);
  const k = firstBoundaryAfter(anchorMs, schedule.frequency, t);
  const p = periodAt(schedule, k - k0);
  return p && Date.parse(p.end) > t ? p : undefined;
}

/** All periods that have started by `until` (exclusive), in order. */
export function periodsStartedBefore(schedule: Schedule, until: string): Period[] {
  const untilMs = parseInstant(until, 'until');
  const out: Period[] = [];
  for (let i = 0; ; i++) {
    const p = periodAt(schedule, i);
    if (!p || Date.parse(p.start) >= untilMs) return out;
    out.push(p);
  }
}

/** Parses durations such as "24h", "90s", "1500ms", "2d" or a bare number of milliseconds. */
export function parseDurationMs(value: string, field: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  if (!m) throw new RangeError(`${field} must be a duration like 24h, 30m, 10s or 500ms: ${JSON.stringify(value)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(m[1]) * unit);
}

/**
 * The full grid period of the schedule containing instant `at`, ignoring the contract's start and
 * end: [boundary, next boundary). Proration divides by its length.
 */
export function gridPeriodContaining(schedule: Schedule, at: string): { start: string; end: string } {
  const t = parseInstant(at, 'at');
  const startMs = parseInstant(schedule.startingAt, 'starting_at');
  const anchorMs = anchorOf(schedule, startMs);
  const k = firstBoundaryAfter(anchorMs, schedule.frequency, t);
  return { start: new Date(boundary(anchorMs, schedule.frequency, k - 1)).toISOString(), end: new Date(boundary(anchorMs, schedule.frequency, k)).toISOString() };
}

/** Fraction of the grid period containing `from` that [from, to) covers, as an exact decimal string. */
export function prorationFraction(schedule: Schedule, from: string, to: string): { numerator: number; denominator: number } {
  const grid = gridPeriodContaining(schedule, from);
  const num = Math.min(Date.parse(to), Date.parse(grid.end)) - Date.parse(from);
  return { numerator: num, denominator: Date.parse(grid.end) - Date.parse(grid.start) };
}

/** A write of contract terms (the contract itself, an amendment, a commit or credit it added) that took effect earlier than it was written. */
export interface BackdatedWrite {
  /** When it was written. */
  at: string;
  /** When it takes effect (before `at`). */
  from: string;
}

/**
 * When a period's invoice may freeze: the invoice grace period (time for late events to arrive)
 * counted from the later of the period's end and the last write that backdated terms into the
 * period — a contract created after the period ended, or amended with terms starting inside it.
 * Usage for such a period can only be sent once the contract exists, so its grace starts then.
 */
export function periodClosesAt(period: Pick<Period, 'end'>, graceMs: number, writes: readonly BackdatedWrite[] = []): number {
  const end = Date.parse(period.end);
  let from = end;
  for (const w of writes) if (Date.parse(w.from) < end) from = Math.max(from, Date.parse(w.at));
  return from + graceMs;
}
