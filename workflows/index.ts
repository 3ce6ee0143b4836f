// Entry point the worker bundles: deterministic workflow code only.
export { contractWorkflow } from './contract.js';
export { invoiceCloseWorkflow } from './invoice-close.js';
export { metricBackfillWorkflow } from './metric-backfill.js';
export { ratingWorkflow } from './rating.js';
export { usageCollectorWorkflow } from './usage-collector.js';
export { notificationWorkflow } from './notification.js';
export { outboundWorkflow } from './outbound.js';
export { dunningWorkflow, stripeVoidWorkflow } from './dunning.js';
export { commitPaymentWorkflow, rechargeWorkflow } from './recharge.js';
export { crmDealWorkflow, crmSyncWorkflow } from './crm.js';
export { eventPartitionsWorkflow } from './event-partitions.js';
