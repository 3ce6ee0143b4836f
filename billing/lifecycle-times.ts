import type { ContractTerms } from './contract-terms.js';
import { DAY_MS } from './periods.js';
import { trialWindow } from './trial.js';

/** When a contract's lifecycle timers fire (ISO instants, UTC). Pure; the contract workflow sleeps to these. */
export interface LifecycleTimes {
  trial?: { startsAt: string; endsAt: string; reminderAt?: string };
  /** `renewal_notice_days` (default 30) before ending_before; none without an end date or with 0 days. */
  renewalNoticeAt?: string;
}

export const DEFAULT_RENEWAL_NOTICE_DAYS = 30;

export function lifecycleTimes(
  contract: { startingAt: Date; endingBefore?: Date | null; terms?: ContractTerms | null },
  settings: { trialReminderDays: number },
): LifecycleTimes {
  const out: LifecycleTimes = {};
  const spec = contract.terms?.trial_spec;
  if (spec) {
    const w = trialWindow(contract.startingAt.toISOString(), spec);
    const start = Date.parse(w.start);
    const reminder = Date.parse(w.end) - settings.trialReminderDays * DAY_MS;
    out.trial = {
      startsAt: w.start, endsAt: w.end,
      // No reminder when the trial is shorter than the reminder lead time, or with 0 days.
      ...(settings.trialReminderDays > 0 && reminder > start ? { reminderAt: new Date(reminder).toISOString() } : {}),
    };
  }
  const days = contract.terms?.renewal_notice_days ?? DEFAULT_RENEWAL_NOTICE_DAYS;
  if (contract.endingBefore && days > 0) out.renewalNoticeAt = new Date(contract.endingBefore.getTime() - days * DAY_MS).toISOString();
  return out;
}
