import { mayHoldUnstorable, needsExactNumbers } from './app.js';

/**
 * The raw-body checks that let the JSON parser skip its slow paths (api/app.ts). A miss here
 * would store a number rounded or a string PostgreSQL refuses, so every number that a double does
 * not print back as written, and every escape that can make a NUL or a lone surrogate, must be
 * caught; a false alarm only costs time.
 */
describe('raw JSON body checks', () => {
  test.each([
    ['[{"tokens": 1.5, "n": 12, "neg": -0.25}]', false],
    ['[{"tokens":"1.50"}]', false],
    ['[{"tokens": 1.50}]', true],
    ['[{"tokens": 12345678901234567890}]', true],
    ['[{"tokens": 0.30000000000000004}]', false],
    ['[{"tokens": 1.0000000000000001}]', true],
    ['[1e3]', true],
    ['[ -0 ]', true],
    ['123456789012345678', true],
    ['  9007199254740993', true],
    ['{"a":{"b":[1,2,{"c":100.0}]}}', true],
    ['{"a": "x:1.50"}', false], // inside a string, not a number
    ['{"a": "x:1.50,"}', true], // inside a string but shaped like a value: a false alarm, harmless
    ['[{"timestamp":"2026-12-07T14:19:01.123Z","properties":{"at":"10:30","v":"1.50"}}]', false],
    ['[{"a":1.50 }]', true],
    ['[{"a":[1,2.0]}]', true],
  ])('needsExactNumbers(%s) = %s', (text, expected) => {
    expect(needsExactNumbers(text)).toBe(expected);
  });

  test.each([
    ['["\\u0000"]', true],
    ['["\\uD800"]', true],
    ['["\\udfff x"]', true],
    ['["\\ud83d\\ude00"]', true], // a valid pair: the full check decides
    ['["\\u00e9 é 😀"]', false],
    ['{"k\\u0000": 1}', true],
    ['["plain"]', false],
  ])('mayHoldUnstorable(%s) = %s', (text, expected) => {
    expect(mayHoldUnstorable(text)).toBe(expected);
  });
});
