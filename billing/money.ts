import { Decimal } from 'decimal.js';

/**
 * Money is decimal, never a JS number (invariant I6). All arithmetic on prices, quantities and
 * amounts goes through this Decimal clone; values enter as strings (or exact integers) and leave
 * as strings, or as JSON numbers only once rounded to the credit type's precision.
 */
export const Dec = Decimal.clone({ precision: 60, rounding: Decimal.ROUND_HALF_UP, toExpNeg: -30, toExpPos: 40 });
export type Dec = Decimal;

export type DecimalInput = string | number | Decimal;

/**
 * A plain decimal within what Accrue stores and sums in PostgreSQL `numeric` with room to spare: at
 * most 100 digits before and 100 after the point, an exponent of at most 3 digits. (numeric
 * refuses exponents beyond ±1000 and overflows near 131,072 digits; a sum of 2^63 such values
 * still fits.) db/metric-sql.ts NUMERIC_RE is the same rule in SQL.
 */
const DECIMAL_RE = /^[+-]?(\d{1,100}(\.\d{0,100})?|\.\d{1,100})([eE][+-]?\d{1,3})?$/;

export function isDecimalString(value: string): boolean {
  return DECIMAL_RE.test(value.trim());
}

/** Parses a decimal from user input; numbers must be finite, strings must be plain decimals. */
export function dec(value: DecimalInput): Decimal {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError(`not a finite number: ${value}`);
    return new Dec(String(value));
  }
  if (typeof value === 'string') {
    if (!isDecimalString(value)) throw new RangeError(`not a decimal number: ${JSON.stringify(value)}`);
    return new Dec(value.trim());
  }
  return value;
}

/**
 * THE bound on every decimal Accrue accepts through its API — amounts (alert thresholds, commit,
 * credit and charge amounts, threshold configurations, payments), prices and quantities: at most
 * AMOUNT_MAX_DIGITS digits before the point and AMOUNT_MAX_SCALE after it (trailing zeros aside),
 * exponent written out. 10^20 cents is far beyond any real bill, and 20 places keep the long
 * unit prices of per-token rates (`0.12345678901234567891`) exact. Everything inside the bound
 * is stored, summed and read back well within `dec` (100 digits either side), so a value the API
 * took can never stop the code that reads it later. operations/input/validate.ts `decimal` enforces it.
 */
export const AMOUNT_MAX_DIGITS = 20;
export const AMOUNT_MAX_SCALE = 20;

/** Why `d` is outside the amount bound, or undefined when it is inside. */
export function amountBoundProblem(d: Decimal): string | undefined {
  if (!d.isFinite()) return 'must be a finite number';
  if (d.abs().gte(new Dec(10).pow(AMOUNT_MAX_DIGITS))) return `must have at most ${AMOUNT_MAX_DIGITS} digits before the decimal point (less than 1e${AMOUNT_MAX_DIGITS} in absolute value)`;
  if (d.decimalPlaces() > AMOUNT_MAX_SCALE) return `must have at most ${AMOUNT_MAX_SCALE} digits after the decimal point`;
  return undefined;
}

export interface CreditType {
  id: string;
  name: string;
  /** Decimal places amounts are rounded to: 0 for USD cents, the unit Metronome prices in. */
  precision: number;
}

/** USD (cents): amounts are cents, as in Metronome. The id is Metronome's well-known USD id. */
export const USD_CENTS: CreditType = { id: '2714e483-4ff1-48e4-9e25-ac732e8f24f2', name: 'USD (cents)', precision: 0 };

/**
 * THE rounding point (invariant I6): an invoice line's amount is rounded here, once, half-up to
 * the credit type's precision. Totals are sums of rounded lines, so they never drift.
 */
export function roundAmount(amount: Decimal, creditType: CreditType = USD_CENTS): Decimal {
  return amount.toDecimalPlaces(creditType.precision, Decimal.ROUND_HALF_UP);
}

export function sum(values: Iterable<Decimal>): Decimal {
  let total = new Dec(0);
  for (const v of values) total = total.plus(v);
  return total;
}

/**
 * Splits `total` into `parts` amounts that sum to it exactly (Metronome's DIVIDED): each part is
 * the total divided and rounded down to the credit type's precision, and the remainder goes out
 * one smallest unit (one cent) at a time to the first parts. 1000 in 3 is 334, 333, 333 — never
 * three 333.33… that bill 999 once each is rounded. A total finer than the precision keeps its
 * sub-cent rest on the last part.
 */
