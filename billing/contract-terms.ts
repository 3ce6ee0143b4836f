import type { SpendThresholdConfig, ThresholdConfig } from './recharge.js';
import type { ProductInfo, ProductType, QuantityConversion, QuantityRounding } from './invoice.js';
import type { ContractOverride, OverrideSpecifier, Prioritization } from './overrides.js';
import type { RateSpec, RateType } from './pricing/index.js';
import type { ApprovalPolicy } from './approval-policy.js';

/**
 * Stored shapes of products, contract terms and commits/credits (snake_case as in the API, money
 * as decimal strings), and their conversion into what the pure pricing code takes.
 */

export interface ProductAttributes {
  pricing_group_key?: string[];
  presentation_group_key?: string[];
  quantity_conversion?: QuantityConversion | null;
  quantity_rounding?: QuantityRounding | null;
  composite_product_ids?: string[];
  composite_tags?: string[];
  exclude_free_usage?: boolean;
  is_refundable?: boolean;
  netsuite_internal_item_id?: string;
  netsuite_overage_item_id?: string;
}

/** A product version: the fields it changes, in force from `starting_at`. */
export interface ProductUpdate extends ProductAttributes {
  starting_at: string;
  created_at: string;
  created_by: string;
  name?: string;
  billable_metric_id?: string;
  tags?: string[];
}

export interface ProductState extends ProductAttributes {
  name: string;
  billable_metric_id: string | null;
  tags: string[];
  starting_at?: string;
}

export interface ProductRecord {
  id: string;
  type: ProductType;
  name: string;
  billableMetricId: string | null;
  tags: string[];
  customFields?: Record<string, string>;
  attributes: ProductAttributes;
  updates: ProductUpdate[];
}

/** The product as in force at `at` (epoch ms): the initial state plus every update started by then. */
export function productStateAt(p: ProductRecord, at: number): ProductState {
  let state: ProductState = { name: p.name, billable_metric_id: p.billableMetricId, tags: p.tags, ...p.attributes };
  const updates = [...p.updates].sort((a, b) => Date.parse(a.starting_at) - Date.parse(b.starting_at) || a.created_at.localeCompare(b.created_at));
  for (const u of updates) {
    if (Date.parse(u.starting_at) > at) break;
    const { created_at: _c, created_by: _b, ...fields } = u;
    state = { ...state, ...fields };
  }
  return state;
}

export function productInfo(p: ProductRecord, at: number): ProductInfo {
  const s = productStateAt(p, at);
  return {
    id: p.id, name: s.name, type: p.type, tags: s.tags, customFields: p.customFields,
    quantityConversion: s.quantity_conversion ?? null, quantityRounding: s.quantity_rounding ?? null,
    compositeProductIds: s.composite_product_ids, compositeTags: s.composite_tags, excludeFreeUsage: s.exclude_free_usage,
  };
}

/** A rate as stored in contract terms (overwrite rates) and commit rates. */
export interface StoredRate {
  rate_type: RateType;
  price?: string;
  tiers?: { size?: string; price: string }[];
  quantity?: string;
  is_prorated?: boolean;
  package_size?: string;
  package_rounding?: 'UP' | 'DOWN';
}

export function rateSpecOf(r: StoredRate): RateSpec {
  return {
    rateType: r.rate_type, price: r.price, tiers: r.tiers, quantity: r.quantity, isProrated: r.is_prorated,
    packageSize: r.package_size, packageRounding: r.package_rounding,
  };
}

export interface StoredOverride {
  id: string;
  starting_at: string;
  ending_before?: string | null;
  type?: 'OVERWRITE' | 'MULTIPLIER';
  product_id?: string;
  applicable_product_tags?: string[];
  override_specifiers?: OverrideSpecifier[];
  multiplier?: string;
  overwrite_rate?: StoredRate;
  entitled?: boolean;
  priority?: number;
  amendment_id?: string;
  created_at?: string;
}

export function overrideOf(o: StoredOverride): ContractOverride {
  return {
    id: o.id, startingAt: Date.parse(o.starting_at), endingBefore: o.ending_before ? Date.parse(o.ending_before) : null,
    type: o.type, productId: o.product_id, applicableProductTags: o.applicable_product_tags, specifiers: o.override_specifiers,
    multiplier: o.multiplier, overwriteRate: o.overwrite_rate ? rateSpecOf(o.overwrite_rate) : undefined, entitled: o.entitled, priority: o.priority,
  };
}

export interface StoredScheduleItem {
  id: string;
  timestamp: string;
  amount: string;
  quantity: string;
  unit_price: string;
  /** Set when the item is billed on its own (SCHEDULED) invoice, not on the period's invoice it falls in. */
  invoice_id?: string;
}

export interface StoredCharge {
  id: string;
  product_id: string;
  name?: string;
  custom_fields?: Record<string, string>;
  schedule: { credit_type_id: string; schedule_items: StoredScheduleItem[] };
  amendment_id?: string;
  created_at?: string;
  netsuite_sales_order_id?: string;
}

export interface ContractTerms {
  overrides?: StoredOverride[];
  scheduled_charges?: StoredCharge[];
  discounts?: StoredCharge[];
  multiplier_override_prioritization?: Prioritization;
  net_payment_terms_days?: number;
  total_contract_value?: string;
  amendments?: { id: string; starting_at: string; created_at: string; created_by: string; netsuite_sales_order_id?: string; salesforce_opportunity_id?: string }[];
  /** v2 edits, in effect from when they were made (what they added carries their id as amendment_id). */
  edits?: { id: string; created_at: string }[];
  /** This contract renews or supersedes another, from its starting_at. */
  transition?: { from_contract_id: string; type: 'RENEWAL' | 'SUPERSEDE' };
  /** A trial from the contract's start (Metronome's plan trial shape, plus Accrue's `convert`). */
  trial_spec?: TrialSpec;
  /** Accrue: days before ending_before the contract becomes RENEWING (default 30; 0 = no notice). */
  renewal_notice_days?: number;
  /** Accrue: when this contract's invoices wait for finance (default ACCRUE_APPROVAL_POLICY). */
  approval_policy?: ApprovalPolicy;
  /** Accrue: whether access is gated (entitlements) while the contract is in ARREARS (default: not). */
  arrears_policy?: { gate_access: boolean };
  /** Metronome's auto-recharge of the prepaid balance (billing/recharge.ts). */
  prepaid_balance_threshold_configuration?: ThresholdConfig;
  /** Metronome's spend-threshold billing (billing/recharge.ts). */
  spend_threshold_configuration?: SpendThresholdConfig;
}

/** What a contract without `renewal_notice_days` in its terms gets. */
export const DEFAULT_RENEWAL_NOTICE_DAYS = 30;

export interface TrialSpec {
  length_in_days: number;
  /** Cents: the trial covers usage up to this amount; without it the trial covers every trial line. */
  spending_cap?: { amount: string };
  /** AUTO: the contract converts to ACTIVE at the trial's end even without a commit or billing provider. */
  convert?: 'AUTO';
}

export interface AccessSegment {
  id: string;
  amount: string;
  starting_at: string;
  ending_before: string;
}

export interface AccessSchedule {
  credit_type_id: string;
  schedule_items: AccessSegment[];
}

export interface InvoiceSchedule {
  credit_type_id: string;
  do_not_invoice?: boolean;
  schedule_items: StoredScheduleItem[];
}

export interface GrantSpecifier {
  product_id?: string;
  product_tags?: string[];
  pricing_group_values?: Record<string, string>;
  presentation_group_values?: Record<string, string>;
}
