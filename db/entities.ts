import { defineEntity, p, type InferEntity } from '@mikro-orm/core';
import type { AccessSchedule, ContractTerms, GrantSpecifier, InvoiceSchedule, ProductAttributes, ProductUpdate } from '../billing/contract-terms.js';
import type { LineType, ProductType } from '../billing/invoice.js';
import type { RateType, Tier } from '../billing/pricing/index.js';

/**
 * Entities map the tables created by the checked-in migrations (db/migrations); the migrations,
 * not these definitions, are the source of truth for the schema. Money columns are `numeric` and
 * surface as decimal strings, never JS numbers.
 */

export const ApiToken = defineEntity({
  name: 'ApiToken',
  tableName: 'api_token',
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    tokenHash: p.text().unique(),
    scope: p.text().$type<TokenScope>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    revokedAt: p.datetime().nullable(),
  },
});
export type ApiToken = InferEntity<typeof ApiToken>;
export type TokenScope = 'admin' | 'ingest' | 'finance' | 'read';

export const Customer = defineEntity({
  name: 'Customer',
  tableName: 'customer',
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    billingEmail: p.text().nullable(),
    customFields: p.json<Record<string, string>>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
    archivedAt: p.datetime().nullable(),
  },
});
export type Customer = InferEntity<typeof Customer>;

export const CustomerIngestAlias = defineEntity({
  name: 'CustomerIngestAlias',
  tableName: 'customer_ingest_alias',
  properties: {
    alias: p.text().primary(),
    customerId: p.uuid(),
    position: p.integer(),
  },
});
export type CustomerIngestAlias = InferEntity<typeof CustomerIngestAlias>;

export interface EventTypeFilter {
  in_values?: string[];
  not_in_values?: string[];
}
export interface PropertyFilter {
  name: string;
  exists?: boolean;
  in_values?: string[];
  not_in_values?: string[];
}

export const BillableMetric = defineEntity({
  name: 'BillableMetric',
  tableName: 'billable_metric',
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    aggregationType: p.text().$type<AggregationType>(),
    aggregationKey: p.text().nullable(),
    eventTypeFilter: p.json<EventTypeFilter>().nullable(),
    propertyFilters: p.json<PropertyFilter[]>(),
    groupKeys: p.json<string[][]>(),
    customFields: p.json<Record<string, string>>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    archivedAt: p.datetime().nullable(),
    /** xid8 as text: events from this transaction id on are rated live; older ones by the backfill. */
    ratingFromXid: p.text().columnType('xid8'),
    backfillCursorXid: p.text().columnType('xid8'),
    backfillStatus: p.text().$type<'RUNNING' | 'DONE'>(),
    backfillEventsProcessed: p.bigint('number'),
    backfillEventsTotal: p.bigint('number'),
  },
});
export type BillableMetric = InferEntity<typeof BillableMetric>;
export type AggregationType = 'COUNT' | 'SUM' | 'MAX' | 'UNIQUE' | 'LATEST';
export const AGGREGATION_TYPES: readonly AggregationType[] = ['COUNT', 'SUM', 'MAX', 'UNIQUE', 'LATEST'];

export const Product = defineEntity({
  name: 'Product',
  tableName: 'product',
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    type: p.text().$type<ProductType>(),
    billableMetricId: p.uuid().nullable(),
    tags: p.json<string[]>(),
    customFields: p.json<Record<string, string>>(),
    /** The initial state's other fields (see billing/catalog.ts). */
    attributes: p.json<ProductAttributes>(),
    updates: p.json<ProductUpdate[]>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    archivedAt: p.datetime().nullable(),
  },
});
export type Product = InferEntity<typeof Product>;

export const RateCard = defineEntity({
  name: 'RateCard',
  tableName: 'rate_card',
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    description: p.text().nullable(),
    creditTypeId: p.uuid(),
    customFields: p.json<Record<string, string>>(),
    aliases: p.json<{ name: string; starting_at?: string; ending_before?: string }[]>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().nullable(),
    archivedAt: p.datetime().nullable(),
  },
});
export type RateCard = InferEntity<typeof RateCard>;

