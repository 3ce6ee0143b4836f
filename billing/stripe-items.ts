import { dec, roundAmount, type DecimalInput } from './money.js';

/**
 * An Accrue invoice as Stripe invoice items: the one place amounts become Stripe's integer minor
 * units (USD cents). Accrue lines are decimal cents and may carry fractions of a cent (a graduated
 * tier, a proration); the invoice total is whole cents. Each line is rounded down to whole cents
 * and the cents left over go, one each, to the lines with the largest fractions (ties: earlier
 * line first), so the items add up to the invoice total exactly and no line moves by a cent or more.
 * Zero lines are left out. Pure.
 */
export interface StripeItem {
  /** Position of the Accrue line (part of the item's idempotency key). */
  index: number;
  description: string;
  /** Integer cents (negative for credits and discounts). */
  amount: number;
}

export function stripeItems(lines: readonly { name: string; total: DecimalInput; quantity?: DecimalInput | null }[], total: DecimalInput): StripeItem[] {
  const want = roundAmount(dec(total));
  const parts = lines.map((l, index) => {
    const exact = dec(l.total);
    const floor = exact.floor();
    return { index, name: l.name, quantity: l.quantity, exact, cents: floor, frac: exact.minus(floor) };
  });
  let left = want.minus(parts.reduce((s, p) => s.plus(p.cents), dec(0)));
  if (!left.isInteger()) throw new Error(`invoice total ${want.toFixed()} is not whole cents`);
  // Largest fractions first take the cents left over (there are fewer than one per line unless the
  // stored total disagrees with its lines; then the difference goes to the largest line).
  const order = [...parts].sort((a, b) => b.frac.comparedTo(a.frac) || a.index - b.index);
  for (const p of order) {
    if (left.lte(0) || p.frac.isZero()) break;
    p.cents = p.cents.plus(1);
    left = left.minus(1);
  }
  if (!left.isZero()) {
    if (!parts.length) throw new Error(`invoice total ${want.toFixed()} has no lines to carry it`);
    const biggest = [...parts].sort((a, b) => b.exact.abs().comparedTo(a.exact.abs()) || a.index - b.index)[0]!;
    biggest.cents = biggest.cents.plus(left);
  }
  return parts.filter((p) => !p.cents.isZero()).map((p) => {
    const qty = p.quantity !== undefined && p.quantity !== null ? dec(p.quantity) : undefined;
    return { index: p.index, description: qty && !qty.isZero() ? `${p.name} (${qty.toFixed()})` : p.name, amount: p.cents.toNumber() };
  });
}
