import { ValidationError } from './errors.js';
import { dec, isDecimalString } from './money.js';

/**
 * When a closing invoice waits for finance (issue 9). `ALWAYS` waits for every invoice; `NEVER`
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
