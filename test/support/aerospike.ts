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

/**
 * The test runner's environment for a child process, without the AEROSPIKE_*
 * variables: AEROSPIKE_HOSTS in the runner's environment points the
 * Aerospike tests at a server, and a child that inherited it would choose
 * Aerospike as its store too (or refuse to start beside a REDIS_URL the test
 * gives it). A child's store is what its test passes it.
 */
export function inheritedEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('AEROSPIKE_')));
}
