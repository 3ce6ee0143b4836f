import { ValidationError } from './errors.js';
import { dec, isDecimalString } from './money.js';

/**
 * When a closing invoice waits for finance. `ALWAYS` waits for every invoice; `NEVER`
 * finalizes right after the grace period; `ABOVE` waits only when the total is above `amount`
 * (cents, a decimal string). Per contract (`approval_policy`), defaulting to `ACCRUE_APPROVAL_POLICY`.
 */
export type ApprovalMode = 'ALWAYS' | 'NEVER' | 'ABOVE';
export interface ApprovalPolicy {
  mode: ApprovalMode;
  /** Cents; only with ABOVE. */
  amount?: string;
}

export const APPROVAL_MODES: readonly ApprovalMode[] = ['ALWAYS', 'NEVER', 'ABOVE'];

/** `ALWAYS`, `NEVER` or `ABOVE:<cents>` (the ACCRUE_APPROVAL_POLICY syntax). */
export function parseApprovalPolicyEnv(value: string | undefined, field = 'ACCRUE_APPROVAL_POLICY'): ApprovalPolicy {
  const v = (value ?? 'ALWAYS').trim();
  if (v === 'ALWAYS' || v === 'NEVER') return { mode: v };
  const m = /^ABOVE:(.+)$/.exec(v);
  if (m && isDecimalString(m[1]!) && dec(m[1]!).gte(0)) return { mode: 'ABOVE', amount: dec(m[1]!).toFixed() };
  throw new ValidationError(field, `must be ALWAYS, NEVER or ABOVE:<amount in cents>, not ${JSON.stringify(v)}`);
}

/**
 * Why an invoice does or does not wait for finance. `policy:*` and `above:*` come from the
 * contract's policy (or the operator default), `change:*` from ACCRUE_APPROVAL_CHANGE_PCT.
 */
export type ApprovalReason =
  | 'policy:ALWAYS' | 'policy:NEVER' | 'policy:ABOVE:above' | 'policy:ABOVE:not-above'
  | 'change:above-threshold' | 'change:from-zero';

export interface ApprovalDecision {
  approvalRequired: boolean;
  reason: ApprovalReason;
  /** The policy that decided (the contract's, else the default), so the record names it. */
  mode: ApprovalMode;
  /** The previous period's total of the same contract, when there is one (cents, decimal string). */
  previousTotal?: string;
  /** (total − previous) / |previous| × 100, signed, two places (half up); absent without a previous total or when it is 0. */
  changePercent?: string;
}

export interface ApprovalInput {
  /** The contract's own policy; undefined means the operator default applies. */
  contractPolicy?: ApprovalPolicy;
  defaultPolicy: ApprovalPolicy;
  /** The frozen total, cents (decimal string). */
  total: string;
  previousTotal?: string;
  /** ACCRUE_APPROVAL_CHANGE_PCT: a percentage (decimal string), or undefined for no change check. */
  changePct?: string;
}

/**
 * How far a total moved from the previous one, in percent of the previous (negative: it fell),
 * rounded half-up (away from zero) to two places for display and comparison alike — what the
 * queue shows is what was compared. Undefined when the previous total is 0 (any move from 0 is
 * unbounded).
 */
export function changePercent(total: string, previousTotal: string): string | undefined {
  const prev = dec(previousTotal);
  if (prev.isZero()) return undefined;
  return dec(total).minus(prev).div(prev.abs()).times(100).toDecimalPlaces(2).toFixed(2);
}

/**
 * The one decision: does this closing invoice wait for finance? The contract's policy (else the
 * default) first — ALWAYS waits, ABOVE waits when the total is strictly above the amount; then,
 * for an invoice the policy would let through, a change of more than `changePct` percent (up or down) from the
 * previous period's total (any change from a previous total of 0) also waits. Pure: the same
 * inputs always give the same answer.
 */
export function decideApproval(input: ApprovalInput): ApprovalDecision {
  const policy = input.contractPolicy ?? input.defaultPolicy;
  const total = dec(input.total);
  const base = {
    mode: policy.mode,
    ...(input.previousTotal !== undefined ? { previousTotal: dec(input.previousTotal).toFixed() } : {}),
  };
  const pct = input.previousTotal !== undefined ? changePercent(input.total, input.previousTotal) : undefined;
  const withPct = { ...base, ...(pct !== undefined ? { changePercent: pct } : {}) };
  if (policy.mode === 'ALWAYS') return { approvalRequired: true, reason: 'policy:ALWAYS', ...withPct };
  if (policy.mode === 'ABOVE') {
    if (policy.amount === undefined) throw new ValidationError('approval_policy.amount', 'is required with mode ABOVE');
    if (total.gt(dec(policy.amount))) return { approvalRequired: true, reason: 'policy:ABOVE:above', ...withPct };
  }
  if (input.changePct !== undefined && input.previousTotal !== undefined) {
    const prev = dec(input.previousTotal);
    if (prev.isZero()) {
      if (!total.isZero()) return { approvalRequired: true, reason: 'change:from-zero', ...withPct };
    } else if (dec(pct!).abs().gt(dec(input.changePct))) {
      return { approvalRequired: true, reason: 'change:above-threshold', ...withPct };
    }
  }
  return { approvalRequired: false, reason: policy.mode === 'NEVER' ? 'policy:NEVER' : 'policy:ABOVE:not-above', ...withPct };
}

/** Who "approved" an invoice the policy let through, recorded where a person's name would be. */
export function policyApprover(decision: Pick<ApprovalDecision, 'mode'>): string {
  return `policy:${decision.mode}`;
}
