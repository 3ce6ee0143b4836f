import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { ValidationError } from '../../billing/errors.js';

/**
 * Where webhooks may go. Private, loopback, link-local (and other non-public) addresses are
 * refused unless `ACCRUE_WEBHOOK_ALLOW_PRIVATE=1` (tests and local use): a webhook URL must not
 * become a way to reach Accrue's own network. Checked when an endpoint is created and again on
 * every delivery, against the address actually connected to (a name that resolves to a private
 * address later is refused then).
 */
const blocked = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96]] as const) blocked.addSubnet(net, bits, 'ipv6');

export function privateAddressesAllowed(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.ACCRUE_WEBHOOK_ALLOW_PRIVATE === '1';
}

export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  if (family === 6 && address.toLowerCase().startsWith('::ffff:')) {
    const v4 = address.slice(7);
    if (isIP(v4) === 4) return !blocked.check(v4, 'ipv4');
  }
  return !blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** Parses and checks a webhook URL; `field` names it in the error. */
export async function checkWebhookUrl(raw: string, field: string, allowPrivate = privateAddressesAllowed()): Promise<URL> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ValidationError(field, `must be an absolute http(s) URL, got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ValidationError(field, `must be an http(s) URL, got scheme ${url.protocol.replace(/:$/, '')}`);
  if (url.username || url.password) throw new ValidationError(field, 'must not carry credentials');
  if (allowPrivate) return url;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const addresses = isIP(host) ? [host] : await lookup(host, { all: true }).then((a) => a.map((x) => x.address)).catch(() => {
    throw new ValidationError(field, `host ${host} does not resolve`);
  });
  const bad = addresses.find((a) => !isPublicAddress(a));
  if (bad) throw new ValidationError(field, `resolves to ${bad}, a private, loopback or link-local address (set ACCRUE_WEBHOOK_ALLOW_PRIVATE=1 to allow for local use)`);
  return url;
}
