import { createApprovalActivities } from './approval-activities.js';
import { createCollectorActivities } from './collector-activities.js';
import { createContractActivities } from './contract-activities.js';
import { createCrmActivities } from './crm-activities.js';
import { createInvoiceActivities } from './invoice-activities.js';
import { createNoticeActivities } from './notice-activities.js';
import { createOutboundActivities } from './outbound-activities.js';
import { createRatingActivities } from './rating-activities.js';
import { createStripeActivities } from './stripe-activities.js';
import type { ActivityDeps } from './deps.js';

export type { ActivityDeps } from './deps.js';

export function createActivities(deps: ActivityDeps) {
  return { ...createContractActivities(deps), ...createInvoiceActivities(deps), ...createNoticeActivities(deps), ...createApprovalActivities(deps), ...createRatingActivities(deps), ...createCollectorActivities(deps), ...createOutboundActivities(deps), ...createStripeActivities(deps), ...createCrmActivities(deps) };
}

export type Activities = ReturnType<typeof createActivities>;
