/**
 * KAFKA_SSL* and KAFKA_SASL_* → config → kafkajs connection options
 * (kafkaSecurityOptions, the one builder every Kafka client uses), and the
 * start-up errors naming the variable at fault. Certificates come from a
 * throwaway openssl PKI, as the config checks them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { kafkaSecurityOptions } from '../../eventlog/kafka-log.js';
import { loadConfig } from '../../runtime/config.js';
import { ConfigError } from '../../runtime/errors.js';
import { makeTestPki, type TestPki } from '../support/tls-certs.js';

const options = (env: Record<string, string>) => kafkaSecurityOptions(loadConfig({ KAFKA_BROKERS: '127.0.0.1:9092', ...env }).kafkaSecurity);
const failsNaming = (env: Record<string, string>, variable: string, message?: RegExp) =>
  assert.throws(() => loadConfig(env), (e: unknown) => e instanceof ConfigError && e.variable === variable && (!message || message.test(e.message)), JSON.stringify(env));

describe('Kafka client security options', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki();
  });
  after(() => pki?.remove());

  test('nothing set: plaintext without SASL (no ssl or sasl keys at all)', () => {
    assert.deepEqual(options({}), {});
    assert.deepEqual(kafkaSecurityOptions(undefined), {});
  });

  test('KAFKA_SSL=true alone: TLS verified against the system CAs', () => {
    assert.deepEqual(options({ KAFKA_SSL: 'true' }), { ssl: { rejectUnauthorized: true } });
  });

  test('a CA and a client certificate: PEM text passed through; the CA file turns TLS on by itself', () => {
    const out = options({ KAFKA_SSL_CA_FILE: pki.caCert, KAFKA_SSL_CERT_FILE: pki.clientCert, KAFKA_SSL_KEY_FILE: pki.clientKey });
    assert.deepEqual(out, { ssl: { rejectUnauthorized: true, ca: [pki.read(pki.caCert)], cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) } });
  });

  for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512'] as const) {
    test(`SASL ${mechanism} with user and password`, () => {
      assert.deepEqual(options({ KAFKA_SASL_MECHANISM: mechanism.toUpperCase(), KAFKA_SASL_USERNAME: 'alice', KAFKA_SASL_PASSWORD: 'pw' }), {
        sasl: { mechanism, username: 'alice', password: 'pw' },
      });
    });
  }

  test('KAFKA_SASL_PASSWORD_FILE: the file\'s text without its trailing newline; SASL over TLS', () => {
    const file = path.join(pki.dir, 'kafka-password');
    fs.writeFileSync(file, 'from-file\n');
    assert.deepEqual(options({ KAFKA_SSL: 'on', KAFKA_SASL_MECHANISM: 'scram-sha-512', KAFKA_SASL_USERNAME: 'bob', KAFKA_SASL_PASSWORD_FILE: file }), {
      ssl: { rejectUnauthorized: true },
      sasl: { mechanism: 'scram-sha-512', username: 'bob', password: 'from-file' },
    });
  });

  test('bad settings fail at start-up naming the variable', () => {
    failsNaming({ KAFKA_SASL_MECHANISM: 'gssapi', KAFKA_SASL_USERNAME: 'a', KAFKA_SASL_PASSWORD: 'b' }, 'KAFKA_SASL_MECHANISM', /plain, scram-sha-256 or scram-sha-512/);
    failsNaming({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_PASSWORD: 'b' }, 'KAFKA_SASL_USERNAME');
    failsNaming({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'a' }, 'KAFKA_SASL_PASSWORD');
    failsNaming({ KAFKA_SASL_USERNAME: 'a', KAFKA_SASL_PASSWORD: 'b' }, 'KAFKA_SASL_MECHANISM');
    failsNaming({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'a', KAFKA_SASL_PASSWORD: 'b', KAFKA_SASL_PASSWORD_FILE: pki.caCert }, 'KAFKA_SASL_PASSWORD_FILE', /not both/);
    failsNaming({ KAFKA_SSL: 'false', KAFKA_SSL_CA_FILE: pki.caCert }, 'KAFKA_SSL');
    failsNaming({ KAFKA_SSL_CA_FILE: path.join(pki.dir, 'missing.pem') }, 'KAFKA_SSL_CA_FILE', /cannot read/);
    failsNaming({ KAFKA_SSL_CA_FILE: pki.clientKey }, 'KAFKA_SSL_CA_FILE', /not a PEM certificate/);
    failsNaming({ KAFKA_SSL_CERT_FILE: pki.clientCert }, 'KAFKA_SSL_KEY_FILE');
    failsNaming({ KAFKA_SSL_CERT_FILE: pki.clientCert, KAFKA_SSL_KEY_FILE: pki.serverKey }, 'KAFKA_SSL_KEY_FILE', /does not match/);
    failsNaming({ KAFKA_SSL: 'maybe' }, 'KAFKA_SSL');
  });
});
