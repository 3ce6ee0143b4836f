import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkWebhookUrl, isPublicAddress } from './address-policy.js';
import { sendWebhook, signWebhook } from './send.js';

describe('webhook address policy and signing', () => {
  test.each([
    ['127.0.0.1', false], ['10.0.0.1', false], ['172.16.5.5', false], ['192.168.1.1', false], ['169.254.169.254', false], ['100.64.0.1', false], ['0.0.0.0', false],
    ['::1', false], ['fe80::1', false], ['fc00::1', false], ['::ffff:127.0.0.1', false], ['::ffff:10.0.0.1', false], ['::ffff:7f00:1', false],
    ['93.184.216.34', true], ['8.8.8.8', true], ['2606:4700::1111', true], ['::ffff:8.8.8.8', true],
  ])('%s public: %s', (address, expected) => {
    expect(isPublicAddress(address)).toBe(expected);
  });

  test('URLs: scheme, credentials, private hosts refused unless allowed', async () => {
    await expect(checkWebhookUrl('ftp://example.com/x', 'url', false)).rejects.toThrow(/^url: must be an http\(s\) URL/);
    await expect(checkWebhookUrl('http://127.0.0.1:8080/x', 'url', false)).rejects.toThrow(/^url: resolves to 127\.0\.0\.1, a private/);
    await expect(checkWebhookUrl('http://localhost/x', 'url', false)).rejects.toThrow(/^url: resolves to/);
    expect((await checkWebhookUrl('http://127.0.0.1:8080/x', 'url', true)).host).toBe('127.0.0.1:8080');
  });

  test('a delivery to a private address is refused at connect time unless allowed; signatures are hex HMAC-SHA256 of date\\nbody', async () => {
    let hits = 0;
    const server = createServer((_req, res) => { hits++; res.end('ok'); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const url = new URL(`http://localhost:${(server.address() as AddressInfo).port}/hook`);
    try {
      const refused = await sendWebhook(url, '{}', 'whsec_x', { allowPrivate: false });
      expect(refused).toMatchObject({ ok: false, error: expect.stringMatching(/private address/) });
      expect(hits).toBe(0);
      expect(await sendWebhook(url, '{}', 'whsec_x', { allowPrivate: true })).toEqual({ ok: true, statusCode: 200 });
      expect(hits).toBe(1);
    } finally {
      server.close();
    }
    expect(signWebhook('{"a":1}', 'Mon, 07 Dec 2026 03:00:00 GMT', 'secret')).toBe(
      (await import('node:crypto')).createHmac('sha256', 'secret').update('Mon, 07 Dec 2026 03:00:00 GMT\n{"a":1}').digest('hex'));
  });
});
