import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * A throwaway PKI made with the openssl CLI (node:crypto cannot issue
 * certificates): a CA, a server certificate for 127.0.0.1/localhost and a
 * client certificate, both signed by the CA, plus a second key that matches
 * neither. EC P-256 keys: quick to make on a busy machine.
 */
export interface TestPki {
  readonly dir: string;
  readonly caCert: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A valid private key that belongs to no certificate here. */
  readonly strayKey: string;
  /** File contents by path, for clients that want PEM text. */
  read(file: string): string;
  remove(): void;
}

export function makeTestPki(): TestPki {
  const dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), 'fg-pki-'));
  const at = (name: string): string => path.join(dir, name);
  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const key = (name: string): void => openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', at(name));

  key('ca.key');
  openssl('req', '-x509', '-new', '-key', at('ca.key'), '-subj', '/CN=feature-gateway test CA', '-days', '2', '-out', at('ca.crt'));
  const issue = (name: string, cn: string, extensions: string): void => {
    key(`${name}.key`);
    openssl('req', '-new', '-key', at(`${name}.key`), '-subj', `/CN=${cn}`, '-out', at(`${name}.csr`));
    fs.writeFileSync(at(`${name}.ext`), extensions);
    openssl('x509', '-req', '-in', at(`${name}.csr`), '-CA', at('ca.crt'), '-CAkey', at('ca.key'), '-CAcreateserial',
      '-days', '2', '-extfile', at(`${name}.ext`), '-out', at(`${name}.crt`));
  };
  // clientAuth too: a Kafka broker presents its own certificate to itself between brokers.
  issue('server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  issue('client', 'test-client', 'extendedKeyUsage=clientAuth\n');
  key('stray.key');

  return {
    dir,
    caCert: at('ca.crt'),
    serverCert: at('server.crt'),
    serverKey: at('server.key'),
    clientCert: at('client.crt'),
    clientKey: at('client.key'),
    strayKey: at('stray.key'),
    read: (file) => fs.readFileSync(file, 'utf8'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
