import { priceFlat } from './flat.js';
import { pricePackage } from './package.js';
import { pricePercentage } from './percentage.js';
import { priceSubscription } from './subscription.js';
import { priceTiered } from './tiered.js';
import { priceVolume } from './volume.js';
import type { PricingInput, PricingResult, RateType } from './types.js';

export type { PricingInput, PricingResult, RateSpec, RateType, Tier } from './types.js';
export { RATE_TYPES } from './types.js';

/** One pure function per pricing model; new models are added here and nowhere else. */
export const pricingModels: Record<RateType, (input: PricingInput) => PricingResult> = {
  FLAT: priceFlat,
  TIERED: priceTiered,
  VOLUME: priceVolume,
  PACKAGE: pricePackage,
  PERCENTAGE: pricePercentage,
  SUBSCRIPTION: priceSubscription,
};

export const SUPPORTED_RATE_TYPES = Object.keys(pricingModels) as RateType[];

export function isSupportedRateType(value: string): value is RateType {
  return Object.hasOwn(pricingModels, value);
}

export function price(input: PricingInput): PricingResult {
  return pricingModels[input.rate.rateType](input);
}
