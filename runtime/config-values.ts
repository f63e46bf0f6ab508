import crypto from 'node:crypto';
import fs from 'node:fs';
import { ConfigError } from './errors.js';

/**
 * The parsers every configuration section shares: integers, booleans, lists,
 * secrets, files and TLS material, each failing with a ConfigError that names
 * the variable. A folder that owns a section (store/config.ts, …) reads its
 * variables through these, so one variable is parsed one way everywhere.
 */

/** Reads one variable of the merged environment and config file; an empty value counts as unset. */
export type Get = (name: string) => string | undefined;

/** Client-side TLS material (PEM text); each part optional. */
export interface ClientTls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

export function int(get: Get, name: string, fallback: number, min: number, max: number): number {
  const text = get(name);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(name, `expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return n;
}

export function bool(get: Get, name: string, fallback: boolean): boolean {
  const text = get(name)?.toLowerCase();
  if (text === undefined) return fallback;
  if (['1', 'true', 'yes', 'on'].includes(text)) return true;
  if (['0', 'false', 'no', 'off'].includes(text)) return false;
  throw new ConfigError(name, `expected true or false, got ${JSON.stringify(text)}`);
}

export function list(name: string, text: string): string[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new ConfigError(name, 'expected a comma-separated list');
  return items;
}

/** `host:port[,host:port…]`, each port 1–65535 (Kafka brokers, cluster seed nodes, Aerospike hosts). */
export function hostPorts(name: string, text: string): string[] {
  const items = list(name, text);
  for (const item of items) {
    const m = /^([^\s:/,]+):(\d{1,5})$/.exec(item);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new ConfigError(name, `expected host:port[,host:port…], got ${JSON.stringify(item)}`);
  }
  return items;
}

/** The file named by variable `name`, as text; undefined when the variable is unset. */
export function fileOf(get: Get, name: string): string | undefined {
  const file = get(name);
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(name, `cannot read ${file}: ${(error as Error).message}`);
  }
}

/** A secret given directly (`NAME`) or in a file (`NAME_FILE`, trailing newline dropped), not both. */
export function secret(get: Get, name: string): string | undefined {
  const direct = get(name);
  const fromFile = fileOf(get, `${name}_FILE`);
  if (direct !== undefined && fromFile !== undefined) throw new ConfigError(`${name}_FILE`, `set either ${name} or ${name}_FILE, not both`);
  const value = direct ?? fromFile?.replace(/\r?\n$/, '');
  if (value !== undefined && value === '') throw new ConfigError(`${name}_FILE`, 'the file is empty');
  return value;
}

export function certificate(pem: string, variable: string): crypto.X509Certificate {
  try {
    return new crypto.X509Certificate(pem);
  } catch (error) {
    throw new ConfigError(variable, `not a PEM certificate: ${(error as Error).message}`);
  }
}

/** Fails at start-up, naming the variable, on an unreadable certificate or key or a key of another certificate. */
export function checkKeyPair(certPem: string, keyPem: string, certVariable: string, keyVariable: string): void {
  const cert = certificate(certPem, certVariable);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (error) {
    throw new ConfigError(keyVariable, `not a PEM private key (an encrypted key is not supported): ${(error as Error).message}`);
  }
  if (!cert.checkPrivateKey(key)) throw new ConfigError(keyVariable, `the key does not match the certificate in ${certVariable} (subject ${cert.subject.replace(/\n/g, ', ')})`);
}

/** Client TLS material from `<prefix>CA_FILE`, `<prefix>CERT_FILE`, `<prefix>KEY_FILE`. */
export function clientTls(get: Get, prefix: string): ClientTls {
  const ca = fileOf(get, `${prefix}CA_FILE`);
  const cert = fileOf(get, `${prefix}CERT_FILE`);
  const key = fileOf(get, `${prefix}KEY_FILE`);
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(cert === undefined ? `${prefix}CERT_FILE` : `${prefix}KEY_FILE`, `a client certificate needs both ${prefix}CERT_FILE and ${prefix}KEY_FILE`);
  }
  if (ca !== undefined) certificate(ca, `${prefix}CA_FILE`);
  if (cert !== undefined && key !== undefined) checkKeyPair(cert, key, `${prefix}CERT_FILE`, `${prefix}KEY_FILE`);
  return { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}) };
}

/** A URL with its credentials hidden (`redis://user:secret@host` → `redis://***@host`), for messages and logs. */
export function redactUrl(url: string): string {
  const scheme = url.indexOf('://');
  const at = url.lastIndexOf('@');
  return scheme >= 0 && at > scheme ? `${url.slice(0, scheme + 3)}***${url.slice(at)}` : url;
}
