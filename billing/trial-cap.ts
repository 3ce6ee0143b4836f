import type { Decimal } from 'decimal.js';
import type { TrialSpec } from './contract-terms.js';
import { Dec, dec, type DecimalInput } from './money.js';
import type { TrialWindow } from './trial.js';

/**
 * What a trial covers (kept apart from trial.ts so workflows importing the window do not bundle
 * decimal.js). One rule, used by the invoice's trial line and by entitlements: over the whole
 * trial the trial covers the in-trial charges, at most `spending_cap.amount` cents when the spec
 * has a cap. Amounts are cents already rounded per line, so nothing here rounds.
 */

export interface TrialCapUsage {
  /** The cap in cents, or null: the trial covers every in-trial charge. */
  cap: Decimal | null;
  /** What the trial covers of the charges given: min(cap, charges), never below 0. */
  used: Decimal;
  /** What is left of the cap (null without one). */
  remaining: Decimal | null;
  /** The charges reached the cap: anything more is billed (entitlements gate on this). */
  usedUp: boolean;
}

/** Given the trial spec and the in-trial charges so far (cents, all periods), how much of the cap is used. */
export function trialCapUsage(spec: Pick<TrialSpec, 'spending_cap'>, inTrialCharges: DecimalInput): TrialCapUsage {
  const charges = dec(inTrialCharges);
  const covered = Dec.max(charges, 0);
  if (!spec.spending_cap) return { cap: null, used: covered, remaining: null, usedUp: false };
  const cap = dec(spec.spending_cap.amount);
  if (cap.isNegative()) throw new RangeError(`trial spending_cap.amount must not be negative: ${spec.spending_cap.amount}`);
  const used = Dec.min(cap, covered);
  return { cap, used, remaining: cap.minus(used), usedUp: charges.gte(cap) };
}

/** A line as the trial sees it (pure invoice lines and stored lines alike). */
export interface TrialLineLike {
  type: string;
  startingAt?: string;
  endingBefore?: string;
  /** Discounts are not charges the trial covers. */
  discountId?: string;
}

/**
 * A charge the trial covers when it falls in the trial: usage (composite included) and
 * subscription lines whose service period lies inside the window — the invoice cuts them at the
 * trial's end, so each lies wholly on one side — and scheduled charges dated in it. Not
 * discounts, commit purchases, true-ups or corrections (in-trial corrections are marked apart).
 */
export function isInTrialCharge(line: TrialLineLike, window: TrialWindow): boolean {
  if (line.type !== 'usage' && line.type !== 'subscription' && line.type !== 'scheduled') return false;
  if (line.discountId || !line.startingAt || !line.endingBefore) return false;
  const from = Date.parse(line.startingAt);
  const to = Date.parse(line.endingBefore);
  const start = Date.parse(window.start);
  const end = Date.parse(window.end);
  // A dated charge (from = to) is in the trial when its moment is; a span when it lies inside.
  return from >= start && (to > from ? to <= end : from < end);
}

/** The sum of a stored invoice's in-trial usage and subscription lines (what late usage can change). */
export function inTrialUsageTotal(lines: readonly { type: string; total: string; starting_at?: string; ending_before?: string }[], window: TrialWindow): Decimal {
  let total = new Dec(0);
  for (const l of lines) {
    if (l.type !== 'usage' && l.type !== 'subscription') continue;
    if (isInTrialCharge({ type: l.type, startingAt: l.starting_at, endingBefore: l.ending_before }, window)) total = total.plus(dec(l.total));
  }
  return total;
}
