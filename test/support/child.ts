import type { ChildProcess } from 'node:child_process';

/**
 * Sends `signal` to a child process and resolves once it has exited; with
 * `killAfterMs`, escalates to SIGKILL if it is still running by then.
 */
export async function signalAndWait(child: ChildProcess, signal: NodeJS.Signals, killAfterMs?: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  await exited;
  if (timer) clearTimeout(timer);
}

/**
 * Children still running: SIGKILLed when this test process exits without having stopped them
 * (a failed hook, or the runner's --test-force-exit), so no server outlives the file that
 * started it.
 */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Registers `child` to be killed if this process exits first; returns it. */
export function killOnExit<T extends ChildProcess>(child: T): T {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}
