import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Accrue's search attributes (registered by stack/temporal.ts; docker-compose registers the same). */
export const CustomerIdKey = defineSearchAttributeKey('CustomerId', SearchAttributeType.KEYWORD);
export const ContractIdKey = defineSearchAttributeKey('ContractId', SearchAttributeType.KEYWORD);
export const InvoiceIdKey = defineSearchAttributeKey('InvoiceId', SearchAttributeType.KEYWORD);
export const LifecycleStateKey = defineSearchAttributeKey('LifecycleState', SearchAttributeType.KEYWORD);

export const contractWorkflowId = (contractId: string) => `contract/${contractId}`;
export const invoiceWorkflowId = (invoiceId: string) => `invoice/${invoiceId}`;
export const ratingWorkflowId = (taskQueue: string) => `rating/${taskQueue}`;
export const metricBackfillWorkflowId = (metricId: string) => `metric-backfill/${metricId}`;
export const eventPartitionsScheduleId = (taskQueue: string) => `event-partitions/${taskQueue}`;
export const usageCollectorScheduleId = (collectorId: string) => `usage-collector/${collectorId}`;
export const outboundWorkflowId = (taskQueue: string) => `outbound/${taskQueue}`;
export const notificationWorkflowId = (notificationId: string) => `notification/${notificationId}`;
export const dunningWorkflowId = (invoiceId: string) => `dunning/${invoiceId}`;
export const stripeVoidWorkflowId = (invoiceId: string) => `stripe-void/${invoiceId}`;
export const rechargeWorkflowId = (contractId: string, n: number) => `recharge/${contractId}/${n}`;
export const commitPaymentWorkflowId = (grantId: string) => `commit-payment/${grantId}`;
export const spendThresholdWorkflowId = (contractId: string, n: number) => `spend-threshold/${contractId}/${n}`;
export const crmDealWorkflowId = (dealId: string) => `crm-deal/${dealId}`;
export const crmSyncWorkflowId = (customerId: string) => `crm-sync/${customerId}`;
