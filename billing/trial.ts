import type { TrialSpec } from './contract-terms.js';
import { addDays } from './periods.js';

/**
 * A contract's trial: the window [contract start, start + length_in_days × 24 h), UTC. The same
 * function gives the contract workflow its trial timers and the invoice its trial cut, so both
 * always agree on the instant the trial ends. Pure, so workflows import it directly.
 */
export interface TrialWindow {
  /** Inclusive, ISO-8601 UTC. */
  start: string;
  /** Exclusive, ISO-8601 UTC. */
  end: string;
}

export function trialWindow(contractStartingAt: string, spec: Pick<TrialSpec, 'length_in_days'>): TrialWindow {
  const start = Date.parse(contractStartingAt);
  if (Number.isNaN(start)) throw new RangeError(`contract starting_at is not a valid timestamp: ${contractStartingAt}`);
  if (!Number.isInteger(spec.length_in_days) || spec.length_in_days <= 0) throw new RangeError(`trial length_in_days must be a positive integer: ${spec.length_in_days}`);
  return { start: new Date(start).toISOString(), end: new Date(addDays(start, spec.length_in_days)).toISOString() };
}

/** The name of an invoice's trial line: "Trial (ends 2026-01-15)", with the time when it is not midnight UTC. */
export function trialLineName(window: TrialWindow): string {
  const end = window.end;
  const time = end.slice(11, 16);
  return `Trial (ends ${end.slice(0, 10)}${time === '00:00' ? '' : ` ${time} UTC`})`;
}
