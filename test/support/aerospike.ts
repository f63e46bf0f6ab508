/**
 * An Aerospike server cannot be had from the package registries this suite
 * installs from, so the tests that need one run against the server that
 * AEROSPIKE_HOSTS names (README, "Aerospike") and skip, saying this, without.
 */
export const aerospikeSkip = 'skipped: no Aerospike server (set AEROSPIKE_HOSTS)';

/** The server the Aerospike tests use, or undefined (they skip). */
export function aerospikeHosts(): string | undefined {
  const hosts = process.env.AEROSPIKE_HOSTS;
  return hosts === undefined || hosts === '' ? undefined : hosts;
}
