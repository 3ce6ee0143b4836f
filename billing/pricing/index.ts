import { priceFlat } from './flat.js';
import type { PricingInput, PricingResult, RateType } from './types.js';

export type { PricingInput, PricingResult, RateType } from './types.js';

/** One pure function per pricing model; new models are added here and nowhere else. */
export const pricingModels: Record<RateType, (input: PricingInput) => PricingResult> = {
  FLAT: priceFlat,
};

export const SUPPORTED_RATE_TYPES = Object.keys(pricingModels) as RateType[];

export function isSupportedRateType(value: string): value is RateType {
  return Object.hasOwn(pricingModels, value);
}

export function price(rateType: RateType, input: PricingInput): PricingResult {
  return pricingModels[rateType](input);
}
