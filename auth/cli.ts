import { parseArgs } from 'node:util';
import { hashApiKey, newApiKey } from './api-keys.js';
import { isRole, ROLES } from './principal.js';

/**
 * `npm run auth -- new-key --name <name> --roles <role,…> [--rate <n>]`: a new
 * API key, printed once, and the API_KEYS_FILE entry holding only its hash.
 * `npm run auth -- hash-key <key>`: the hash of an existing key.
 */
const usage = `usage:
  npm run auth -- new-key --name <name> --roles <${ROLES.join('|')}>[,…] [--rate <requests per second>]
  npm run auth -- hash-key <key>`;

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  if (command === 'hash-key' && rest.length === 1) {
    console.log(hashApiKey(rest[0]!));
    return 0;
  }
  if (command !== 'new-key') {
    console.error(usage);
    return 2;
  }
  const { values } = parseArgs({ args: rest, options: { name: { type: 'string' }, roles: { type: 'string' }, rate: { type: 'string' } } });
  const roles = (values.roles ?? '').split(',').map((r) => r.trim()).filter(Boolean);
  const bad = roles.filter((r) => !isRole(r));
  if (!values.name || !/^[\w.@-]{1,100}$/.test(values.name) || roles.length === 0 || bad.length > 0) {
    console.error(bad.length ? `unknown role(s): ${bad.join(', ')}\n${usage}` : usage);
    return 2;
  }
  const rate = values.rate === undefined ? undefined : Number(values.rate);
  if (rate !== undefined && !(rate > 0)) {
    console.error(`--rate must be a positive number\n${usage}`);
    return 2;
  }
  const { key, sha256 } = newApiKey();
  console.log(`# the key (shown once; give it to the service, store it as a secret):\n${key}\n`);
  console.log(`# add to API_KEYS_FILE under keys:\n  - { name: ${values.name}, sha256: ${sha256}, roles: [${roles.join(', ')}]${rate === undefined ? '' : `, rateLimitPerSecond: ${rate}`} }`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
