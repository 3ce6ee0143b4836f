import type { Decimal } from 'decimal.js';

/**
 * Rate types. FLAT, TIERED, PERCENTAGE and SUBSCRIPTION are Metronome's; VOLUME and PACKAGE are
 * Accrue's additions (as Lago and OpenMeter offer them).
 */
export type RateType = 'FLAT' | 'TIERED' | 'VOLUME' | 'PACKAGE' | 'PERCENTAGE' | 'SUBSCRIPTION';
export const RATE_TYPES: readonly RateType[] = ['FLAT', 'TIERED', 'VOLUME', 'PACKAGE', 'PERCENTAGE', 'SUBSCRIPTION'];

/** A tier as Metronome writes it: `size` units at `price` each; the last tier has no size. */
export interface Tier {
  /** Decimal string; units in this tier. Absent on the last tier (unbounded). */
  size?: string;
  /** Decimal string, per unit, in the credit type's unit. */
  price: string;
}

/** Everything a rate says about price, independent of when and where it applies. */
export interface RateSpec {
  rateType: RateType;
  /**
   * Decimal string. FLAT / SUBSCRIPTION: per unit. PACKAGE: per package. PERCENTAGE: the fraction
   * of the composite products' spend (0.1 = 10 %). TIERED / VOLUME: unused (tiers carry prices).
   */
  price?: string;
  tiers?: Tier[];
  /** PACKAGE: units per package, and whether a partial package counts (UP) or not (DOWN). */
  packageSize?: string;
  packageRounding?: 'UP' | 'DOWN';
  /** SUBSCRIPTION: seats / units billed each period (default 1). */
  quantity?: string;
  /** SUBSCRIPTION: charge a partial period by the fraction of it that is covered. */
  isProrated?: boolean;
}

export interface PricingInput {
  /** Usage quantity; for PERCENTAGE the spend it is a fraction of. */
  quantity: Decimal;
  rate: RateSpec;
  /** SUBSCRIPTION with isProrated: fraction of the period covered, in [0, 1]. */
  prorationFactor?: Decimal;
}

export interface PricingResult {
  /** Unrounded amount in the credit type's unit. Rounding happens once, on the invoice line. */
  amount: Decimal;
  /** The per-unit price when there is one (FLAT, SUBSCRIPTION, VOLUME's tier, PACKAGE's package). */
  unitPrice?: Decimal;
  /** The quantity the amount was computed on, when it differs from the input (PACKAGE: packages). */
  billedQuantity?: Decimal;
  /** TIERED / VOLUME: how much of the quantity each tier took (for invoice sub-lines). */
  tierBreakdown?: { tier: number; startingAt: Decimal; quantity: Decimal; price: Decimal; amount: Decimal }[];
}
