import { DeadlineExceededError, StoreUnavailableError } from './online-store.js';
import type { ShardError } from './backends/byte-backend.js';

/**
 * What a byte backend answers is checked before anything is attached to an
 * id, the way DataLoader checks a batch function: one answer per key, in
 * order, each of the promised type. A backend that breaks this (a bug in an
 * adapter, an engine's surprise) fails the whole batch with a clear error,
 * never values attached to the wrong ids.
 */
export class BackendContractError extends Error {
  override name = 'BackendContractError';
  constructor(
    readonly store: string,
    readonly operation: string,
    readonly problem: string,
  ) {
    super(`online store ${store} broke the byte-backend contract in ${operation}: ${problem}`);
  }
}

/** `answers` of a read of `expected` keys: each a Buffer, null or a shard's typed error. */
export function checkReadAnswers(store: string, operation: string, answers: unknown, expected: number): (Buffer | null | ShardError)[] {
  const list = checkLength(store, operation, answers, expected);
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    if (a === null || Buffer.isBuffer(a) || a instanceof StoreUnavailableError || a instanceof DeadlineExceededError) continue;
    throw new BackendContractError(store, operation, `answer ${i} is ${describe(a)}; expected a Buffer, null or a shard error (StoreUnavailableError, DeadlineExceededError)`);
  }
  return list as (Buffer | null | ShardError)[];
}

/** `answers` of a compare-and-set of `expected` entries: each true or false. */
export function checkCasAnswers(store: string, answers: unknown, expected: number): boolean[] {
  const list = checkLength(store, 'compareAndSet', answers, expected);
  for (let i = 0; i < list.length; i++) {
    if (typeof list[i] !== 'boolean') throw new BackendContractError(store, 'compareAndSet', `answer ${i} is ${describe(list[i])}; expected true or false`);
  }
  return list as boolean[];
}

function checkLength(store: string, operation: string, answers: unknown, expected: number): unknown[] {
  if (!Array.isArray(answers)) throw new BackendContractError(store, operation, `answered ${describe(answers)}; expected an array of ${expected} answers`);
  if (answers.length !== expected) {
    throw new BackendContractError(store, operation, `answered ${answers.length} answer${answers.length === 1 ? '' : 's'} for ${expected} key${expected === 1 ? '' : 's'}; expected one per key, in order`);
  }
  return answers;
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined (a hole)';
  if (value === null) return 'null';
  if (value instanceof Error) return `an error that is not a shard error (${value.name}: ${value.message})`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`;
  return `a ${typeof value} (${JSON.stringify(value)?.slice(0, 40)})`;
}