export const Rate = defineEntity({
  name: 'Rate',
  tableName: 'rate',
  properties: {
    id: p.uuid().primary(),
    rateCardId: p.uuid(),
    productId: p.uuid(),
    rateType: p.text().$type<RateType>(),
    price: p.decimal('string').nullable(),
    tiers: p.json<Tier[]>().nullable(),
    pricingGroupValues: p.json<Record<string, string>>(),
    quantity: p.decimal('string').nullable(),
    isProrated: p.boolean().nullable(),
    billingFrequency: p.text().nullable(),
    packageSize: p.decimal('string').nullable(),
    packageRounding: p.text().$type<'UP' | 'DOWN'>().nullable(),
    commitRate: p.json<{ rate_type: string; price?: string; tiers?: Tier[] }>().nullable(),
    entitled: p.boolean(),
    startingAt: p.datetime(),
    endingBefore: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type Rate = InferEntity<typeof Rate>;

export const Contract = defineEntity({
  name: 'Contract',
  tableName: 'contract',
  properties: {
    id: p.uuid().primary(),
    customerId: p.uuid(),
    rateCardId: p.uuid(),
    name: p.text().nullable(),
    startingAt: p.datetime(),
    endingBefore: p.datetime().nullable(),
    usageStatementFrequency: p.text().$type<'MONTHLY' | 'QUARTERLY' | 'ANNUAL' | 'WEEKLY'>(),
    usageStatementDay: p.text().$type<'FIRST_OF_MONTH' | 'CONTRACT_START' | 'CUSTOM_DATE'>(),
    billingAnchorDate: p.datetime().nullable(),
    uniquenessKey: p.text().nullable(),
    customFields: p.json<Record<string, string>>(),
    terms: p.json<ContractTerms>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    archivedAt: p.datetime().nullable(),
  },
});
export type Contract = InferEntity<typeof Contract>;

/** An invoice line as stored (decimal strings) in invoice.line_items; see db/invoices.ts storedLines. */
export interface StoredInvoiceLine {
  type: LineType;
  name: string;
  total: string;
  product_id?: string;
  product_type?: string;
  quantity?: string;
  unit_price?: string | null;
  starting_at?: string;
  ending_before?: string;
  pricing_group_values?: Record<string, string>;
  presentation_group_values?: Record<string, string | null>;
  is_prorated?: boolean;
  tiers?: { level: number; starting_at: string; quantity: string; price: string; subtotal: string }[];
  commit_id?: string;
  applied_commit_or_credit?: { id: string; type: 'PREPAID' | 'POSTPAID' | 'CREDIT'; segment_id: string };
  scheduled_charge_id?: string;
  discount_id?: string;
  corrected_invoice_id?: string;
  /** `correction` lines: what each commit segment drew on it (positive) or got back from it (negative). */
  commit_draws?: { id: string; segment_id: string; amount: string }[];
  reason?: string;
  /** `trial` lines: whose trial; `correction` lines: in-trial late usage that contract's trial covers. */
  trial_contract_id?: string;
}

export const Invoice = defineEntity({
  name: 'Invoice',
  tableName: 'invoice',
  properties: {
    id: p.uuid().primary(),
    customerId: p.uuid(),
    contractId: p.uuid(),
    /** USAGE: a contract period's invoice; SCHEDULED: a commit billed on its own invoice when granted (its period is that instant). */
    type: p.text().$type<'USAGE' | 'SCHEDULED'>(),
    periodStart: p.datetime(),
    periodEnd: p.datetime(),
    status: p.text().$type<'DRAFT' | 'FINALIZED' | 'VOID'>(),
    approvalStatus: p.text().$type<'PENDING_APPROVAL' | 'APPROVED' | 'REJECTED'>(),
    approvedBy: p.text().nullable(),
    rejectionReason: p.text().nullable(),
    creditTypeId: p.uuid(),
    creditTypeName: p.text(),
    lineItems: p.json<StoredInvoiceLine[]>(),
    total: p.decimal('string'),
    subtotal: p.decimal('string').nullable(),
    frozenAt: p.datetime(),
    finalizedAt: p.datetime().nullable(),
    emailedAt: p.datetime().nullable(),
    emailMessageId: p.text().nullable(),
    voidedAt: p.datetime().nullable(),
    regeneratedFromInvoiceId: p.uuid().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type Invoice = InferEntity<typeof Invoice>;



export interface ExternalIds {
  netsuite_sales_order_id?: string;
  salesforce_opportunity_id?: string;
}

export const BalanceGrant = defineEntity({
  name: 'BalanceGrant',
  tableName: 'balance_grant',
  properties: {
    id: p.uuid().primary(),
    customerId: p.uuid(),
    contractId: p.uuid().nullable(),
    kind: p.text().$type<'PREPAID' | 'POSTPAID' | 'CREDIT'>(),
    productId: p.uuid(),
    name: p.text().nullable(),
    description: p.text().nullable(),
    priority: p.decimal('number'),
    applicableProductIds: p.json<string[]>().nullable(),
    applicableProductTags: p.json<string[]>().nullable(),
    applicableContractIds: p.json<string[]>().nullable(),
    specifiers: p.json<GrantSpecifier[]>().nullable(),
    accessSchedule: p.json<AccessSchedule>(),
    invoiceSchedule: p.json<InvoiceSchedule>().nullable(),
    invoiceContractId: p.uuid().nullable(),
    rolloverFraction: p.decimal('string').nullable(),
    rateType: p.text().nullable(),
    customFields: p.json<Record<string, string>>(),
    uniquenessKey: p.text().nullable(),
    /** `netsuite_sales_order_id`, `salesforce_opportunity_id` as given. */
    externalIds: p.json<ExternalIds>().nullable(),
    amendmentId: p.uuid().nullable(),
    /** What rolled over to a renewal, per segment. */
    rolledOver: p.json<{ segment_id: string; amount: string; timestamp: string; new_contract_id: string; new_grant_id: string }[]>().nullable(),
    rolledOverFrom: p.json<{ grant_id: string; contract_id: string }>().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    archivedAt: p.datetime().nullable(),
  },
});
export type BalanceGrant = InferEntity<typeof BalanceGrant>;

export const BalanceLedgerEntry = defineEntity({
  name: 'BalanceLedgerEntry',
  tableName: 'balance_ledger',
  properties: {
    grantId: p.uuid().primary(),
    segmentId: p.text().primary(),
    invoiceId: p.uuid().primary(),
    type: p.text().primary(),
    contractId: p.uuid(),
    amount: p.decimal('string'),
    ts: p.datetime(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type BalanceLedgerEntry = InferEntity<typeof BalanceLedgerEntry>;

export const UsageCollector = defineEntity({
  name: 'UsageCollector',
  tableName: 'usage_collector',
  properties: {
    id: p.uuid().primary(),
    name: p.text(),
    sourceUrl: p.text(),
    query: p.text(),
    eventType: p.text(),
    intervalSeconds: p.integer(),
    collectedUntil: p.datetime(),
    lastRunAt: p.datetime().nullable(),
    lastRunEvents: p.integer().nullable(),
    /** Rows skipped for falling outside the ingest window: in all, and in the last window collected. */
    rowsOutsideWindow: p.bigint('string').default('0'),
    lastRunOutsideWindow: p.integer().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    archivedAt: p.datetime().nullable(),
  },
});
export type UsageCollector = InferEntity<typeof UsageCollector>;
export const entities = [ApiToken, Customer, CustomerIngestAlias, BillableMetric, Product, RateCard, Rate, Contract, Invoice, BalanceGrant, BalanceLedgerEntry, UsageCollector];