export function divideAmount(total: Decimal, parts: number, creditType: CreditType = USD_CENTS): Decimal[] {
  if (!Number.isInteger(parts) || parts < 1) throw new RangeError(`cannot divide into ${parts} parts`);
  const unit = new Dec(10).pow(-creditType.precision);
  const each = total.div(parts).toDecimalPlaces(creditType.precision, Decimal.ROUND_DOWN);
  let rest = total.minus(each.times(parts));
  const out: Decimal[] = [];
  for (let i = 0; i < parts; i++) {
    let part = each;
    if (rest.abs().gte(unit)) {
      const step = rest.isNegative() ? unit.neg() : unit;
      part = part.plus(step);
      rest = rest.minus(step);
    }
    out.push(part);
  }
  out[parts - 1] = out[parts - 1]!.plus(rest);
  return out;
}

/**
 * Metronome's DIVIDED_ROUNDED: each part rounded (at the rounding point), the last part takes
 * what is left so the parts sum to the total.
 */
export function divideAmountRounded(total: Decimal, parts: number, creditType: CreditType = USD_CENTS): Decimal[] {
  if (!Number.isInteger(parts) || parts < 1) throw new RangeError(`cannot divide into ${parts} parts`);
  const each = roundAmount(total.div(parts), creditType);
  return Array.from({ length: parts }, (_, i) => (i === parts - 1 ? total.minus(each.times(parts - 1)) : each));
}

/**
 * Whole cents as dollars for people (`$1,234.05`), with no rounding of its own: an amount that
 * is not whole cents was not rounded at the rounding point and is refused, not silently rounded.
 */
export function formatUsdCents(cents: DecimalInput): string {
  const d = dec(cents);
  if (!d.isInteger()) throw new RangeError(`amount ${d.toString()} is not whole cents; round it with roundAmount first`);
  const abs = d.abs();
  const whole = abs.divToInt(100).toFixed();
  const frac = abs.mod(100).toFixed().padStart(2, '0');
  return `${d.isNegative() ? '-' : ''}$${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',')}.${frac}`;
}

/** A decimal as it goes out in JSON: an exact JSON number (see `jsonDecimal`), opaque in code. */
export interface JsonDecimal { readonly rawJSON: string }

const rawJSON = (JSON as unknown as { rawJSON(text: string): JsonDecimal }).rawJSON;

/**
 * Decimals to the edge: a stored decimal (amount, quantity, price) as an exact JSON number —
 * the digits PostgreSQL holds, not the nearest double (`JSON.rawJSON`, serialized verbatim by
 * `JSON.stringify`). No rounding here: amounts were rounded once, by `roundAmount`.
 */
export function jsonDecimal(value: DecimalInput): JsonDecimal {
  return rawJSON(dec(value).toFixed());
}

/** `jsonDecimal` for an optional value. */
export function jsonDecimalOpt(value: DecimalInput | null | undefined): JsonDecimal | undefined {
  return value === undefined || value === null ? undefined : jsonDecimal(value);
}

/**
 * JSON text back into values without losing a digit: a number a double cannot hold exactly (an
 * amount of more than 15–17 significant digits) comes back as a `JsonDecimal`, which
 * `JSON.stringify` writes out verbatim; every other number is a plain number. For JSON stored by
 * Accrue (an outbound notification's properties, written with `jsonDecimal`) and sent on.
 */
export function parseJsonExact(text: string): unknown {
  const reviver = (_key: string, value: unknown, context?: { source?: string }) => {
    if (typeof value !== 'number' || context?.source === undefined) return value;
    return new Dec(context.source).eq(new Dec(String(value))) ? value : rawJSON(context.source);
  };
  return JSON.parse(text, reviver as (this: unknown, key: string, value: unknown) => unknown);
}

/**
 * A rounded amount as a JSON number, for Metronome-shaped responses. Only called on values
 * already rounded by `roundAmount` (or on quantities), which JSON numbers carry exactly up to
 * 2^53; anything larger is refused rather than silently approximated.
 */
export function toJsonNumber(value: Decimal): number {
  const n = Number(value.toString());
  if (!Number.isFinite(n) || (value.isInteger() && !Number.isSafeInteger(n))) {
    throw new RangeError(`amount ${value.toString()} cannot be represented exactly as a JSON number`);
  }
  return n;
}
